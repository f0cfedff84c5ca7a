"""Grants and burn-down (DESIGN §5) against an independent reference model, on both backends.

The reference model below re-implements the rules from the design, not from
:mod:`modelbank.wallets.grants`: the burn order (soonest expiry first, never-expiring last, then
lower priority, then the oldest grant), the sweep of expired remainders before any spend, and
the cost basis a burn carries (the grant's basis × consumed / amount, rounded half-even with
:class:`fractions.Fraction`, so that a grant's burns sum to exactly its basis).

Every Hypothesis example builds fresh users (and a fresh model) inside the one ``db`` of the
test, so examples are independent; the fixture checks the ledger and grant invariants at the
end.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelbank.catalog.tiers import Tier
from modelbank.db.base import utcnow
from modelbank.errors import IdempotencyConflict
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.ledger.errors import InsufficientFunds
from modelbank.ledger.models import transfers_table as transfers
from modelbank.metering import refunds
from modelbank.metering import service as metering
from modelbank.metering.capture import capture
from modelbank.metering.models import usage_events_table as usage
from modelbank.metering.service import UsageEvent
from modelbank.pricing import service as pricing
from modelbank.pricing.formulas import Rates
from modelbank.users import service as users
from modelbank.wallets import grants, holds
from modelbank.wallets import service as wallets
from modelbank.wallets.grants import GrantSource
from modelbank.wallets.models import burns_table as burns
from tests import factories
from tests.conftest import Db

CREDIT = 1_000_000
HOUR = timedelta(hours=1)
PRIORITY = {"bonus": 10, "refund": 20, "deposit": 30, "purchased": 40}
"""DESIGN §5 default burn priorities, written out independently of the code."""

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

_seq = itertools.count(1)


def _name(prefix: str) -> str:
    return f"{prefix}-{next(_seq)}"


def _base() -> datetime:
    """A whole second after now: after every price version created so far (so that a charge
    at ``base`` or later finds the price), with no sub-second part to lose on storage."""
    return (utcnow() + timedelta(seconds=1)).replace(microsecond=0)


# ---------------------------------------------------------------- the reference model


@dataclass
class RefGrant:
    id: int
    source: str
    amount: int
    remaining: int
    basis: int
    expires_at: datetime | None
    priority: int


def ref_basis(consumed: int, amount: int, basis: int) -> int:
    """Cost basis carried by the first ``consumed`` µcr of a grant: half-even of the exact
    rational (``round`` of a Fraction rounds half to even)."""
    return round(Fraction(basis * consumed, amount))


def ref_order(grant: RefGrant) -> tuple[int, datetime | int, int, int]:
    if grant.expires_at is None:
        return (1, 0, grant.priority, grant.id)
    return (0, grant.expires_at, grant.priority, grant.id)


def ref_take(grant: RefGrant, amount: int) -> tuple[int, int, int]:
    before = grant.amount - grant.remaining
    grant.remaining -= amount
    after = grant.amount - grant.remaining
    basis = ref_basis(after, grant.amount, grant.basis) - ref_basis(
        before, grant.amount, grant.basis
    )
    return (grant.id, amount, basis)


def ref_sweep(book: list[RefGrant], now: datetime) -> list[tuple[int, int, int]]:
    """Expired remainders (no holds in play): all of them go."""
    return [
        ref_take(g, g.remaining)
        for g in sorted(book, key=ref_order)
        if g.expires_at is not None and g.expires_at <= now and g.remaining > 0
    ]


def ref_live(book: list[RefGrant], now: datetime) -> int:
    return sum(g.remaining for g in book if g.expires_at is None or g.expires_at > now)


def ref_burn(book: list[RefGrant], amount: int, now: datetime) -> list[tuple[int, int, int]]:
    taken = []
    left = amount
    for grant in sorted(book, key=ref_order):
        if left == 0:
            break
        if grant.remaining == 0 or (grant.expires_at is not None and grant.expires_at <= now):
            continue
        part = min(grant.remaining, left)
        taken.append(ref_take(grant, part))
        left -= part
    assert left == 0, "the test only asks for what the live grants cover"
    return taken


# ---------------------------------------------------------------- database readers


def db_burns(s: Session, ref_type: str, ref_id: int) -> list[tuple[int, int, int]]:
    rows = s.connection().execute(
        select(burns.c.grant_id, burns.c.amount_ucr, burns.c.basis_uusd)
        .where(burns.c.ref_type == ref_type, burns.c.ref_id == ref_id)
        .order_by(burns.c.id)
    )
    return [(int(g), int(a), int(b)) for g, a, b in rows]


def db_burn_sources(s: Session, grant_ids: list[int]) -> set[tuple[int, str]]:
    rows = s.connection().execute(
        select(burns.c.grant_id, burns.c.source).where(burns.c.grant_id.in_(grant_ids))
    )
    return {(int(g), src) for g, src in rows}


def expiry_total(s: Session, wallet_account: int) -> int:
    """µcr moved wallet → platform_promotions by expiry sweeps."""
    promotions = ledger.platform_account(s, AccountCode.PLATFORM_PROMOTIONS)
    return int(
        s.connection()
        .execute(
            select(func.coalesce(func.sum(transfers.c.amount), 0)).where(
                transfers.c.debit_account_id == wallet_account,
                transfers.c.credit_account_id == promotions,
                transfers.c.code == TransferCode.EXPIRY.value,
            )
        )
        .scalar_one()
    )


def usage_count(s: Session, user_id: int) -> int:
    return int(
        s.connection()
        .execute(select(func.count()).select_from(usage).where(usage.c.user_id == user_id))
        .scalar_one()
    )


def remaining_of(s: Session, grant_ids: list[int]) -> dict[int, int]:
    found = {}
    for grant_id in grant_ids:
        info = grants.get_grant(s, grant_id)
        assert info is not None
        found[grant_id] = info.remaining_ucr
    return found


def fixed_model(s: Session) -> str:
    """A model with a price in force (fixed-charge events still need one), no creator."""
    slug = _name("fixed")
    model_id = factories.model(s, slug, explicit=Rates(per_request=Decimal(1_000)))
    # In force from well before any `now` the tests pass (they run ahead of the wall clock).
    pricing.set_price(
        s,
        model_id,
        tier=Tier.MEDIUM,
        explicit_ucr=Rates(per_request=Decimal(1_000)),
        effective_from=datetime(2000, 1, 1, tzinfo=UTC),
    )
    return slug


# ---------------------------------------------------------------- 1. burn order property

_grant_spec = st.fixed_dictionaries(
    {
        "source": st.sampled_from(["bonus", "purchased", "refund", "deposit"]),
        "amount": st.integers(1, 10**7),
        "basis": st.integers(0, 10**7),
        # a few fixed offsets, so equal expiry times are common (then priority and id decide)
        "expires_h": st.one_of(st.none(), st.sampled_from([1, 2, 3])),
        "priority": st.one_of(st.none(), st.integers(0, 50)),
    }
)


@PROPERTY
@given(specs=st.lists(_grant_spec, min_size=3, max_size=8), data=st.data())
def test_burn_down_matches_reference_model(db: Db, specs: list[dict], data: st.DataObject) -> None:
    base = _base()
    with db.tx() as s:
        uid = factories.user(s, _name("burner"))
        wallet_account = users.get_user(s, uid).wallet_account_id
        slug = fixed_model(s)
        book: list[RefGrant] = []
        for i, spec in enumerate(specs):
            expires = None if spec["expires_h"] is None else base + spec["expires_h"] * HOUR
            basis = spec["basis"] if spec["source"] == "purchased" else 0
            info = wallets.grant_info(
                s,
                uid,
                spec["amount"],
                source=GrantSource(spec["source"]),
                idempotency_key=f"g:{uid}:{i}",
                expires_at=expires,
                cost_basis_uusd=basis,
                priority=spec["priority"],
                now=base,
            )
            expected_priority = (
                PRIORITY[spec["source"]] if spec["priority"] is None else spec["priority"]
            )
            assert (info.source, info.amount_ucr, info.remaining_ucr) == (
                spec["source"],
                spec["amount"],
                spec["amount"],
            )
            assert (info.priority, info.cost_basis_uusd, info.expires_at) == (
                expected_priority,
                basis,
                expires,
            )
            book.append(
                RefGrant(
                    info.id,
                    spec["source"],
                    spec["amount"],
                    spec["amount"],
                    basis,
                    expires,
                    expected_priority,
                )
            )
    ids = [g.id for g in book]
    now = base
    swept_total = 0
    spend_refs = itertools.count(1)
    for _ in range(data.draw(st.integers(1, 6), label="operations")):
        now += data.draw(st.sampled_from([0, 30, 60, 90]), label="minutes") * timedelta(minutes=1)
        expected_sweep = ref_sweep(book, now)
        swept_total += sum(a for _, a, _ in expected_sweep)
        live = ref_live(book, now)
        kind = data.draw(st.sampled_from(["charge", "spend", "overdraw"]), label="kind")
        if live == 0:
            kind = "overdraw"
        event(kind)
        if expected_sweep:
            event("swept before spending")
        if kind == "overdraw":
            amount = live + data.draw(st.integers(1, 1_000), label="excess")
            with db.tx() as s:
                before = usage_count(s, uid)
                [result] = metering.charge_batch(
                    s,
                    [UsageEvent(_name("over"), uid, slug, charge_ucr=amount)],
                    now=now,
                )
                assert (result.status, result.error_code) == ("rejected", "insufficient_funds")
                assert usage_count(s, uid) == before
            expected_burns: list[tuple[int, int, int]] = []
            ref: tuple[str, int] | None = None
        else:
            amount = data.draw(st.one_of(st.just(live), st.integers(1, live)), label="amount")
            expected_burns = ref_burn(book, amount, now)
            with db.tx() as s:
                if kind == "charge":
                    result = metering.charge(
                        s, UsageEvent(_name("use"), uid, slug, charge_ucr=amount), now=now
                    )
                    assert result.status == "charged" and result.charge_ucr == amount
                    assert result.balance_ucr == sum(g.remaining for g in book)
                    assert result.usage_id is not None
                    ref = ("usage", result.usage_id)
                else:
                    ref = ("test_spend", next(spend_refs) + 1_000_000 * uid)
                    wallet = ledger.lock_user_accounts(s, [uid], AccountCode.USER_WALLET)[uid]
                    taken = grants.spend(
                        s, uid, wallet, amount, ref_type=ref[0], ref_id=ref[1], now=now
                    )
                    assert taken == [(g, a) for g, a, _ in expected_burns]
                    revenue = ledger.platform_account(s, AccountCode.PLATFORM_REVENUE)
                    ledger.post_linked(
                        s,
                        [(wallet.id, revenue, amount, TransferCode.USAGE_CHARGE.value, ref[1])],
                        ref_type=ref[0],
                        now=now,
                        locked={wallet.id: wallet},
                    )
        with db.tx() as s:
            if ref is not None:
                assert db_burns(s, *ref) == expected_burns
            for grant_id, amount_swept, basis in expected_sweep:
                assert db_burns(s, "expiry", grant_id) == [(grant_id, amount_swept, basis)]
            assert expiry_total(s, wallet_account) == swept_total
            assert remaining_of(s, ids) == {g.id: g.remaining for g in book}
            balance = wallets.balance(s, uid)
            assert balance.balance_ucr == sum(g.remaining for g in book)
            assert balance.pending_ucr == 0
    with db.tx() as s:
        # every burn row names its grant's source
        assert db_burn_sources(s, ids) <= {(g.id, g.source) for g in book}


# ---------------------------------------------------------------- 2. expiry


def test_expired_remainders_are_swept_before_burning_never_spent(db: Db) -> None:
    base = _base()
    t1, t2 = base + HOUR, base + 2 * HOUR
    with db.tx() as s:
        uid = factories.user(s, "exp-user")
        wallet_account = users.get_user(s, uid).wallet_account_id
        slug = fixed_model(s)
        promotions = ledger.platform_account(s, AccountCode.PLATFORM_PROMOTIONS)
        promo_before = ledger.get_balance(s, promotions).balance
        a = wallets.grant_info(
            s,
            uid,
            5 * CREDIT,
            source=GrantSource.BONUS,
            idempotency_key="a",
            expires_at=t1,
            now=base,
        )
        b = wallets.grant_info(
            s,
            uid,
            3 * CREDIT,
            source=GrantSource.PURCHASED,
            idempotency_key="b",
            expires_at=t2,
            cost_basis_uusd=300_000,
            now=base,
        )
        c = wallets.grant_info(
            s, uid, 2 * CREDIT, source=GrantSource.DEPOSIT, idempotency_key="c", now=base
        )
    ids = [a.id, b.id, c.id]

    # At exactly t1 grant A has expired (expires_at <= now): its 5 credits are swept, the
    # 2-credit charge burns B (soonest live expiry) and never touches A.
    with db.tx() as s:
        first = metering.charge(s, UsageEvent("x1", uid, slug, charge_ucr=2 * CREDIT), now=t1)
    assert first.balance_ucr == 3 * CREDIT
    with db.tx() as s:
        assert db_burns(s, "expiry", a.id) == [(a.id, 5 * CREDIT, 0)]
        assert db_burns(s, "usage", first.usage_id) == [(b.id, 2 * CREDIT, 200_000)]
        assert remaining_of(s, ids) == {a.id: 0, b.id: 1 * CREDIT, c.id: 2 * CREDIT}
        assert expiry_total(s, wallet_account) == 5 * CREDIT
        sweep = s.connection().execute(
            select(transfers.c.ref_type, transfers.c.ref_id, transfers.c.amount).where(
                transfers.c.code == TransferCode.EXPIRY.value
            )
        )
        assert [tuple(r) for r in sweep] == [("grant", a.id, 5 * CREDIT)]

    # At t2, B (1 credit left) has expired too: live credits are C's 2, a 3-credit charge is
    # rejected. charge() raises and the caller's transaction rolls back, sweep included.
    with pytest.raises(InsufficientFunds) as info, db.tx() as s:
        metering.charge(s, UsageEvent("x2", uid, slug, charge_ucr=3 * CREDIT), now=t2)
    assert info.value.context["available_ucr"] == 2 * CREDIT
    assert info.value.context["needed_ucr"] == 3 * CREDIT
    with db.tx() as s:
        assert wallets.balance(s, uid).balance_ucr == 3 * CREDIT
        assert remaining_of(s, ids) == {a.id: 0, b.id: 1 * CREDIT, c.id: 2 * CREDIT}
        assert usage_count(s, uid) == 1
        assert db_burns(s, "expiry", b.id) == []

    # The same through charge_batch: rejected, no usage row, no usage burn; the sweep of B
    # (done while loading the grants) is kept.
    with db.tx() as s:
        [rejected] = metering.charge_batch(
            s, [UsageEvent("x2", uid, slug, charge_ucr=3 * CREDIT)], now=t2
        )
    assert (rejected.status, rejected.error_code) == ("rejected", "insufficient_funds")
    with db.tx() as s:
        assert usage_count(s, uid) == 1
        assert db_burns(s, "expiry", b.id) == [(b.id, 1 * CREDIT, 100_000)]
        assert remaining_of(s, ids) == {a.id: 0, b.id: 0, c.id: 2 * CREDIT}
        assert wallets.balance(s, uid).balance_ucr == 2 * CREDIT
        assert expiry_total(s, wallet_account) == 6 * CREDIT

    # What is live is spendable, exactly.
    with db.tx() as s:
        last = metering.charge(s, UsageEvent("x3", uid, slug, charge_ucr=2 * CREDIT), now=t2)
    with db.tx() as s:
        assert db_burns(s, "usage", last.usage_id) == [(c.id, 2 * CREDIT, 0)]
        assert wallets.balance(s, uid).balance_ucr == 0
        # promotions gave 5 (bonus A) and got 5 + 1 back from the sweeps
        assert ledger.get_balance(s, promotions).balance - promo_before == 1 * CREDIT
        # the swept purchased credit carried its basis: B's burns sum to its basis
        assert (
            sum(b_ for _, _, b_ in db_burns(s, "usage", first.usage_id))
            + sum(b_ for _, _, b_ in db_burns(s, "expiry", b.id))
            == 300_000
        )


# ---------------------------------------------------------------- 3. sweep_expired


def test_sweep_expired_is_idempotent_and_bounded(db: Db) -> None:
    base = _base()
    t1 = base + HOUR
    late = base + 5 * HOUR
    with db.tx() as s:
        u1, u2, u3 = (factories.user(s, f"sweep-{i}") for i in range(3))
        g1 = wallets.grant_info(
            s,
            u1,
            1 * CREDIT,
            source=GrantSource.BONUS,
            idempotency_key="s1",
            expires_at=t1,
            now=base,
        )
        g2a = wallets.grant_info(
            s,
            u2,
            2 * CREDIT,
            source=GrantSource.BONUS,
            idempotency_key="s2a",
            expires_at=t1 + timedelta(minutes=10),
            now=base,
        )
        g2b = wallets.grant_info(
            s,
            u2,
            3 * CREDIT,
            source=GrantSource.PURCHASED,
            idempotency_key="s2b",
            expires_at=t1 + timedelta(minutes=20),
            cost_basis_uusd=7,
            now=base,
        )
        g3 = wallets.grant_info(
            s,
            u3,
            4 * CREDIT,
            source=GrantSource.REFUND,
            idempotency_key="s3",
            expires_at=t1 + timedelta(minutes=30),
            now=base,
        )
        keep = wallets.grant_info(
            s, u3, 5 * CREDIT, source=GrantSource.DEPOSIT, idempotency_key="s3k", now=base
        )
        not_yet = wallets.grant_info(
            s,
            u1,
            6 * CREDIT,
            source=GrantSource.BONUS,
            idempotency_key="s1n",
            expires_at=late + HOUR,
            now=base,
        )
    ids = [g1.id, g2a.id, g2b.id, g3.id, keep.id, not_yet.id]

    with db.tx() as s:  # nothing has expired yet
        assert grants.sweep_expired(s, now=base + timedelta(minutes=59), limit=10) == 0
    # limit=1: one expired grant row is selected (the soonest), and that user's expired
    # grants are swept; the other users are untouched.
    with db.tx() as s:
        assert grants.sweep_expired(s, now=late, limit=1) == 1
    with db.tx() as s:
        assert remaining_of(s, ids) == {
            g1.id: 0,
            g2a.id: 2 * CREDIT,
            g2b.id: 3 * CREDIT,
            g3.id: 4 * CREDIT,
            keep.id: 5 * CREDIT,
            not_yet.id: 6 * CREDIT,
        }
    with db.tx() as s:
        assert grants.sweep_expired(s, now=late, limit=1) == 2  # both of u2's grants
    with db.tx() as s:
        assert db_burns(s, "expiry", g2b.id) == [(g2b.id, 3 * CREDIT, 7)]
        assert remaining_of(s, [g3.id])[g3.id] == 4 * CREDIT
    with db.tx() as s:
        assert grants.sweep_expired(s, now=late, limit=1) == 1
    for _ in range(2):  # idempotent: nothing left to sweep
        with db.tx() as s:
            assert grants.sweep_expired(s, now=late, limit=1) == 0
            assert grants.sweep_expired(s, now=late) == 0
    with db.tx() as s:
        assert remaining_of(s, ids) == {
            g1.id: 0,
            g2a.id: 0,
            g2b.id: 0,
            g3.id: 0,
            keep.id: 5 * CREDIT,
            not_yet.id: 6 * CREDIT,
        }
        assert [wallets.balance(s, u).balance_ucr for u in (u1, u2, u3)] == [
            6 * CREDIT,
            0,
            5 * CREDIT,
        ]
        for grant in (g1, g2a, g2b, g3):
            assert sum(a for _, a, _ in db_burns(s, "expiry", grant.id)) == grant.amount_ucr


def test_sweep_keeps_credits_reserved_by_a_pending_hold(db: Db) -> None:
    base = _base()
    t1 = base + HOUR
    with db.tx() as s:
        uid = factories.user(s, "held")
        a = wallets.grant_info(
            s,
            uid,
            5 * CREDIT,
            source=GrantSource.BONUS,
            idempotency_key="ha",
            expires_at=t1,
            now=base,
        )
        b = wallets.grant_info(
            s, uid, 2 * CREDIT, source=GrantSource.PURCHASED, idempotency_key="hb", now=base
        )
        hold = holds.place(
            s, uid, 6 * CREDIT, timeout_s=3 * 3600, idempotency_key="h", now=base
        )  # placed before A expires: it reserves A's 5 credits and 1 of B's (burn order)
    with db.tx() as s:
        # what the hold reserves of the expired grant stays: here all of it, nothing swept
        assert grants.sweep_expired(s, now=t1, limit=10) == 0
    with db.tx() as s:
        assert remaining_of(s, [a.id, b.id]) == {a.id: 5 * CREDIT, b.id: 2 * CREDIT}
        balance = wallets.balance(s, uid)
        assert (balance.balance_ucr, balance.pending_ucr, balance.available_ucr) == (
            7 * CREDIT,
            6 * CREDIT,
            1 * CREDIT,
        )
        assert db_burns(s, "expiry", a.id) == []
    with db.tx() as s:  # idempotent while the hold is pending: nothing more to take
        assert grants.sweep_expired(s, now=t1 + timedelta(minutes=5), limit=10) == 0
        assert remaining_of(s, [a.id])[a.id] == 5 * CREDIT
    with db.tx() as s:
        holds.void(s, hold.id, now=t1 + timedelta(minutes=10))
    with db.tx() as s:  # released: the expired grant goes now
        assert grants.sweep_expired(s, now=t1 + timedelta(minutes=10), limit=10) == 1
    with db.tx() as s:
        assert remaining_of(s, [a.id, b.id]) == {a.id: 0, b.id: 2 * CREDIT}
        assert db_burns(s, "expiry", a.id) == [(a.id, 5 * CREDIT, 0)]
        assert wallets.balance(s, uid).balance_ucr == 2 * CREDIT
        assert grants.sweep_expired(s, now=t1 + timedelta(minutes=10), limit=10) == 0


def test_sweep_is_not_starved_by_expired_credits_a_hold_reserves(db: Db) -> None:
    base = _base()
    t1 = base + HOUR
    with db.tx() as s:
        held = factories.user(s, "starver")
        other = factories.user(s, "starved")
        wallets.grant_info(
            s,
            held,
            5 * CREDIT,
            source=GrantSource.BONUS,
            idempotency_key="st1",
            expires_at=t1,
            now=base,
        )
        holds.place(s, held, 5 * CREDIT, timeout_s=6 * 3600, idempotency_key="sth", now=base)
        late = wallets.grant_info(
            s,
            other,
            1 * CREDIT,
            source=GrantSource.BONUS,
            idempotency_key="st2",
            expires_at=t1 + timedelta(minutes=10),
            now=base,
        )
    now = t1 + timedelta(minutes=20)
    cursor: int | None = 0
    while cursor is not None:  # what jobs.run_once does, with a batch of 1
        with db.tx() as s:
            _, cursor = grants.sweep_expired_page(s, now=now, limit=1, after_user=cursor)
    with db.tx() as s:
        assert remaining_of(s, [late.id]) == {late.id: 0}


def test_hold_placed_before_expiry_can_be_captured_after_it(db: Db) -> None:
    """A hold reserved 6 credits while 5 of them were in a grant that then expired; the
    sweep leaves the reserved part in the expired grant. Capturing the hold for what it
    reserved must then burn that reserved part (or the hold is uncapturable)."""
    base = _base()
    t1 = base + HOUR
    with db.tx() as s:
        uid = factories.user(s, "held-capture")
        slug = fixed_model(s)
        a = wallets.grant_info(
            s,
            uid,
            5 * CREDIT,
            source=GrantSource.BONUS,
            idempotency_key="ca",
            expires_at=t1,
            now=base,
        )
        b = wallets.grant_info(
            s, uid, 2 * CREDIT, source=GrantSource.PURCHASED, idempotency_key="cb", now=base
        )
        hold = holds.place(
            s, uid, 6 * CREDIT, timeout_s=3 * 3600, idempotency_key="ch", model=slug, now=base
        )
    with db.tx() as s:
        _, result = capture(s, hold.id, 6 * CREDIT, now=t1 + timedelta(minutes=1))
    assert result.status == "charged" and result.charge_ucr == 6 * CREDIT
    with db.tx() as s:
        assert wallets.balance(s, uid).balance_ucr == 1 * CREDIT
        assert sum(a_ for _, a_, _ in db_burns(s, "usage", result.usage_id)) == 6 * CREDIT
        left = remaining_of(s, [a.id, b.id])
        assert left[a.id] + left[b.id] == 1 * CREDIT


# ---------------------------------------------------------------- 4. cost basis, recognition


@PROPERTY
@given(
    amount=st.integers(1, 10**9),
    basis=st.integers(0, 10**8),
    bonus=st.integers(0, 10**7),
    data=st.data(),
)
def test_cost_basis_of_a_purchased_grant_is_burned_exactly(
    db: Db, amount: int, basis: int, bonus: int, data: st.DataObject
) -> None:
    with db.tx() as s:
        uid = factories.user(s, _name("basis"))
        slug = fixed_model(s)
    base = _base()  # after the model's price version took effect
    with db.tx() as s:
        purchased = wallets.grant_info(
            s,
            uid,
            amount,
            source=GrantSource.PURCHASED,
            idempotency_key=f"p:{uid}",
            cost_basis_uusd=basis,
            now=base,
        )
        book = [RefGrant(purchased.id, "purchased", amount, amount, basis, None, 40)]
        if bonus:
            free = wallets.grant_info(
                s, uid, bonus, source=GrantSource.BONUS, idempotency_key=f"b:{uid}", now=base
            )
            book.append(RefGrant(free.id, "bonus", bonus, bonus, 0, None, 10))
        before = grants.recognition(s)
    total = amount + bonus
    cuts = data.draw(
        st.lists(st.integers(1, total - 1), unique=True, max_size=5) if total > 1 else st.just([]),
        label="cuts",
    )
    edges = [0, *sorted(cuts), total]
    chunks = [hi - lo for lo, hi in itertools.pairwise(edges)]
    usages: list[tuple[int, list[tuple[int, int, int]]]] = []
    for chunk in chunks:
        expected = ref_burn(book, chunk, base)
        with db.tx() as s:
            result = metering.charge(
                s, UsageEvent(_name("chunk"), uid, slug, charge_ucr=chunk), now=base
            )
            assert result.usage_id is not None
            assert db_burns(s, "usage", result.usage_id) == expected
        usages.append((result.usage_id, expected))

    def purchased_basis(s: Session) -> int:
        return int(
            s.connection()
            .execute(
                select(func.coalesce(func.sum(burns.c.basis_uusd), 0)).where(
                    burns.c.grant_id == purchased.id
                )
            )
            .scalar_one()
        )

    with db.tx() as s:
        assert purchased_basis(s) == basis  # exactly the basis, however it was chunked
        after = grants.recognition(s)
        assert after.purchased_ucr - before.purchased_ucr == amount
        assert after.bonus_ucr - before.bonus_ucr == bonus
        assert after.purchased_basis_uusd - before.purchased_basis_uusd == basis
        assert wallets.balance(s, uid).balance_ucr == 0

    # A usage refund returns credits to the grants that usage burned, the last burned first,
    # each with the basis of the last consumed credits of its grant; recognition nets it out.
    usage_id, burned = usages[data.draw(st.integers(0, len(usages) - 1), label="which")]
    charged = sum(a for _, a, _ in burned)
    back = data.draw(st.integers(1, charged), label="refund")
    by_id = {g.id: g for g in book}
    expected_restores = []
    left = back
    for grant_id, part, _ in reversed(burned):
        if left == 0:
            break
        grant = by_id[grant_id]
        take = min(part, left)
        consumed = grant.amount - grant.remaining
        expected_restores.append(
            (
                grant_id,
                -take,
                ref_basis(consumed - take, grant.amount, grant.basis)
                - ref_basis(consumed, grant.amount, grant.basis),
            )
        )
        grant.remaining += take
        left -= take
    with db.tx() as s:
        refund = refunds.refund_usage(s, usage_id, amount_ucr=back, now=base)
        assert refund.amount_ucr == back
    with db.tx() as s:
        assert db_burns(s, "usage_refund", usage_id) == expected_restores
        assert remaining_of(s, [g.id for g in book]) == {g.id: g.remaining for g in book}
        assert wallets.balance(s, uid).balance_ucr == back
        net = grants.recognition(s)
        restored_purchased = -sum(a for g, a, _ in expected_restores if g == purchased.id)
        restored_basis = -sum(b for g, _, b in expected_restores if g == purchased.id)
        assert net.purchased_ucr - before.purchased_ucr == amount - restored_purchased
        assert net.bonus_ucr - before.bonus_ucr == bonus - (back - restored_purchased)
        assert net.purchased_basis_uusd - before.purchased_basis_uusd == basis - restored_basis
        assert purchased_basis(s) == basis - restored_basis

    # Spending the refunded credits again burns the rest of the basis: exact in total.
    with db.tx() as s:
        metering.charge(s, UsageEvent(_name("again"), uid, slug, charge_ucr=back), now=base)
    with db.tx() as s:
        assert purchased_basis(s) == basis
        final = grants.recognition(s)
        assert final.purchased_ucr - before.purchased_ucr == amount
        assert final.bonus_ucr - before.bonus_ucr == bonus
        assert final.purchased_basis_uusd - before.purchased_basis_uusd == basis


# ---------------------------------------------------------------- idempotency of issuing


def test_grant_retry_with_the_same_body_returns_the_first_grant(db: Db) -> None:
    base = _base()
    with db.tx() as s:
        uid = factories.user(s, "retry")
        first = wallets.grant_info(
            s,
            uid,
            5 * CREDIT,
            source=GrantSource.PURCHASED,
            idempotency_key="k",
            cost_basis_uusd=450_000,
            expires_at=base + HOUR,
            priority=7,
            now=base,
        )
        again = wallets.grant_info(
            s,
            uid,
            5 * CREDIT,
            source=GrantSource.PURCHASED,
            idempotency_key="k",
            cost_basis_uusd=450_000,
            expires_at=base + HOUR,
            priority=7,
            now=base,
        )
        assert again == first
        assert len(grants.list_grants(s, uid)) == 1
        assert wallets.balance(s, uid).balance_ucr == 5 * CREDIT


@pytest.mark.parametrize(
    "change",
    [{"cost_basis_uusd": 1}, {"expires_at": None}, {"priority": 99}],
    ids=["basis", "expiry", "priority"],
)
def test_grant_key_reused_with_another_body_conflicts(db: Db, change: dict) -> None:
    base = _base()
    body = {
        "source": GrantSource.PURCHASED,
        "cost_basis_uusd": 450_000,
        "expires_at": base + HOUR,
        "priority": 7,
        "now": base,
    }
    with db.tx() as s:
        uid = factories.user(s, "reuse")
        wallets.grant_info(s, uid, 5 * CREDIT, idempotency_key="k", **body)
    with pytest.raises(IdempotencyConflict), db.tx() as s:
        wallets.grant_info(s, uid, 5 * CREDIT, idempotency_key="k", **{**body, **change})
