"""Ownership stakes, their listings and sale, rule versions and one usage event explained
(DESIGN §7), on both backends; and a property test of the split of earnings by stakes through
the real charge pipeline, against :mod:`modelbank.earnings.rules` (``earnings_exact`` +
``split``) and the ledger's balances."""

from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelbank.analytics.explain import explain_usage
from modelbank.catalog.errors import ModelNotFound
from modelbank.db.base import utcnow
from modelbank.earnings import explain, stakes
from modelbank.earnings import service as earnings
from modelbank.earnings.errors import (
    InvalidRule,
    InvalidSplit,
    ListingNotFound,
    ListingState,
    OwnListing,
    StakeUnavailable,
)
from modelbank.earnings.models import beneficiaries_table, earnings_table, listings_table
from modelbank.earnings.rules import (
    BPS,
    EarningsRule,
    earnings_exact,
    popularity_multiplier,
    split,
    type_multiplier,
)
from modelbank.errors import InvalidInput
from modelbank.ledger import invariants
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.ledger.errors import InsufficientFunds
from modelbank.ledger.models import transfers_table as transfers
from modelbank.metering import service as metering
from modelbank.metering.errors import UsageNotFound
from modelbank.metering.service import UsageEvent
from modelbank.money import round_ucr
from modelbank.pricing.formulas import Rates
from modelbank.users import service as users
from modelbank.wallets import grants
from modelbank.wallets import service as wallets
from modelbank.wallets.grants import GrantSource
from modelbank.wallets.models import burns_table as burns
from modelbank.wallets.models import grants_table
from tests import factories
from tests.conftest import Db

CREDIT = 1_000_000
PRICE = Rates(input_per_mtok=Decimal(3_000_000), output_per_mtok=Decimal(7_000_000))
"""Explicit price: 3 / 7 credits per 1M input / output tokens."""

_seq = itertools.count(1)


def _name(prefix: str) -> str:
    return f"{prefix}-{next(_seq)}"


def _model(session: Session, creator: int | None, rule: EarningsRule | None = None) -> int:
    return factories.model(session, _name("m"), creator_id=creator, explicit=PRICE, rule=rule)


def _wallet(session: Session, user_id: int) -> int:
    return wallets.balance(session, user_id).balance_ucr


def _earned(session: Session, user_id: int) -> int:
    return ledger.get_balance(session, users.get_user(session, user_id).earnings_account_id).balance


def _state(session: Session) -> tuple[Any, ...]:
    """What a refused operation must leave unchanged: transfers, burns, grants, listings and
    stakes (row counts and sums)."""
    conn = session.connection()
    return tuple(
        conn.execute(select(func.count(), func.coalesce(func.sum(col), 0))).one()
        for col in (
            transfers.c.amount,
            burns.c.amount_ucr,
            grants_table.c.remaining_ucr,
            listings_table.c.share_bps,
            beneficiaries_table.c.share_bps,
        )
    ) + tuple(
        conn.execute(
            select(listings_table.c.id, listings_table.c.status).order_by(listings_table.c.id)
        ).all()
    )


# ---------------------------------------------------------------- stakes


def test_creator_holds_everything_until_stakes_are_set(db: Db) -> None:
    with db.tx() as session:
        creator = factories.user(session, _name("c"))
        other = factories.user(session, _name("o"))
        model = _model(session, creator)
        platform_model = _model(session, None)
        assert stakes.get_stakes(session, model) == [(creator, BPS)]
        assert stakes.get_stakes(session, platform_model) == []
        result = stakes.set_stakes(session, model, [(other, 2_500), (creator, 7_500)])
        assert result == [(creator, 7_500), (other, 2_500)]
        assert stakes.get_stakes(session, model) == result
        with pytest.raises(ModelNotFound):
            stakes.get_stakes(session, 10**9)


@pytest.mark.parametrize(
    "shares",
    [[(0, 10_000)], [("c", 5_000), ("c", 5_000)], [("c", 9_999)], [("c", 10_000), ("o", 0)]],
)
def test_set_stakes_refuses_bad_splits(db: Db, shares: list[tuple[Any, int]]) -> None:
    with db.tx() as session:
        creator = factories.user(session, _name("c"))
        other = factories.user(session, _name("o"))
        model = _model(session, creator)
        ids = {"c": creator, "o": other, 0: 10**9}
        with pytest.raises(InvalidSplit):
            stakes.set_stakes(session, model, [(ids[u], bps) for u, bps in shares])
        assert stakes.get_stakes(session, model) == [(creator, BPS)]


def test_set_stakes_cancels_listings_no_longer_covered(db: Db) -> None:
    with db.tx() as session:
        creator = factories.user(session, _name("c"))
        other = factories.user(session, _name("o"))
        model = _model(session, creator)
        first = stakes.create_listing(session, model, creator, 3_000, CREDIT)
        second = stakes.create_listing(session, model, creator, 3_000, CREDIT)
        assert stakes.listed_bps(session, model) == {creator: 6_000}
        stakes.set_stakes(session, model, [(creator, 4_000), (other, 6_000)])
        kept = stakes.get_listing(session, first.id)
        dropped = stakes.get_listing(session, second.id)
        assert (kept.status, dropped.status) == ("open", "cancelled")
        assert dropped.closed_at is not None
        assert stakes.listed_bps(session, model) == {creator: 3_000}


# ---------------------------------------------------------------- listings


def test_listings_never_offer_more_than_the_seller_holds(db: Db) -> None:
    with db.tx() as session:
        creator = factories.user(session, _name("c"))
        stranger = factories.user(session, _name("s"))
        model = _model(session, creator)
        stakes.create_listing(session, model, creator, 6_000, 5 * CREDIT)
        with pytest.raises(StakeUnavailable) as refused:
            stakes.create_listing(session, model, creator, 4_001, CREDIT)
        assert refused.value.context == {
            "held_bps": 10_000,
            "listed_bps": 6_000,
            "share_bps": 4_001,
        }
        stakes.create_listing(session, model, creator, 4_000, 0)  # a gift is allowed
        with pytest.raises(StakeUnavailable):
            stakes.create_listing(session, model, stranger, 1, CREDIT)
        for share, price in ((0, 1), (10_001, 1), (1, -1)):
            with pytest.raises(InvalidInput):
                stakes.create_listing(session, model, creator, share, price)
        assert [x.share_bps for x in stakes.list_listings(session, model)] == [6_000, 4_000]


def test_cancel_listing_by_its_seller_only(db: Db) -> None:
    with db.tx() as session:
        creator = factories.user(session, _name("c"))
        other = factories.user(session, _name("o"))
        model = _model(session, creator)
        other_model = _model(session, creator)
        listing = stakes.create_listing(session, model, creator, 1_000, CREDIT)
        with pytest.raises(ListingNotFound):
            stakes.cancel_listing(session, listing.id, seller_id=other)
        with pytest.raises(ListingNotFound):
            stakes.cancel_listing(session, listing.id, model_id=other_model)
        done = stakes.cancel_listing(session, listing.id, model_id=model, seller_id=creator)
        assert done.status == "cancelled"
        with pytest.raises(ListingState):
            stakes.cancel_listing(session, listing.id)
        with pytest.raises(ListingState):
            stakes.buy_listing(session, listing.id, other)
        assert stakes.list_listings(session, model) == []
        assert [x.status for x in stakes.list_listings(session, model, status=None)] == [
            "cancelled"
        ]


# ---------------------------------------------------------------- buying


def test_buying_moves_credits_through_grants_and_the_stake_atomically(db: Db) -> None:
    with db.tx() as session:
        creator = factories.user(session, _name("c"))
        buyer = factories.user(session, _name("b"))
        model = _model(session, creator)
        # 2 credits free, then 10 credits bought for $0.10: the bonus burns first.
        wallets.grant_info(
            session, buyer, 2 * CREDIT, source=GrantSource.BONUS, idempotency_key=_name("k")
        )
        wallets.grant_info(
            session, buyer, 10 * CREDIT, cost_basis_uusd=100_000, idempotency_key=_name("k")
        )
        listing = stakes.create_listing(session, model, creator, 2_500, 7 * CREDIT)
        sold = stakes.buy_listing(session, listing.id, buyer, model_id=model)

        assert (sold.status, sold.buyer_id) == ("sold", buyer)
        assert sold.transfer_id is not None and sold.closed_at is not None
        assert stakes.get_stakes(session, model) == [(creator, 7_500), (buyer, 2_500)]
        assert _wallet(session, buyer) == 5 * CREDIT
        assert _wallet(session, creator) == 7 * CREDIT
        row = session.execute(select(transfers).where(transfers.c.id == sold.transfer_id)).one()
        assert (row.code, row.ref_type, row.ref_id, row.amount) == (
            TransferCode.TRADE.value,
            "stake_listing",
            listing.id,
            7 * CREDIT,
        )
        # The buyer's burns: 2 bonus credits, then 5 of the purchased ones ($0.05 of basis).
        taken = session.execute(
            select(burns.c.source, burns.c.amount_ucr, burns.c.basis_uusd)
            .where(burns.c.ref_type == "stake_listing", burns.c.ref_id == listing.id)
            .order_by(burns.c.id)
        ).all()
        assert [tuple(t) for t in taken] == [
            ("bonus", 2 * CREDIT, 0),
            ("purchased", 5 * CREDIT, 50_000),
        ]
        # The seller's credits arrive as one grant carrying that basis.
        (received,) = grants.list_grants(session, creator)
        assert (received.source, received.amount_ucr, received.cost_basis_uusd) == (
            "purchased",
            7 * CREDIT,
            50_000,
        )
        assert received.transfer_id == sold.transfer_id and received.expires_at is None

        with pytest.raises(ListingState):
            stakes.buy_listing(session, listing.id, factories.user(session, _name("x")))


def test_credits_bought_with_free_credits_stay_free(db: Db) -> None:
    with db.tx() as session:
        creator = factories.user(session, _name("c"))
        buyer = factories.user(session, _name("b"))
        model = _model(session, creator)
        wallets.grant_info(
            session, buyer, 3 * CREDIT, source=GrantSource.BONUS, idempotency_key=_name("k")
        )
        listing = stakes.create_listing(session, model, creator, 100, 3 * CREDIT)
        stakes.buy_listing(session, listing.id, buyer)
        (received,) = grants.list_grants(session, creator)
        assert (received.source, received.cost_basis_uusd) == ("bonus", 0)


def test_stakes_merge_and_a_whole_stake_can_be_sold(db: Db) -> None:
    with db.tx() as session:
        creator = factories.user(session, _name("c"))
        buyer = factories.user(session, _name("b"), credits_ucr=10 * CREDIT)
        model = _model(session, creator)
        for share in (1_000, 2_000):
            listing = stakes.create_listing(session, model, creator, share, CREDIT)
            stakes.buy_listing(session, listing.id, buyer)
        assert stakes.get_stakes(session, model) == [(creator, 7_000), (buyer, 3_000)]
        listing = stakes.create_listing(session, model, creator, 7_000, 0)
        gift = stakes.buy_listing(session, listing.id, buyer)
        assert gift.transfer_id is None  # a free listing moves no credits
        assert stakes.get_stakes(session, model) == [(buyer, BPS)]
        assert _wallet(session, buyer) == 8 * CREDIT


def test_refused_purchases_write_nothing(db: Db) -> None:
    with db.tx() as session:
        creator = factories.user(session, _name("c"))
        poor = factories.user(session, _name("p"), credits_ucr=CREDIT - 1)
        model = _model(session, creator)
        listing = stakes.create_listing(session, model, creator, 1_000, CREDIT)
    for buyer, error in ((poor, InsufficientFunds), (creator, OwnListing)):
        with db.factory() as session:
            session.begin()
            before = _state(session)
            with pytest.raises(error):
                stakes.buy_listing(session, listing.id, buyer)
            session.rollback()  # what the API's transaction does with an error
        with db.tx() as session:
            assert _state(session) == before
    with db.tx() as session:
        with pytest.raises(ListingNotFound):
            stakes.buy_listing(session, listing.id + 1000, poor)
        # stakes changed under the listing without cancelling it: the sale is refused
        earnings.set_beneficiaries(session, model, [(poor, BPS)])
        with pytest.raises(StakeUnavailable):
            stakes.buy_listing(session, listing.id, poor)


# ---------------------------------------------------------------- rule versions, explain


def test_rule_versions(db: Db) -> None:
    with db.tx() as session:
        creator = factories.user(session, _name("c"))
        model = _model(session, creator)
        assert explain.current_rule(session, model) == explain.DEFAULT_VERSION
        assert explain.rule_history(session, model) == []
        first = explain.change_rule(session, model, earnings.build_rule(per_use_ucr=5))
        assert first.rule.version == 1
        later = utcnow() + timedelta(days=1)
        explain.change_rule(
            session, model, earnings.build_rule(per_use_ucr=9), effective_from=later
        )
        assert explain.current_rule(session, model).rule.per_use_ucr == 5
        assert explain.current_rule(session, model, at=later).rule.per_use_ucr == 9
        assert [v.rule.version for v in explain.rule_history(session, model)] == [1, 2]
        with pytest.raises(InvalidRule):
            explain.change_rule(
                session, model, EarningsRule(), effective_from=utcnow() - timedelta(minutes=1)
            )
        with pytest.raises(ModelNotFound):
            explain.change_rule(session, 10**9, EarningsRule())
        assert explain.rule_of_version(session, model, 0) == EarningsRule()
        assert explain.rule_of_version(session, model, 7) is None


def test_explain_usage_shows_why_to_payer_and_beneficiaries_only(db: Db) -> None:
    with db.tx() as session:
        creator = factories.user(session, _name("c"))
        holder = factories.user(session, _name("h"))
        payer = factories.user(session, _name("p"), credits_ucr=100 * CREDIT)
        stranger = factories.user(session, _name("s"))
        rule = earnings.build_rule(per_use_ucr=1_000, share_bps=1_000)
        model = _model(session, creator, rule)
        stakes.set_stakes(session, model, [(creator, 6_000), (holder, 4_000)])
        used = metering.charge(
            session,
            UsageEvent(_name("e"), payer, model, usage_type="chat", input_tokens=100_000),
        )
        assert used.usage_id is not None
        seen = explain_usage(session, used.usage_id, viewer=payer)
        assert seen.payer_id == payer and seen.burns and seen.earnings_note is None
        assert sum(a for _, a in seen.burns) == seen.charge_ucr == used.charge_ucr
        assert [(x.user_id, x.share_bps, x.rule_version) for x in seen.lines] == [
            (creator, 6_000, 1),
            (holder, 4_000, 1),
        ]
        assert {x.type_multiplier for x in seen.lines} == {Decimal("0.8")}
        assert {x.popularity_multiplier for x in seen.lines} == {Decimal("1.0")}
        assert seen.rule is not None and seen.rule.per_use_ucr == 1_000
        assert seen.platform_kept_ucr == seen.charge_ucr - seen.earnings_ucr
        as_holder = explain_usage(session, used.usage_id, viewer=holder)
        assert as_holder.payer_id is None and as_holder.burns is None
        assert as_holder.lines == seen.lines
        assert explain_usage(session, used.usage_id, viewer=None).payer_id == payer
        for nobody in (stranger, None):
            with pytest.raises(UsageNotFound):
                explain_usage(
                    session,
                    used.usage_id + 1000 if nobody is None else used.usage_id,
                    viewer=nobody,
                )


# ---------------------------------------------------------------- the split, as a property

PROPERTY = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

MULTIPLIERS = st.sampled_from(["0", "0.5", "0.8", "1", "1.25", "1.5", "2.5", "3.333"])


@st.composite
def _splits(draw: st.DrawFn) -> list[int]:
    """2–6 positive stakes summing to 10,000 bps."""
    holders = draw(st.integers(2, 6))
    cuts = draw(
        st.lists(
            st.integers(1, BPS - 1), min_size=holders - 1, max_size=holders - 1, unique=True
        ).map(sorted)
    )
    edges = [0, *cuts, BPS]
    return [b - a for a, b in itertools.pairwise(edges)]


_rules = st.builds(
    lambda per_use, per_token, share, tiers, chat, other: earnings.build_rule(
        per_use_ucr=per_use,
        per_token_ucr=per_token,
        share_bps=share,
        popularity_tiers=tiers,
        type_multipliers={"chat": chat, "image_generation": "1.0", "*": other},
    ),
    st.integers(0, 50_000),
    st.sampled_from(["0", "0.01", "0.37", "1", "2.5", "10000"]),
    st.integers(0, BPS),
    st.lists(st.tuples(st.integers(0, 8), MULTIPLIERS), max_size=3),
    MULTIPLIERS,
    MULTIPLIERS,
)

_events = st.lists(
    st.tuples(
        st.integers(0, 400_000),
        st.integers(0, 200_000),
        st.sampled_from(["chat", "image_generation", "embedding", "other"]),
    ),
    min_size=1,
    max_size=8,
)


@PROPERTY
@given(shares=_splits(), rule=_rules, events=_events, payer_pick=st.integers(-2, 5))
def test_earnings_split_by_stakes_exactly(
    db: Db,
    shares: list[int],
    rule: EarningsRule,
    events: list[tuple[int, int, str]],
    payer_pick: int,
) -> None:
    with db.tx() as session:
        holders = [factories.user(session, _name("h")) for _ in shares]
        outsider = factories.user(session, _name("o"))
        model = _model(session, holders[0])
        stored = earnings.set_rule(session, model, rule)
        stakes.set_stakes(session, model, list(zip(holders, shares, strict=True)))
        split_by = sorted(zip(holders, shares, strict=True))
        # the payer: sometimes one of the holders, otherwise an outsider
        payer = holders[payer_pick] if 0 <= payer_pick < len(holders) else outsider
        wallets.grant(session, payer, 10**12, idempotency_key=_name("fund"))
        accounts = {u: users.get_user(session, u).earnings_account_id for u in holders}
        revenue = ledger.platform_account(session, AccountCode.PLATFORM_REVENUE)
        earned_before = {u: ledger.get_balance(session, a).balance for u, a in accounts.items()}
        revenue_before = ledger.get_balance(session, revenue).balance

        paid_total: dict[int, int] = {}
        charged = 0
        for prior, (input_tokens, output_tokens, usage_type) in enumerate(events):
            result = metering.charge(
                session,
                UsageEvent(
                    _name("e"),
                    payer,
                    model,
                    usage_type=usage_type,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                ),
            )
            assert result.usage_id is not None
            charged += result.charge_ucr
            exact = earnings_exact(
                stored,
                tokens=input_tokens + output_tokens,
                charge_ucr=result.charge_ucr,
                prior_uses=prior,
                usage_type=usage_type,
            )
            pool = round_ucr(exact)
            expected = split(exact, split_by, payer_id=payer)
            assert dict(result.earnings) == dict(expected)
            parts = dict(result.earnings)
            for user_id, bps in split_by:
                want = 0 if user_id == payer else pool * bps // BPS
                assert parts.get(user_id, 0) == want
            # Nothing lost or created: the platform keeps exactly the payer's own stake and
            # each holder's rounding remainder, in exact units of 1/10,000 µcr.
            kept = pool - sum(parts.values())
            assert kept >= 0
            assert BPS * kept == sum(
                pool * bps if user_id == payer else pool * bps % BPS for user_id, bps in split_by
            )
            rows = session.execute(
                select(earnings_table).where(earnings_table.c.usage_id == result.usage_id)
            ).all()
            assert {int(r.user_id): int(r.amount_ucr) for r in rows} == parts
            for r in rows:
                assert r.rule_version == stored.version
                assert r.popularity_multiplier == popularity_multiplier(stored, prior)
                assert r.type_multiplier == type_multiplier(stored, usage_type)
                assert r.share_bps == dict(split_by)[int(r.user_id)]
            for user_id, amount in parts.items():
                paid_total[user_id] = paid_total.get(user_id, 0) + amount

        assert payer not in paid_total
        for user_id, account in accounts.items():
            gained = ledger.get_balance(session, account).balance - earned_before[user_id]
            assert gained == paid_total.get(user_id, 0)
        gained_revenue = ledger.get_balance(session, revenue).balance - revenue_before
        assert gained_revenue == charged - sum(paid_total.values())
        assert invariants.check(session) == []
        assert grants.check(session) == []


# ---------------------------------------------------------------- concurrency (PostgreSQL)


def test_concurrent_buyers_and_sales_on_postgres(db: Db) -> None:
    """Six buyers race for one listing while four other listings (gifts) of the same model
    sell at once and a fan keeps using the model: the contested listing sells once, every other sale
    lands (no lost update of the stakes) and the stakes still sum to 10,000."""
    if db.backend != "postgres":
        pytest.skip("row-lock concurrency is a PostgreSQL test (SQLite serialises writers)")
    from concurrent.futures import ThreadPoolExecutor

    with db.tx() as session:
        creator = factories.user(session, _name("c"))
        fan = factories.user(session, _name("f"), credits_ucr=100 * CREDIT)
        racers = [factories.user(session, _name("r"), credits_ucr=2 * CREDIT) for _ in range(6)]
        others = [factories.user(session, _name("o"), credits_ucr=2 * CREDIT) for _ in range(4)]
        model = _model(session, creator)
        contested = stakes.create_listing(session, model, creator, 500, CREDIT).id
        # gifts: no wallets to lock, only the model's row serialises them
        single = [stakes.create_listing(session, model, creator, 1_000, 0).id for _ in others]

    def buy(listing_id: int, buyer: int) -> str:
        with db.tx() as session:
            try:
                stakes.buy_listing(session, listing_id, buyer)
            except ListingState:
                return "sold out"
        return "bought"

    def use(n: int) -> None:
        with db.tx() as session:
            metering.charge(session, UsageEvent(_name("u"), fan, model, input_tokens=1_000 + n))

    with ThreadPoolExecutor(max_workers=8) as pool:
        races = [pool.submit(buy, contested, r) for r in racers]
        sales = [pool.submit(buy, x, o) for x, o in zip(single, others, strict=True)]
        uses = [pool.submit(use, n) for n in range(10)]
        outcomes = [f.result() for f in races]
        assert [f.result() for f in sales] == ["bought"] * 4
        for f in uses:
            f.result()
    assert sorted(outcomes) == ["bought"] + ["sold out"] * 5
    with db.tx() as session:
        held = dict(stakes.get_stakes(session, model))
        assert sum(held.values()) == BPS and held[creator] == 10_000 - 500 - 4 * 1_000
        assert all(held[o] == 1_000 for o in others)
        winners = [r for r in racers if held.get(r)]
        assert len(winners) == 1 and held[winners[0]] == 500
        assert _wallet(session, creator) == CREDIT
        assert invariants.check(session) == [] and grants.check(session) == []


def test_admin_resplits_while_stakes_sell_on_postgres(db: Db) -> None:
    """An admin replaces the stakes while listings sell: every call ends in a sale, a
    refusal (the listing was cancelled) or a re-split, never a deadlock; the stakes sum to
    10,000 whatever the order, each sale is paid once and no open listing is uncovered."""
    if db.backend != "postgres":
        pytest.skip("row-lock concurrency is a PostgreSQL test (SQLite serialises writers)")
    from concurrent.futures import ThreadPoolExecutor

    with db.tx() as session:
        creator = factories.user(session, _name("c"))
        partner = factories.user(session, _name("p"))
        buyers = [factories.user(session, _name("b"), credits_ucr=2 * CREDIT) for _ in range(6)]
        model = _model(session, creator)
        listed = [stakes.create_listing(session, model, creator, 1_000, CREDIT).id for _ in buyers]

    def buy(listing_id: int, buyer: int) -> str:
        with db.tx() as session:
            try:
                stakes.buy_listing(session, listing_id, buyer)
            except (ListingState, StakeUnavailable) as refused:
                return refused.code
        return "bought"

    def resplit(n: int) -> str:
        with db.tx() as session:
            # a replacement, as an admin sends it: buyers' stakes bought before it are gone
            stakes.set_stakes(
                session, model, [(creator, 9_000 - 100 * n), (partner, 1_000 + 100 * n)]
            )
        return "resplit"

    with ThreadPoolExecutor(max_workers=8) as pool:
        jobs = [pool.submit(buy, x, b) for x, b in zip(listed, buyers, strict=True)]
        jobs += [pool.submit(resplit, n) for n in range(3)]
        results = [f.result() for f in jobs]
    assert set(results) <= {"bought", "resplit", "stake_listing_state", "stake_unavailable"}
    with db.tx() as session:
        held = dict(stakes.get_stakes(session, model))
        assert sum(held.values()) == BPS
        # each sale was paid for exactly once, whatever replaced the stakes afterwards
        assert _wallet(session, creator) == results.count("bought") * CREDIT
        sold = stakes.list_listings(session, model, status="sold")
        assert len(sold) == results.count("bought")
        # a listing the last re-split left uncovered is cancelled, never left open
        assert sum(x.share_bps for x in stakes.list_listings(session, model)) <= held[creator]
        assert invariants.check(session) == [] and grants.check(session) == []
