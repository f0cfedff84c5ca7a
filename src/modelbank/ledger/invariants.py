"""Ledger invariants (DESIGN §3), checked by ``modelbank verify`` and after every test scenario.

Each check is one aggregate query; :func:`check` returns the broken invariants by name (an
empty list means the ledger is sound). Names are stable: tests and the CLI refer to them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, case, func, literal, select
from sqlalchemy.orm import Session

from modelbank.ledger.codes import AccountFlags, TransferFlags
from modelbank.ledger.models import accounts_table as accounts
from modelbank.ledger.models import transfers_table as transfers

_PENDING = int(TransferFlags.PENDING)
_POST = int(TransferFlags.POST_PENDING)
_VOID = int(TransferFlags.VOID_PENDING)
_FLAGGED = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)


@dataclass(frozen=True, slots=True)
class Violation:
    """A broken invariant: ``name`` (stable) and a human ``detail``."""

    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.name}: {self.detail}"


def check(session: Session, *, limit: int = 20) -> list[Violation]:
    """Check every ledger invariant; return up to ``limit`` violations per invariant.

    Invariants (names):

    * ``balanced``: Σ debits_posted = Σ credits_posted and Σ debits_pending = Σ credits_pending.
    * ``totals_match_transfers``: each account's four cached totals equal the sums of its
      transfers (posted = plain, reversing and posting transfers; pending = unresolved holds).
    * ``non_negative``: no flagged account has debits_posted + debits_pending > credits_posted.
    * ``holds_resolved_once``: every posting/voiding transfer points to a pending hold on the
      same accounts, and a posting never exceeds the held amount (at most one resolution per
      hold is enforced by a unique index).
    * ``transfers_well_formed``: every amount is positive and debit ≠ credit.
    """
    conn = session.connection()
    return [
        *_balanced(conn),
        *_totals_match_transfers(conn, limit),
        *_non_negative(conn, limit),
        *_holds_resolved_once(conn, limit),
        *_transfers_well_formed(conn, limit),
    ]


def _balanced(conn: Connection) -> list[Violation]:
    """``balanced``: Σ debits = Σ credits, posted and pending."""
    violations: list[Violation] = []
    sums = conn.execute(
        select(
            func.coalesce(func.sum(accounts.c.debits_posted), 0),
            func.coalesce(func.sum(accounts.c.credits_posted), 0),
            func.coalesce(func.sum(accounts.c.debits_pending), 0),
            func.coalesce(func.sum(accounts.c.credits_pending), 0),
        )
    ).one()
    if sums[0] != sums[1] or sums[2] != sums[3]:
        violations.append(
            Violation(
                "balanced",
                f"posted debits {sums[0]} ≠ credits {sums[1]} or pending debits {sums[2]}"
                f" ≠ credits {sums[3]} (µcr)",
            )
        )
    return violations


def _totals_match_transfers(conn: Connection, limit: int) -> list[Violation]:
    """``totals_match_transfers``: each account's four cached totals equal the sums of its
    transfers."""
    violations: list[Violation] = []
    resolved = select(transfers.c.pending_id).where(transfers.c.pending_id.is_not(None))
    posted_amount = case(
        ((transfers.c.flags.op("&")(_PENDING | _VOID)) == 0, transfers.c.amount), else_=0
    )
    pending_amount = case(
        (
            (transfers.c.flags == _PENDING) & transfers.c.id.not_in(resolved),
            transfers.c.amount,
        ),
        else_=0,
    )
    legs = (
        select(
            transfers.c.debit_account_id.label("account_id"),
            posted_amount.label("dp"),
            literal(0).label("cp"),
            pending_amount.label("dn"),
            literal(0).label("cn"),
        )
        .union_all(
            select(
                transfers.c.credit_account_id,
                literal(0),
                posted_amount,
                literal(0),
                pending_amount,
            )
        )
        .subquery()
    )
    recomputed = (
        select(
            legs.c.account_id,
            func.sum(legs.c.dp).label("dp"),
            func.sum(legs.c.cp).label("cp"),
            func.sum(legs.c.dn).label("dn"),
            func.sum(legs.c.cn).label("cn"),
        )
        .group_by(legs.c.account_id)
        .subquery()
    )
    mismatch = conn.execute(
        select(accounts.c.id, accounts.c.code)
        .select_from(accounts.outerjoin(recomputed, recomputed.c.account_id == accounts.c.id))
        .where(
            (accounts.c.debits_posted != func.coalesce(recomputed.c.dp, 0))
            | (accounts.c.credits_posted != func.coalesce(recomputed.c.cp, 0))
            | (accounts.c.debits_pending != func.coalesce(recomputed.c.dn, 0))
            | (accounts.c.credits_pending != func.coalesce(recomputed.c.cn, 0))
        )
        .limit(limit)
    ).all()
    for row in mismatch:
        violations.append(
            Violation(
                "totals_match_transfers",
                f"account {row.id} ({row.code}): cached totals differ from its transfers",
            )
        )
    return violations


def _non_negative(conn: Connection, limit: int) -> list[Violation]:
    """``non_negative``: no flagged account is overdrawn."""
    violations: list[Violation] = []
    negative = conn.execute(
        select(accounts.c.id, accounts.c.code, accounts.c.owner_id)
        .where(
            accounts.c.flags.op("&")(_FLAGGED) != 0,
            accounts.c.debits_posted + accounts.c.debits_pending > accounts.c.credits_posted,
        )
        .limit(limit)
    ).all()
    for neg in negative:
        violations.append(
            Violation("non_negative", f"account {neg.id} ({neg.code}, owner {neg.owner_id}) < 0")
        )
    return violations


def _holds_resolved_once(conn: Connection, limit: int) -> list[Violation]:
    """``holds_resolved_once``: every posting or voiding transfer resolves a valid pending hold."""
    violations: list[Violation] = []
    hold = transfers.alias("hold")
    bad_resolutions = conn.execute(
        select(transfers.c.id)
        .select_from(transfers.outerjoin(hold, hold.c.id == transfers.c.pending_id))
        .where(
            transfers.c.flags.op("&")(_POST | _VOID) != 0,
            (hold.c.id.is_(None))
            | (hold.c.flags != _PENDING)
            | (hold.c.debit_account_id != transfers.c.debit_account_id)
            | (hold.c.credit_account_id != transfers.c.credit_account_id)
            | ((transfers.c.flags.op("&")(_POST) != 0) & (transfers.c.amount > hold.c.amount)),
        )
        .limit(limit)
    ).all()
    for row in bad_resolutions:
        violations.append(
            Violation("holds_resolved_once", f"transfer {row.id} resolves no valid hold")
        )
    return violations


def _transfers_well_formed(conn: Connection, limit: int) -> list[Violation]:
    """``transfers_well_formed``: every amount is positive and debit ≠ credit."""
    violations: list[Violation] = []
    malformed = conn.execute(
        select(transfers.c.id)
        .where(
            (transfers.c.amount <= 0)
            | (transfers.c.debit_account_id == transfers.c.credit_account_id)
        )
        .limit(limit)
    ).all()
    for row in malformed:
        violations.append(Violation("transfers_well_formed", f"transfer {row.id} is malformed"))
    return violations
