"""The chains, the canonical content of a row and the link hash.

A link is ``SHA-256(prev_hash_hex ‖ "\\n" ‖ content)`` in lowercase hex, where ``content``
is the row's canonical JSON: ``[chain name, column values…]`` in the chain's fixed column
order, compact, ASCII, keys of JSON values sorted, timestamps as ISO 8601 UTC with
microseconds (``2026-12-06T05:50:00.000000Z``). Every column a row is read back with is in
its content, except ``chain_seq`` and ``chain_hash`` themselves; so changing any of them
(an amount, an account, a code, a key, a timestamp) changes the link.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table

from modelbank.audit.models import audit_records_table
from modelbank.ledger.models import transfers_table

GENESIS_HASH = "0" * 64
"""The "previous hash" of a chain's first link."""


@dataclass(frozen=True, slots=True)
class Chain:
    """A hash chain over ``table``: its ``name`` (stored in ``chain_blocks.chain``), the
    ``columns`` whose values make a row's content, in order, and the ``noun`` reports use."""

    name: str
    table: Table
    columns: tuple[str, ...]
    noun: str
    lock_key: int
    """PostgreSQL advisory lock key serialising this chain's sealers."""


TRANSFERS = Chain(
    name="transfers",
    table=transfers_table,
    columns=(
        "id",
        "idempotency_key",
        "debit_account_id",
        "credit_account_id",
        "amount",
        "code",
        "flags",
        "pending_id",
        "reverses_id",
        "expires_at",
        "ref_type",
        "ref_id",
        "created_at",
        "metadata",
    ),
    noun="transfer",
    lock_key=0x6D62_6368_0001,  # "mbch" 1
)
AUDIT = Chain(
    name="audit",
    table=audit_records_table,
    columns=(
        "id",
        "occurred_at",
        "actor_kind",
        "actor_key_id",
        "actor_user_id",
        "action",
        "target_type",
        "target_id",
        "before",
        "after",
        "request_id",
    ),
    noun="audit record",
    lock_key=0x6D62_6368_0002,
)
CHAINS = (TRANSFERS, AUDIT)
"""Every chain, in the order the sealer and ``verify --chain`` take them."""


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        utc = value.astimezone(UTC) if value.tzinfo else value
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def content(chain: Chain, row: Mapping[Any, Any]) -> bytes:
    """The canonical content of ``row`` (a mapping with every column of ``chain.columns``,
    as SQLAlchemy Core reads it back) as UTF-8 bytes."""
    values = [chain.name, *(_plain(row[column]) for column in chain.columns)]
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def link(prev_hash: str, row_content: bytes) -> str:
    """The link hash (64 lowercase hex digits) of content following ``prev_hash``."""
    digest = hashlib.sha256(prev_hash.encode("ascii"))
    digest.update(b"\n")
    digest.update(row_content)
    return digest.hexdigest()
