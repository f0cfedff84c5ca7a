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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table

from modelbank.audit.models import audit_records_table
from modelbank.ledger.models import transfers_table

GENESIS_HASH = "0" * 64
"""The "previous hash" of a chain's first link."""


TIMESTAMP, JSON_VALUE = "timestamp", "json"
"""Column kinds that need normalising before hashing (others are ints, strings, None)."""


@dataclass(frozen=True, slots=True)
class Chain:
    """A hash chain over ``table``: its ``name`` (stored in ``chain_blocks.chain``), the
    ``columns`` whose values make a row's content, in order, with their ``kinds`` (see
    :data:`TIMESTAMP`), and the ``noun`` reports use."""

    name: str
    table: Table
    columns: tuple[str, ...]
    kinds: dict[str, str]
    noun: str
    lock_key: int
    """PostgreSQL advisory lock key serialising this chain's sealers."""

    @property
    def select_list(self) -> str:
        """The content columns as a raw SQL select list (quoted: ``metadata``, ``before``)."""
        return ", ".join(f'"{column}"' for column in self.columns)


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
    kinds={"expires_at": TIMESTAMP, "created_at": TIMESTAMP, "metadata": JSON_VALUE},
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
    kinds={"occurred_at": TIMESTAMP, "before": JSON_VALUE, "after": JSON_VALUE},
    noun="audit record",
    lock_key=0x6D62_6368_0002,
)
CHAINS = (TRANSFERS, AUDIT)
"""Every chain, in the order the sealer and ``verify --chain`` take them."""

_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode


def _timestamp(value: Any) -> str | None:
    """A timestamp as the driver or SQLAlchemy gives it (SQLite text, naive or aware
    datetime) as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return str(value.isoformat(timespec="microseconds")) + "Z"


def normaliser(chain: Chain, *, json_as_text: bool) -> list[tuple[int, str]]:
    """(index, kind) of the columns of ``chain`` whose values :func:`content` normalises;
    ``json_as_text``: the driver returns JSON columns as text (SQLite's raw driver)."""
    return [
        (i, kind)
        for i, column in enumerate(chain.columns)
        if (kind := chain.kinds.get(column)) is not None and (kind != JSON_VALUE or json_as_text)
    ]


def content(chain: Chain, values: Sequence[Any], fix: list[tuple[int, str]]) -> bytes:
    """The canonical content of a row of ``chain``: ``values`` in ``chain.columns`` order,
    normalised at the positions ``fix`` gives (:func:`normaliser`), as UTF-8 bytes."""
    plain = [chain.name, *values]
    for i, kind in fix:
        value = plain[i + 1]
        if kind == TIMESTAMP:
            plain[i + 1] = _timestamp(value)
        elif isinstance(value, str):
            # SQLite's JSON columns have NUMERIC affinity: a JSON number comes back as a
            # number already, anything else as its JSON text.
            plain[i + 1] = json.loads(value)
    return _ENCODE(plain).encode()


def content_of(chain: Chain, row: Mapping[Any, Any]) -> bytes:
    """:func:`content` of a row read through SQLAlchemy (a mapping by column name, JSON
    already decoded, timestamps aware)."""
    return content(
        chain, [row[column] for column in chain.columns], normaliser(chain, json_as_text=False)
    )


def link(prev_hash: str, row_content: bytes) -> str:
    """The link hash (64 lowercase hex digits) of content following ``prev_hash``."""
    digest = hashlib.sha256(prev_hash.encode("ascii"))
    digest.update(b"\n")
    digest.update(row_content)
    return digest.hexdigest()
