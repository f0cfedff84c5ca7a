"""One usage event's earnings explained (issue "Creator economy": "a creator can see exactly
what each of their models earned and why").

Its charge, why it earned nothing when it did not (``earnings_note``: ``self_usage``,
``no_creator``, ``zero``, ``monetisation_off``, ``monetisation_off_platform``, ``prepaid``),
each earning line with the rule version, popularity and type multipliers and the
beneficiary's stake it used, the rule of that version (:mod:`modelbank.earnings.explain`),
and the payer's grants it burned.

Visibility (DESIGN §11): the payer and the beneficiaries it paid see an event; others do
not (as if it did not exist). A beneficiary who is not the payer sees neither the payer's
id nor the payer's grants: they learn what they earned and why, not who paid or how.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelbank.earnings.explain import rule_of_version
from modelbank.earnings.models import earnings_table as earning_rows
from modelbank.earnings.rules import EarningsRule
from modelbank.metering import service as metering
from modelbank.metering.errors import UsageNotFound
from modelbank.wallets import grants


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
