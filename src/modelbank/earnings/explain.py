"""What a creator may know about their models' earnings, and why (issue "Creator economy":
"a creator can see exactly what each of their models earned and why").

* **Rule versions**: a model's earnings rule history, the version in force, and a new version
  (versioned like prices: a version is never edited; a change is a new version from its
  ``effective_from``). Version 0 is the DESIGN §7 default rule of a model that never had one
  stored.
* **One usage event explained**: its charge, why it earned nothing when it did not
  (``earnings_note``: ``self_usage``, ``no_creator``, ``zero``, ``monetisation_off``,
  ``monetisation_off_platform``), each earning line with the rule version, popularity and
  type multipliers and the beneficiary's stake it used, the rule of that version, and the
  payer's grants it burned.

Visibility (DESIGN §11): the payer and the beneficiaries it paid see an event; others do
not (as if it did not exist). A beneficiary who is not the payer sees neither the payer's
id nor the payer's grants: they learn what they earned and why, not who paid or how.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelbank.catalog import service as catalog
from modelbank.db.base import utcnow
from modelbank.earnings import service as earnings
from modelbank.earnings.errors import InvalidRule
from modelbank.earnings.models import earnings_rules_table as rules
from modelbank.earnings.models import earnings_table as earning_rows
from modelbank.earnings.rules import EarningsRule
from modelbank.metering import service as metering
from modelbank.metering.errors import UsageNotFound
from modelbank.wallets import grants

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


# ---------------------------------------------------------------- one usage event


@dataclass(frozen=True, slots=True)
class EarningDetail:
    """One beneficiary's earning from a usage event (µcr) and what made it: the rule version,
    the popularity and type multipliers and the beneficiary's stake (bps) at that moment
    (None for earnings recorded before these were kept)."""

    user_id: int
    amount_ucr: int
    rule_version: int
    popularity_multiplier: Decimal | None
    type_multiplier: Decimal | None
    share_bps: int | None


@dataclass(frozen=True, slots=True)
class UsageEarnings:
    """A usage event's earnings explained. Amounts µcr. ``payer_id`` and ``burns`` ([(grant
    id, µcr)] net of refunds) are None when the viewer is a beneficiary but not the payer.
    ``rule`` is the rule version the earnings used (None when nothing was earned)."""

    usage_id: int
    model_id: int
    payer_id: int | None
    usage_type: str
    input_tokens: int
    output_tokens: int
    charge_ucr: int
    earnings_ucr: int
    earnings_note: str | None
    occurred_at: datetime
    lines: list[EarningDetail]
    rule: EarningsRule | None
    burns: list[tuple[int, int]] | None

    @property
    def platform_kept_ucr(self) -> int:
        """What the platform kept of the charge: the charge minus every earning (µcr)."""
        return self.charge_ucr - self.earnings_ucr


def explain_usage(session: Session, usage_id: int, *, viewer: int | None) -> UsageEarnings:
    """Usage event ``usage_id`` explained for ``viewer`` (a user id; None: an admin or service
    key, who see everything). Raises :class:`~modelbank.metering.errors.UsageNotFound` when
    it does not exist or ``viewer`` is neither its payer nor a beneficiary it paid."""
    record = metering.get_usage(session, usage_id)
    conn = session.connection()
    lines = [
        EarningDetail(
            user_id=int(row.user_id),
            amount_ucr=int(row.amount_ucr),
            rule_version=int(row.rule_version),
            popularity_multiplier=row.popularity_multiplier,
            type_multiplier=row.type_multiplier,
            share_bps=None if row.share_bps is None else int(row.share_bps),
        )
        for row in conn.execute(
            select(earning_rows)
            .where(earning_rows.c.usage_id == usage_id)
            .order_by(earning_rows.c.id)
        )
    ]
    is_payer = viewer is None or viewer == record.user_id
    if not is_payer and all(line.user_id != viewer for line in lines):
        raise UsageNotFound(f"no usage event {usage_id}", usage_id=usage_id)
    note = record.earnings_note
    rule = rule_of_version(session, record.model_id, lines[0].rule_version) if lines else None
    burns = grants.burns_for(session, "usage", [usage_id]).get(usage_id, [])
    return UsageEarnings(
        usage_id=record.id,
        model_id=record.model_id,
        payer_id=record.user_id if is_payer else None,
        usage_type=record.usage_type,
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        charge_ucr=record.charge_ucr,
        earnings_ucr=record.earnings_ucr,
        earnings_note=note,
        occurred_at=record.occurred_at,
        lines=lines,
        rule=rule,
        burns=burns if is_payer else None,
    )
