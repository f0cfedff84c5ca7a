"""Tests of the ledger alone post transfers to wallet accounts directly, below the wallets
layer that records grants: the grant invariant does not apply to them."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/ledger/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.below_wallets)
