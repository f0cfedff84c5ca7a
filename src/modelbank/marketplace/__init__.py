"""The marketplace (DESIGN §10): users trade pool quota and model stakes for credits through
escrow, with a commission. Entry points: :mod:`modelbank.marketplace.service`.

Importing the package registers :func:`~modelbank.marketplace.allocations.return_for_resource`
with :data:`modelbank.pool.lifecycle.END_HOOKS` (the pool, a lower layer, cannot import the
marketplace): a resource that fails or is withdrawn returns its allocations' unreleased
escrow in the same transaction. ``modelbank.db.models`` imports the marketplace's tables, so
every process that touches the database has the hook.
"""

from __future__ import annotations

from modelbank.marketplace.allocations import return_for_resource
from modelbank.pool import lifecycle

if return_for_resource not in lifecycle.END_HOOKS:
    lifecycle.END_HOOKS.append(return_for_resource)
