"""What a creator may know about their models' earnings, and why (issue "Creator economy":
"a creator can see exactly what each of their models earned and why").

**Rule versions**: a model's earnings rule history, the version in force, and a new version
(versioned like prices: a version is never edited; a change is a new version from its
``effective_from``). Version 0 is the DESIGN §7 default rule of a model that never had one
stored.

One usage event explained (its charge, earning lines, the rule version they used, the
payer's burned grants) reads the usage row, so it lives a layer up, in
:mod:`modelbank.analytics.explain`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelbank.catalog import service as catalog
from modelbank.db.base import utcnow
from modelbank.earnings import service as earnings
from modelbank.earnings.errors import InvalidRule
from modelbank.earnings.models import earnings_rules_table as rules
from modelbank.earnings.rules import EarningsRule

# ---------------------------------------------------------------- rule versions


@dataclass(frozen=True, slots=True)
class RuleVersion:
    """One version of a model's earnings rule; ``effective_from`` and ``created_at`` are
    None for version 0 (the default, never stored)."""

    rule: EarningsRule
    effective_from: datetime | None
    created_at: datetime | None


DEFAULT_VERSION = RuleVersion(EarningsRule(), None, None)
"""The rule of a model without a stored one (DESIGN §7 defaults), version 0."""


def rule_history(session: Session, model_id: int) -> list[RuleVersion]:
    """The model's stored rule versions, oldest first (scheduled future ones included).
    Raises :class:`~modelbank.catalog.errors.ModelNotFound`."""
    catalog.get_model(session, model_id)
    rows = session.connection().execute(
        select(rules).where(rules.c.model_id == model_id).order_by(rules.c.version)
    )
    return [_version(row) for row in rows]


def current_rule(session: Session, model_id: int, *, at: datetime | None = None) -> RuleVersion:
    """The rule version in force at ``at`` (now): the highest version whose
    ``effective_from`` ≤ ``at``, else :data:`DEFAULT_VERSION`. Raises
    :class:`~modelbank.catalog.errors.ModelNotFound`."""
    catalog.get_model(session, model_id)
    row = (
        session.connection()
        .execute(
            select(rules)
            .where(rules.c.model_id == model_id, rules.c.effective_from <= (at or utcnow()))
            .order_by(rules.c.version.desc())
            .limit(1)
        )
        .first()
    )
    return DEFAULT_VERSION if row is None else _version(row)


def change_rule(
    session: Session,
    model_id: int,
    rule: EarningsRule,
    *,
    effective_from: datetime | None = None,
    now: datetime | None = None,
) -> RuleVersion:
    """Store ``rule`` as the model's next version, in force from ``effective_from`` (now
    when None). Charges record the version they used, so a version may not start in the
    past: that would rewrite which rule was in force for charges already made. Raises
    :class:`~modelbank.catalog.errors.ModelNotFound`, :class:`InvalidRule` (a naive or past
    ``effective_from``)."""
    now = now or utcnow()
    catalog.get_model(session, model_id)
    if effective_from is not None:
        if effective_from.tzinfo is None:
            raise InvalidRule("effective_from must carry a time zone")
        if effective_from < now:
            raise InvalidRule("effective_from must not be in the past")
    start = effective_from or now
    stored = earnings.set_rule(session, model_id, rule, effective_from=start)
    return RuleVersion(stored, start, now)


def rule_of_version(session: Session, model_id: int, version: int) -> EarningsRule | None:
    """The model's rule version ``version`` (0: the default), None when unknown."""
    if version == 0:
        return DEFAULT_VERSION.rule
    row = (
        session.connection()
        .execute(select(rules).where(rules.c.model_id == model_id, rules.c.version == version))
        .first()
    )
    return None if row is None else _version(row).rule


def _version(row: Any) -> RuleVersion:
    mapping: Mapping[Any, Any] = row._mapping
    return RuleVersion(
        earnings._rule_from_row(mapping),  # the one parser of stored rules
        row.effective_from,
        row.created_at,
    )
