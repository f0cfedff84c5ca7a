"""The dashboard in a real browser: Playwright driving Debian's Chromium against a real
uvicorn server on a temporary SQLite database with a seeded world.

One story, in order (the tests share the server): sign in as each role, walk every page,
click the main actions (buy credits with the manual provider, buy premium access, edit a
price, recalculate, create and deactivate a model, confirm the purchase as admin; a creator's
earnings by period and model, a payout requested, completed by the admin, another failed;
the platform overview), and check both what the page shows and the ledger behind it.
Screenshots of every page at desktop (1280×800) and phone (390×844) width go to
``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from modelbank.analytics import dashboards
from modelbank.api import create_app
from modelbank.auth import service as auth
from modelbank.catalog import access
from modelbank.catalog import service as catalog
from modelbank.catalog.costs import Mode
from modelbank.catalog.tiers import Tier
from modelbank.config import load_settings
from modelbank.db.base import utcnow
from modelbank.db.engine import make_engine
from modelbank.earnings import payouts
from modelbank.earnings import service as earnings
from modelbank.earnings.rules import EarningsRule
from modelbank.gateway.fake_upstream import FakeUpstreamConfig
from modelbank.gateway.fake_upstream import create_app as create_fake
from modelbank.ledger import invariants
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode
from modelbank.metering import service as metering
from modelbank.metering.service import UsageEvent
from modelbank.pricing import service as pricing
from modelbank.pricing.formulas import Rates
from modelbank.wallets import grants, holds, purchases
from modelbank.wallets import service as wallets
from modelbank.wallets.grants import GrantSource
from modelbank.web import views
from tests.api.conftest import TEST_SECRET_KEY
from tests.factories import GPT4O_COST, user
from tests.gateway.conftest import serving

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
CREDIT = 1_000_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's Chromium is not installed at /usr/bin/chromium (apt-get install chromium)",
)
sync_api = pytest.importorskip("playwright.sync_api")


@dataclass
class World:
    """The seeded server: its URL, database engine, keys and ids."""

    url: str
    engine: Engine
    admin_key: str
    alice: int
    alice_key: str
    carol: int
    carol_key: str
    models: dict[str, int] = field(default_factory=dict)
    payout_ids: list[int] = field(default_factory=list)

    def session(self) -> Session:
        return Session(self.engine)

    def violations(self) -> list[object]:
        """Ledger invariants (DESIGN §3) and the wallets' grant invariant."""
        with self.session() as s, s.begin():
            return [*invariants.check(s), *grants.check(s)]

    def available(self, user_id: int) -> int:
        with self.session() as s, s.begin():
            return wallets.balance(s, user_id).available_ucr

    def payable(self, user_id: int) -> int:
        """µcr of earnings a payout may take now."""
        with self.session() as s, s.begin():
            return payouts.summary(s, user_id).available_ucr

    def world_payouts(self) -> int:
        """µcr posted to ``world_payouts`` (credits that left as cash)."""
        with self.session() as s, s.begin():
            account = ledger.platform_account(s, AccountCode.WORLD_PAYOUTS)
            return ledger.get_balance(s, account).credits_posted

    def creator(self, period: str, model_id: int | None = None) -> dashboards.CreatorAnalytics:
        with self.session() as s, s.begin():
            return dashboards.creator_analytics(s, self.carol, period, model_id)


def _model(
    s: Session,
    slug: str,
    name: str,
    *,
    mode: Mode = Mode.CHAT,
    category: str,
    tier: Tier,
    creator_id: int | None = None,
    premium_ucr: int = 0,
    cost: Rates | None = None,
    explicit: Rates | None = None,
    priced_days_ago: int = 40,
) -> int:
    info = catalog.create_model(
        s,
        catalog.NewModel(
            slug=slug,
            name=name,
            provider="openai" if cost else "custom",
            mode=mode,
            category=category,
            tier=tier,
            creator_id=creator_id,
            is_premium=premium_ucr > 0,
            access_price_ucr=premium_ucr,
        ),
    )
    pricing.set_price(
        s,
        info.id,
        tier=tier,
        cost_uusd=cost,
        explicit_ucr=explicit,
        effective_from=utcnow() - timedelta(days=priced_days_ago),
    )
    if creator_id is not None:
        earnings.set_rule(s, info.id, EarningsRule())
    return info.id


def _seed(engine: Engine, url: str) -> World:
    now = utcnow()
    with Session(engine) as s, s.begin():
        admin_key = auth.create_key(s, auth.Role.ADMIN, name="browser admin").secret
        alice = user(s, "alice", credits_ucr=30 * CREDIT)
        wallets.grant(
            s,
            alice,
            20 * CREDIT,
            source=GrantSource.BONUS,
            idempotency_key="seed:alice-bonus",
            expires_at=now + timedelta(days=10),
        )
        carol = user(s, "carol", credits_ucr=2 * CREDIT)  # under the 5-credit warning line
        world = World(
            url=url,
            engine=engine,
            admin_key=admin_key,
            alice=alice,
            alice_key=auth.create_key(s, auth.Role.USER, user_id=alice).secret,
            carol=carol,
            carol_key=auth.create_key(s, auth.Role.USER, user_id=carol).secret,
        )
        per_mtok = Decimal(CREDIT)
        world.models = {
            "gpt-4o": _model(
                s, "gpt-4o", "GPT-4o", category="Realistic", tier=Tier.MEDIUM, cost=GPT4O_COST
            ),
            "carol-anime": _model(
                s,
                "carol-anime",
                "Carol Anime",
                category="Anime",
                tier=Tier.SMALL,
                creator_id=carol,
                explicit=Rates(input_per_mtok=200 * per_mtok, output_per_mtok=400 * per_mtok),
            ),
            "sd-image": _model(
                s,
                "sd-image",
                "SD Image",
                mode=Mode.IMAGE_GENERATION,
                category="Fantasy",
                tier=Tier.IMAGE,
                explicit=Rates(per_unit=Decimal(3 * CREDIT)),
            ),
            "gold-art": _model(
                s,
                "gold-art",
                "Gold Art",
                category="Fantasy",
                tier=Tier.LARGE,
                premium_ucr=8 * CREDIT,
                explicit=Rates(input_per_mtok=500 * per_mtok, output_per_mtok=900 * per_mtok),
            ),
        }
        for i, (model, days_ago, tokens, units) in enumerate(
            [
                ("gpt-4o", 12, 2_000, 0),
                ("gpt-4o", 3, 4_000, 0),
                ("carol-anime", 5, 6_000, 0),
                ("carol-anime", 1, 3_000, 0),
                ("sd-image", 2, 0, 1),
            ]
        ):
            metering.charge(
                s,
                UsageEvent(
                    idempotency_key=f"seed-usage-{i}",
                    user_id=alice,
                    model=model,
                    usage_type="image_generation" if units else "chat",
                    input_tokens=tokens,
                    output_tokens=tokens // 4,
                    units=units,
                    occurred_at=now - timedelta(days=days_ago),
                ),
            )
        holds.place(s, alice, CREDIT, timeout_s=3_600, idempotency_key="seed-hold", model="gpt-4o")
        _seed_creator_economy(s, world, now)
    return world


def _seed_creator_economy(s: Session, world: World, now: datetime) -> None:
    """Carol's second model and Dave's use of both over the last 200 days (charged on those
    days, so the rollups put them there): every period and model filter of Carol's earnings
    page shows different numbers. The payout minimum drops to 5 credits."""
    world.models["carol-ghibli"] = _model(
        s,
        "carol-ghibli",
        "Carol Ghibli",
        mode=Mode.IMAGE_GENERATION,
        category="Anime",
        tier=Tier.IMAGE,
        creator_id=world.carol,
        explicit=Rates(per_unit=Decimal(8 * CREDIT)),
        priced_days_ago=400,
    )
    dave = user(s, "dave", credits_ucr=500 * CREDIT)
    for i, (model, days_ago, tokens, units) in enumerate(
        [
            ("carol-anime", 2, 50_000, 0),
            ("carol-anime", 20, 400_000, 0),
            ("carol-ghibli", 5, 0, 2),
            ("carol-ghibli", 60, 0, 3),
            ("carol-ghibli", 200, 0, 1),
        ]
    ):
        moment = now - timedelta(days=days_ago)
        metering.charge(
            s,
            UsageEvent(
                idempotency_key=f"seed-dave-{i}",
                user_id=dave,
                model=model,
                usage_type="image_generation" if units else "chat",
                input_tokens=tokens,
                output_tokens=tokens // 4,
                units=units,
                occurred_at=moment,
            ),
            now=moment,
        )
    payouts.set_minimum(s, 5 * CREDIT)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[World]:
    """A real uvicorn server (background thread) on a seeded temporary SQLite database."""
    path = tmp_path_factory.mktemp("web") / "web.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    port = _free_port()
    world = _seed(engine, f"http://127.0.0.1:{port}")
    app = create_app(load_settings(database_url=url, secret_key=TEST_SECRET_KEY), engine=engine)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield world
    server.should_exit = True
    thread.join(timeout=15)
    broken = world.violations()
    engine.dispose()
    assert broken == [], broken


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


class Tab:
    """A browser context with one page; console errors and uncaught page errors are
    collected and must stay empty; confirm() dialogs are accepted."""

    def __init__(self, chromium: Any, world: World, viewport: dict[str, int]) -> None:
        self.world = world
        self.context = chromium.new_context(viewport=viewport, base_url=world.url)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: d.accept())

    def sign_in(self, key: str) -> None:
        self.context.clear_cookies()  # switching roles: a fresh browser session
        self.page.goto("/app/sign-in")
        self.page.fill("#api_key", key)
        self.page.click("button:has-text('Sign in')")
        self.page.wait_for_load_state()

    def flash(self) -> str:
        return str(self.page.inner_text(".flash"))

    def card(self, label: str) -> str:
        return str(self.page.inner_text(f".card:has(.card-label:text-is('{label}')) .card-value"))

    def close(self) -> None:
        self.context.close()
        # Chromium reports 403/404 page loads as console errors: those are the point.
        unexpected = [e for e in self.errors if "status of 40" not in e]
        assert unexpected == [], unexpected


@pytest.fixture
def tab(chromium: Any, world: World) -> Iterator[Tab]:
    opened = Tab(chromium, world, DESKTOP)
    yield opened
    opened.close()


def test_sign_in_form_is_keyboard_first_and_refuses_a_bad_key(tab: Tab) -> None:
    page = tab.page
    page.goto("/app/users/1/wallet")
    assert "/app/sign-in?next=" in page.url
    assert page.evaluate("document.activeElement.id") == "api_key"  # autofocus
    page.keyboard.type("mb_u_wrong")
    page.keyboard.press("Enter")
    page.wait_for_load_state()
    assert "not valid" in page.inner_text("#sign-in-error")
    assert page.get_attribute("#api_key", "aria-invalid") == "true"
    assert not [c for c in tab.context.cookies() if c["name"] == "mb_session"]


def test_user_wallet_buys_credits_with_the_manual_provider(tab: Tab) -> None:
    w, page = tab.world, tab.page
    tab.sign_in(w.alice_key)
    assert page.url.endswith(f"/app/users/{w.alice}/wallet")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    session_cookie = next(c for c in tab.context.cookies() if c["name"] == "mb_session")
    assert session_cookie["httpOnly"] and session_cookie["sameSite"] == "Strict"
    before = w.available(w.alice)
    assert tab.card("Available") == views.credits(before)
    assert page.locator("#holds-h + .table-wrap tbody tr").count() == 1  # the seeded hold
    assert "bonus" in page.inner_text("#grants-h + .table-wrap")

    page.click("button:has-text('Buy credits')")
    dialog = page.locator("#buy-dialog")
    assert dialog.is_visible()
    popular = dialog.locator(".package.highlighted")
    assert "Popular" in popular.inner_text() and "$0.0900 per credit" in popular.inner_text()
    dialog.locator("label.package:has-text('Starter') input").check()
    dialog.locator("button[type=submit]").click()
    page.wait_for_load_state()
    assert "pending: awaiting payment confirmation" in tab.flash()
    assert "Starter" in page.inner_text("#pending-purchases")
    with w.session() as s, s.begin():
        waiting = purchases.list_purchases(s, user_id=w.alice, status="pending")
    assert [(p.provider, p.credits_ucr) for p in waiting] == [("manual", 50 * CREDIT)]
    assert w.available(w.alice) == before  # nothing granted before the payment

    page.select_option("#f-code", "usage_charge")
    page.click("button:has-text('Filter')")
    page.wait_for_load_state()
    assert "code=usage_charge" in page.url
    kinds = page.locator("#history tbody tr td:nth-child(2)").all_inner_texts()
    assert len(kinds) == 6 and all(k.startswith("usage charge") for k in kinds)  # + the hold
    csv = tab.context.request.get(f"/app/users/{w.alice}/statement.csv")
    assert csv.ok and csv.text().startswith("transfer_id,")
    assert csv.headers["content-type"].startswith("text/csv")


def test_user_model_analytics_and_premium_access(tab: Tab) -> None:
    w, page = tab.world, tab.page
    tab.sign_in(w.alice_key)
    page.click("nav >> text=Model analytics")
    page.wait_for_selector("#category-chart.drawn")
    page.wait_for_selector("#activity-chart.drawn")
    assert page.locator("#category-chart .bars path").count() == 3  # three categories
    assert tab.card("Models available") == "5"
    assert "Gold Art" in page.inner_text("#buyable-models")
    before = w.available(w.alice)
    page.click("button[aria-label='Buy access to Gold Art']")
    page.wait_for_load_state()
    assert tab.flash() == "Access to Gold Art bought for 8.00 credits."
    assert page.locator("#buyable-models").count() == 0
    assert "1 purchased" in page.inner_text(".card:has-text('Models available')")
    gold = w.models["gold-art"]
    with w.session() as s, s.begin():
        assert access.accessible(s, w.alice, [gold]) == {gold}
    assert w.available(w.alice) == before - 8 * CREDIT

    tab.sign_in(w.carol_key)  # the creator: earnings from Alice's use of her model
    page.goto(f"/app/users/{w.carol}/models")
    owned = page.inner_text("#owned-models")
    assert "Carol Anime" in owned and "creator" in owned
    assert tab.card("Most profitable model") == "Carol Anime"


def test_admin_pricing_panel(tab: Tab) -> None:
    w, page = tab.world, tab.page
    tab.sign_in(w.admin_key)
    assert page.url.endswith("/app/admin/platform")  # the admin's landing page
    page.click("nav >> text=Model pricing")
    assert page.locator("#pricing tbody tr").count() == 5

    page.fill("#f-q", "sd")
    page.click("button:has-text('Filter')")
    page.wait_for_load_state()
    assert page.locator("#pricing tbody tr").count() == 1
    page.click("button[aria-label='Edit SD Image']")
    assert page.input_value("#e-unit") == "3"
    page.fill("#e-unit", "4.5")
    page.click("#edit-dialog button:has-text('Save')")
    page.wait_for_load_state()
    assert "new price version 2" in tab.flash()
    assert "4.5 /unit" in page.inner_text("tr[data-slug='sd-image'] .price-cell")
    with w.session() as s, s.begin():
        sd = pricing.current_price(s, w.models["sd-image"])
    assert (sd.version, sd.source, sd.price_ucr.per_unit) == (2, "explicit", 4_500_000)

    # A new demand applies at the next recalculation: a new version from provider cost.
    page.goto("/app/admin/pricing")
    page.click("button[aria-label='Edit GPT-4o']")
    page.select_option("#e-demand", "high")
    page.click("#edit-dialog button:has-text('Save')")
    page.wait_for_load_state()
    assert "(price unchanged)" in tab.flash()
    page.check("tr[data-slug='gpt-4o'] input[name=model_id]")
    page.click("button:has-text('Recalculate selected')")
    page.wait_for_load_state()
    assert "1 new price version(s)" in tab.flash()
    with w.session() as s, s.begin():
        gpt = pricing.current_price(s, w.models["gpt-4o"])
    # $2.50 per 1M input tokens × 1.5 (MEDIUM) × 1.10 (high demand) × 100 credits per USD
    assert (gpt.version, gpt.price_ucr.input_per_mtok) == (2, Decimal(412_500_000))
    page.click("button:has-text('Recalculate all')")
    page.wait_for_load_state()
    assert "Recalculated 5 model(s): 0 new price version(s), 1 unchanged" in tab.flash()

    page.click("button:has-text('New model')")
    page.fill("#c-slug", "web-made")
    page.fill("#c-name", "Web Made")
    page.fill("#c-provider", "custom")
    page.fill("#c-category", "Anime")
    page.fill("#c-pin", "1")
    page.fill("#c-pout", "2.5")
    page.click("#create-dialog button:has-text('Create')")
    page.wait_for_load_state()
    assert "Model Web Made created with price version 1" in tab.flash()
    assert page.locator("tr[data-slug='web-made']").count() == 1
    page.click("button[aria-label='Deactivate Web Made']")
    page.wait_for_load_state()
    assert "Web Made deactivated." in tab.flash()
    with w.session() as s, s.begin():
        made = catalog.get_model(s, "web-made")
        price = pricing.current_price(s, made.id)
    assert not made.is_active
    assert price.price_ucr.output_per_mtok == 2_500_000


def test_admin_confirms_the_purchase_and_the_user_sees_the_credits(tab: Tab, chromium: Any) -> None:
    w, page = tab.world, tab.page
    with w.session() as s, s.begin():
        (pending,) = purchases.list_purchases(s, user_id=w.alice, status="pending")
    before = w.available(w.alice)
    tab.sign_in(w.admin_key)
    page.click("nav >> text=Purchases")
    _shoot(tab, "admin-purchases-pending", "desktop")
    page.click(f"button[aria-label='Confirm purchase {pending.id}']")
    page.wait_for_load_state()
    assert tab.flash() == (
        f"Purchase #{pending.id} confirmed: 50.00 credits granted to user {w.alice}."
    )
    assert page.locator(f"tr[data-purchase-id='{pending.id}']").count() == 0
    with w.session() as s, s.begin():
        assert purchases.get_purchase(s, pending.id).status == "completed"
    after = w.available(w.alice)
    assert after == before + 50 * CREDIT
    assert w.violations() == []

    alice = Tab(chromium, w, DESKTOP)
    try:
        alice.sign_in(w.alice_key)
        assert alice.card("Available") == views.credits(after)
        assert alice.page.locator("#pending-purchases").count() == 0
        assert "purchase" in alice.page.inner_text("#history tbody tr:first-child")
    finally:
        alice.close()


def test_creator_earnings_by_period_and_model(tab: Tab) -> None:
    w, page = tab.world, tab.page
    tab.sign_in(w.carol_key)
    page.click("nav >> text=Earnings")
    page.wait_for_selector("#earnings-chart.drawn")
    assert page.url.endswith(f"/app/users/{w.carol}/earnings")
    shown = []
    for period, label in (
        ("7d", "7 days"),
        ("30d", "30 days"),
        ("90d", "90 days"),
        ("365d", "365 days"),
    ):
        page.click(f".segmented >> text={label}")
        page.wait_for_selector("#earnings-chart.drawn")
        assert f"period={period}" in page.url
        assert page.get_attribute(".segmented [aria-current=page]", "href").endswith(period)
        found = w.creator(period)
        assert tab.card("Earnings") == views.credits(found.net_earnings_ucr)
        assert tab.card("Uses") == f"{found.uses:,}"
        assert tab.card("Active models") == "2"
        assert tab.card("Average per model") == views.credits(found.average_per_model_ucr)
        assert page.locator("#earning-models tbody tr").count() == 2
        shown.append(found.net_earnings_ucr)
    # Dave's uses 2 and 5 days ago, then 20, 60 and 200 days ago: every period adds some.
    assert shown == sorted(shown) and len(set(shown)) == 4, shown

    ghibli = w.models["carol-ghibli"]
    page.select_option("#f-model", str(ghibli))
    page.click("button:has-text('Show')")
    page.wait_for_selector("#earnings-chart.drawn")
    assert f"model={ghibli}" in page.url and "period=365d" in page.url
    only = w.creator("365d", ghibli)
    assert 0 < only.net_earnings_ucr < shown[-1]
    assert tab.card("Earnings") == views.credits(only.net_earnings_ucr)
    assert tab.card("Active models") == "1" and tab.card("Uses") == "3"
    assert page.locator("#earning-models tbody tr").count() == 1
    page.click(".segmented >> text=30 days")  # the model filter stays
    assert f"model={ghibli}" in page.url
    assert tab.card("Earnings") == views.credits(w.creator("30d", ghibli).net_earnings_ucr)


def _request_payout(tab: Tab, credits: str) -> int:
    """Carol requests a payout on her earnings page; returns its id."""
    w, page = tab.world, tab.page
    page.goto(f"/app/users/{w.carol}/earnings")
    page.fill("#payout-amount", credits)
    page.click("button:has-text('Request payout')")
    page.wait_for_load_state()
    assert "requested — pending" in tab.flash()
    latest = page.locator("#payout-history tbody tr").first
    assert "pending" in latest.inner_text()
    return int(str(latest.get_attribute("data-payout-id")))


def test_payout_requested_completed_and_failed(tab: Tab, chromium: Any) -> None:
    w, page = tab.world, tab.page
    tab.sign_in(w.carol_key)
    before = w.payable(w.carol)
    assert before > 15 * CREDIT
    payout_id = _request_payout(tab, "10")
    assert tab.flash() == (
        f"Payout #{payout_id} of 10.00 credits requested — pending: an admin pays it out."
    )
    assert page.inner_text("#payout-available") == views.credits(before - 10 * CREDIT)
    assert page.inner_text("#payout-pending") == "10.00"
    assert w.payable(w.carol) == before - 10 * CREDIT

    admin = Tab(chromium, w, DESKTOP)
    try:
        admin.sign_in(w.admin_key)
        admin.page.click("nav >> text=Payouts")
        first = admin.page.locator("#payouts tbody tr").first
        assert first.get_attribute("data-payout-id") == str(payout_id)
        assert "≈ $0.10" in first.inner_text()  # 10 credits at 100 credits per USD
        paid_before = w.world_payouts()
        admin.page.click(f"button[aria-label='Complete payout {payout_id}']")
        assert admin.page.locator("#complete-dialog").is_visible()
        admin.page.fill("#complete-reference", "BANK-2024-001")
        admin.page.click("#complete-dialog button:has-text('Mark paid')")
        admin.page.wait_for_load_state()
        assert admin.flash() == (
            f"Payout #{payout_id} completed: 10.00 credits ($0.10) paid to user {w.carol},"
            " reference BANK-2024-001."
        )
        assert w.world_payouts() == paid_before + 10 * CREDIT
        row = admin.page.locator(f"tr[data-payout-id='{payout_id}']")
        assert row.get_attribute("data-status") == "completed"

        page.reload()
        row = page.locator(f"#payout-history tr[data-payout-id='{payout_id}']")
        assert "completed" in row.inner_text() and "BANK-2024-001" in row.inner_text()
        assert row.locator("button").count() == 0  # no Cancel once resolved

        again = _request_payout(tab, "8")
        assert w.payable(w.carol) == before - 18 * CREDIT
        admin.page.reload()
        assert admin.page.locator("#payouts tbody tr").first.get_attribute("data-payout-id") == (
            str(again)
        )
        admin.page.click(f"button[aria-label='Fail payout {again}']")
        admin.page.fill("#fail-reason", "IBAN rejected by the bank")
        admin.page.click("#fail-dialog button:has-text('Mark failed')")
        admin.page.wait_for_load_state()
        assert f"Payout #{again} failed: 8.00 credits are back" in admin.flash()
        assert w.world_payouts() == paid_before + 10 * CREDIT
        w.payout_ids.extend([payout_id, again])
    finally:
        admin.close()
    assert w.payable(w.carol) == before - 10 * CREDIT  # the failed 8 credits are back
    page.reload()
    assert page.inner_text("#payout-available") == views.credits(before - 10 * CREDIT)
    row = page.locator(f"#payout-history tr[data-payout-id='{again}']")
    assert "failed" in row.inner_text() and "IBAN rejected by the bank" in row.inner_text()
    assert w.violations() == []


def test_admin_platform_page_shows_the_services_numbers(tab: Tab) -> None:
    w, page = tab.world, tab.page
    tab.sign_in(w.admin_key)
    for label, period in (("30 days", "30d"), ("365 days", "365d"), ("7 days", "7d")):
        page.click(f".segmented >> text={label}")
        page.wait_for_selector("#money-chart.drawn")
        page.wait_for_selector("#uses-chart.drawn")
        with w.session() as s, s.begin():
            found = dashboards.admin_analytics(s, period)
        t = found.totals
        assert tab.card("Revenue") == views.credits(t.net_revenue_ucr)
        assert tab.card("Provider cost") == views.usd(t.cost_uusd)
        assert tab.card("Margin") == views.credits(t.margin_ucr)
        assert tab.card("Creator earnings") == views.credits(t.net_earnings_ucr)
        assert tab.card("Earnings owed") == views.credits(found.earnings_owed_ucr)
        assert t.revenue_ucr > 0
        top = page.locator("#top-models tbody tr").first.get_attribute("data-model-id")
        assert top == str(found.models[0].model_id)
    statuses = page.locator("#payouts-by-status tbody tr")
    assert [statuses.nth(i).get_attribute("data-status") for i in range(statuses.count())] == [
        "completed",
        "failed",
    ]
    assert "Carol" in page.inner_text("#top-creators tbody tr:first-child")
    assert page.locator("#recognition tr[data-source='purchased']").count() == 1


def test_direct_urls_to_other_users_and_admin_pages_are_refused(tab: Tab) -> None:
    w, page = tab.world, tab.page
    tab.sign_in(w.alice_key)
    for url, status in (
        (f"/app/users/{w.carol}/wallet", 404),
        (f"/app/users/{w.carol}/models", 404),
        (f"/app/users/{w.carol}/earnings", 404),
        ("/app/admin/pricing", 403),
        ("/app/admin/purchases", 403),
        ("/app/admin/payouts", 403),
        ("/app/admin/platform", 403),
    ):
        response = page.goto(url)
        assert response is not None and response.status == status, url
        assert str(status) in page.inner_text("h1")
        assert "carol" not in page.content().lower()


RESIZE_CHARTS = (
    "() => Promise.all([...document.querySelectorAll('[data-plotly].drawn')]"
    ".map((el) => window.Plotly.Plots.resize(el)))"
)


def _shoot(tab: Tab, name: str, size: str) -> None:
    """Screenshot the page at ``size`` (the viewport is already that size)."""
    page = tab.page
    if page.locator("[data-plotly]").count():
        page.wait_for_selector("[data-plotly].drawn")
        page.evaluate(RESIZE_CHARTS)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}-{size}.png"), full_page=True)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name} scrolls sideways by {overflow}px at {size} width"


def _shoot_both(tab: Tab, name: str) -> None:
    """Screenshots at phone and desktop width (the page ends at desktop width)."""
    for size, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        tab.page.set_viewport_size(viewport)
        _shoot(tab, name, size)


def test_screenshots_of_every_page(chromium: Any, world: World) -> None:
    w = world
    tab = Tab(chromium, w, DESKTOP)
    try:
        page = tab.page
        page.goto("/app/sign-in")
        _shoot_both(tab, "sign-in")
        tab.sign_in(w.alice_key)
        _shoot_both(tab, "user-wallet")
        page.click("button:has-text('Buy credits')")
        _shoot_both(tab, "user-wallet-buy-dialog")
        page.keyboard.press("Escape")
        page.goto(f"/app/users/{w.alice}/models")
        _shoot_both(tab, "user-models")
        page.goto(f"/app/users/{w.carol}/wallet")
        _shoot_both(tab, "not-found")
        tab.sign_in(w.carol_key)
        assert "Low balance" in page.inner_text("[role=alert]")
        _shoot_both(tab, "creator-wallet-low-balance")
        page.goto(f"/app/users/{w.carol}/models")
        _shoot_both(tab, "creator-models")
        with w.session() as s, s.begin():  # one pending payout: the Cancel / Complete buttons
            pending = payouts.request(s, w.carol, 5 * CREDIT)
        page.goto(f"/app/users/{w.carol}/earnings?period=365d")
        _shoot_both(tab, "creator-earnings")
        page.goto(f"/app/users/{w.carol}/earnings?period=7d&model={w.models['carol-ghibli']}")
        _shoot_both(tab, "creator-earnings-one-model")
        tab.sign_in(w.admin_key)
        _shoot_both(tab, "admin-platform")
        page.goto("/app/admin/platform?period=365d")
        _shoot_both(tab, "admin-platform-365d")
        page.goto("/app/admin/payouts")
        _shoot_both(tab, "admin-payouts")
        page.click(f"button[aria-label='Complete payout {pending.id}']")
        _shoot_both(tab, "admin-payouts-complete-dialog")
        page.keyboard.press("Escape")
        page.click(f"button[aria-label='Fail payout {pending.id}']")
        _shoot_both(tab, "admin-payouts-fail-dialog")
        page.keyboard.press("Escape")
        page.goto("/app/admin/pricing")
        _shoot_both(tab, "admin-pricing")
        page.click("button[aria-label='Edit GPT-4o']")
        _shoot_both(tab, "admin-pricing-edit-dialog")
        page.keyboard.press("Escape")
        page.goto("/app/admin/purchases?status=all")
        _shoot_both(tab, "admin-purchases")
    finally:
        tab.close()


POOL_KEY = "sk-browser-pool-key-0123456789-a1b2"


def test_pool_page_deposits_a_key_and_withdraws_it(tab: Tab) -> None:
    """The depositor's pool page in a browser: the nav link, the deposit form against a
    real fake upstream (credited 90 % of the pool part), the key never in the page, the
    withdrawal's confirmation, and no sideways scrolling at phone width."""
    w, page = tab.world, tab.page
    before = w.available(w.alice)
    tab.sign_in(w.alice_key)
    page.click("nav >> text=Pool")
    assert page.url.endswith(f"/app/users/{w.alice}/pool")
    with serving(
        create_fake(FakeUpstreamConfig(api_keys=frozenset({POOL_KEY}))), lifespan="off"
    ) as url:
        page.fill("#d-provider", "fake")
        page.fill("#d-url", f"{url}/v1")
        page.fill("#d-key", POOL_KEY)
        page.fill("#d-quota", "5")
        page.fill("#d-market", "1")
        page.fill("#d-model-0", "gpt-4o")
        page.fill("#d-up-0", "gpt-4o-mini")
        page.click("#deposit-form button[type=submit]")
        page.wait_for_load_state()
    assert "is active: 360.00 credits were added" in tab.flash()  # 90 % of $4 × 100
    row = page.locator("#resources tbody tr").first
    assert row.get_attribute("data-status") == "active"
    assert POOL_KEY not in page.content()
    assert w.available(w.alice) == before + 360 * CREDIT
    _shoot_both(tab, "user-pool")
    row.locator("button:has-text('Withdraw')").click()  # confirm() is accepted by the tab
    page.wait_for_load_state()
    assert "withdrawn: 360.00 credits" in tab.flash()
    assert page.locator("#resources tbody tr").first.get_attribute("data-status") == "withdrawn"
    assert w.available(w.alice) == before and w.violations() == []
