"""Response bodies of the modelbank API as the client returns them (Pydantic models).

Amounts: ``*_ucr`` integers in micro-credits (1 credit = 1,000,000 µcr) with a display string
beside them; provider costs ``*_uusd`` in micro-dollars; times are aware UTC datetimes.
Fields the server adds later are kept (``extra="allow"``), so a newer server does not break
an older client. tests/client/test_models_match_openapi.py checks every field here against
the server's OpenAPI document.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal, NotRequired, Required, TypedDict

from pydantic import BaseModel, ConfigDict


class Out(BaseModel):
    """Base of every response model: immutable, unknown fields kept."""

    model_config = ConfigDict(extra="allow", frozen=True)


# --- users and keys -------------------------------------------------------------------


class User(Out):
    id: int
    external_id: str
    display_name: str
    created_at: datetime


class UserPage(Out):
    items: list[User]
    next_cursor: str | None


class Key(Out):
    """A new API key: ``key`` is the secret, shown once."""

    id: int
    role: str
    user_id: int | None
    name: str
    prefix: str
    key: str
    created_at: datetime
    limit_ucr: int | None = None
    limit_period: str | None = None


class KeyLimit(Out):
    """A key's spend limit now: µcr spent in the current period, reserved by pending holds,
    left, and when the period resets (None: never)."""

    limit_ucr: int
    limit: str
    period: str
    spent_ucr: int
    spent: str
    reserved_ucr: int
    left_ucr: int
    left: str
    resets_at: datetime | None


class KeyInfo(Out):
    """A key as listed (never its secret); ``limit`` None: no spend limit."""

    id: int
    role: str
    user_id: int | None
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    limit: KeyLimit | None


class KeyList(Out):
    items: list[KeyInfo]


# --- wallets --------------------------------------------------------------------------


class Wallet(Out):
    user_id: int
    balance_ucr: int
    balance: str
    pending_ucr: int
    pending: str
    available_ucr: int
    available: str
    earnings_ucr: int
    earnings: str


class GrantResult(Out):
    """What an admin grant did: the transfer and the balance after it."""

    transfer_id: int
    user_id: int
    amount_ucr: int
    amount: str
    source: str
    expires_at: datetime | None
    balance_ucr: int
    balance: str


class Grant(Out):
    """One grant of credits in a wallet (what burns first, what is left)."""

    id: int
    user_id: int
    source: str
    amount_ucr: int
    remaining_ucr: int
    remaining: str
    cost_basis_uusd: int
    priority: int
    expires_at: datetime | None
    expired: bool
    transfer_id: int | None
    purchase_id: int | None
    created_at: datetime


class GrantPage(Out):
    items: list[Grant]
    next_cursor: str | None


class Transfer(Out):
    id: int
    code: str
    kind: str
    direction: Literal["in", "out"]
    amount_ucr: int
    amount: str
    debit_account_id: int
    credit_account_id: int
    pending_id: int | None
    reverses_id: int | None
    ref_type: str | None
    ref_id: int | None
    created_at: datetime
    metadata: dict[str, Any] | None


class TransferPage(Out):
    items: list[Transfer]
    next_cursor: str | None


class Package(Out):
    id: int
    slug: str
    name: str
    credits_ucr: int
    credits: str
    price_uusd: int
    price: str
    currency: str
    price_per_credit_uusd: int
    price_per_credit: str
    highlighted: bool
    is_active: bool
    sort_order: int


class PackageList(Out):
    items: list[Package]


class Purchase(Out):
    id: int
    user_id: int
    package_id: int
    provider: str
    status: str
    credits_ucr: int
    credits: str
    price_uusd: int
    price: str
    currency: str
    checkout_url: str | None
    external_id: str | None
    grant_id: int | None
    refunded_ucr: int
    refunded_uusd: int
    created_at: datetime
    completed_at: datetime | None


class PurchasePage(Out):
    items: list[Purchase]
    next_cursor: str | None


class PurchaseRefund(Out):
    purchase: Purchase
    reversed_ucr: int
    reversed: str


class Hold(Out):
    id: int
    user_id: int
    model_id: int | None
    amount_ucr: int
    amount: str
    status: Literal["pending", "posted", "voided"]
    captured_ucr: int
    usage_id: int | None
    reason: str | None
    created_at: datetime | None
    expires_at: datetime | None
    resolved_at: datetime | None


class HoldPage(Out):
    items: list[Hold]
    next_cursor: str | None


class Capture(Out):
    hold: Hold
    usage_id: int | None
    charge_ucr: int
    charge: str
    earnings_ucr: int
    balance_ucr: int | None


class UsageRefund(Out):
    id: int
    usage_id: int
    user_id: int
    model_id: int
    amount_ucr: int
    amount: str
    refunded_total_ucr: int
    charge_ucr: int
    earnings_reversed_ucr: int
    earnings_owed_ucr: int
    reason: str | None
    created_at: datetime


class LowBalance(Out):
    user_id: int
    threshold_ucr: int
    threshold: str
    custom: bool
    available_ucr: int
    alerted: bool
    alerted_at: datetime | None


# --- models ---------------------------------------------------------------------------


class Price(Out):
    """The price version in force; rates are exact decimal strings."""

    version: int
    effective_from: datetime
    source: str
    input_ucr_per_mtok: str
    output_ucr_per_mtok: str
    cache_read_ucr_per_mtok: str | None
    per_request_ucr: str
    per_unit_ucr: str
    input_uusd_per_mtok: str
    output_uusd_per_mtok: str
    per_request_uusd: str
    per_unit_uusd: str


class EarningsRule(Out):
    version: int
    per_use_ucr: int
    per_token_ucr: str
    share_bps: int
    popularity_tiers: list[tuple[int, str]]
    type_multipliers: dict[str, str]
    other_multiplier: str


class Model(Out):
    id: int
    slug: str
    name: str
    provider: str
    provider_model_ref: str
    mode: str
    category: str
    tier: str
    demand: str
    creator_id: int | None
    is_active: bool
    is_premium: bool
    access_price_ucr: int
    access_price: str
    character_id: str | None
    price: Price | None
    purchased: bool
    owned: bool
    earnings_rule: EarningsRule | None


class ModelPage(Out):
    items: list[Model]
    next_cursor: str | None


class Access(Out):
    """Bought access to a premium model."""

    user_id: int
    model_id: int
    price_ucr: int
    price: str
    transfer_id: int | None
    purchased_at: datetime
    balance_ucr: int
    balance: str


# --- usage ----------------------------------------------------------------------------


class Earning(Out):
    user_id: int
    amount_ucr: int


class Usage(Out):
    """One charged usage event. ``replayed``: the answer to a retry (the server's
    ``Idempotency-Hit: true``): nothing was charged again."""

    usage_id: int
    model_id: int
    charge_ucr: int
    charge: str
    cost_uusd: int
    cost: str
    balance_ucr: int
    balance: str
    earnings: list[Earning]
    price_version_id: int | None
    replayed: bool = False


class BatchError(Out):
    code: str
    detail: str


class BatchItem(Out):
    idempotency_key: str
    status: Literal["charged", "replayed", "rejected"]
    usage_id: int | None
    charge_ucr: int
    balance_ucr: int | None
    earnings: list[Earning]
    error: BatchError | None


class Batch(Out):
    charged: int
    replayed: int
    rejected: int
    results: list[BatchItem]


class BatchEvent(TypedDict, total=False):
    """One event of :meth:`charge_batch`: ``user_id`` and exactly one of ``model`` (id or
    slug) and ``character_id``; ``idempotency_key`` is generated (uuid4) when absent."""

    user_id: Required[int]
    model: NotRequired[int | str]
    character_id: NotRequired[str]
    idempotency_key: NotRequired[str]
    usage_type: NotRequired[str]
    input_tokens: NotRequired[int]
    output_tokens: NotRequired[int]
    cached_input_tokens: NotRequired[int]
    units: NotRequired[int]
    occurred_at: NotRequired[str]
    metadata: NotRequired[dict[str, Any]]


# --- analytics ------------------------------------------------------------------------


class ModelEarning(Out):
    model_id: int
    name: str
    uses: int
    tokens: int
    earnings_ucr: int
    earnings: str
    last_used_at: datetime | None


class Earnings(Out):
    user_id: int
    period: str
    total_ucr: int
    total: str
    total_tokens: int
    total_uses: int
    models: list[ModelEarning]


class CreatorAnalytics(Out):
    """A creator's dashboard figures for a period; the nested series as the server sends
    them (see the OpenAPI document's ``CreatorAnalyticsOut``)."""

    user_id: int
    period: str
    start: date
    end: date
    model_id: int | None
    earnings_ucr: int
    reversed_ucr: int
    net_earnings_ucr: int
    net_earnings: str
    active_models: int
    uses: int
    tokens: int
    average_per_model_ucr: int
    top_models: list[dict[str, Any]]
    daily: list[dict[str, Any]]
    payouts: list[dict[str, Any]]
    pending_payouts_ucr: int
    earnings_balance_ucr: int
    owed_ucr: int
    available_ucr: int
    available: str


class UserAnalytics(Out):
    """A user's spending and ownership figures (``UserAnalyticsOut``)."""

    user_id: int
    models_available: int
    models_purchased: int
    models_owned: int
    credits_spent_ucr: int
    credits_spent: str
    usage_spent_ucr: int
    access_spent_ucr: int
    earnings_from_owned_ucr: int
    earnings_from_owned: str
    most_profitable_model: ModelEarning | None
    by_category: list[dict[str, Any]]
    activity_30d: list[dict[str, Any]]
    period: str
    start: date
    end: date
    uses: int
    tokens: int
    spent_ucr: int
    refunded_ucr: int
    net_spent_ucr: int
    net_spent: str
    spend_by_model: list[dict[str, Any]]
    spend_by_category: list[dict[str, Any]]
    spend_by_usage_type: list[dict[str, Any]]
    daily: list[dict[str, Any]]
    portfolio: dict[str, Any]


class AdminAnalytics(Out):
    """Platform figures for a period (admin; ``AdminAnalyticsOut``)."""

    period: str
    start: date
    end: date
    credits_per_usd: str
    totals: dict[str, Any]
    models: list[dict[str, Any]]
    categories: list[dict[str, Any]]
    daily: list[dict[str, Any]]
    top_creators: list[dict[str, Any]]
    payouts: list[dict[str, Any]]
    earnings_owed_ucr: int
    earnings_owed: str
    pending_payouts_ucr: int


class Recognition(Out):
    purchased_ucr: int
    purchased: str
    purchased_basis_uusd: int
    purchased_basis: str
    bonus_ucr: int
    bonus: str
    by_source_ucr: dict[str, int]


class Stats(Out):
    """Platform totals (admin)."""

    usage_revenue_ucr: int
    usage_revenue: str
    access_revenue_ucr: int
    provider_cost_uusd: int
    provider_cost: str
    margin_ucr: int
    margin: str
    creator_earnings_ucr: int
    earnings_owed_ucr: int
    wallet_balances_ucr: int
    users: int
    active_models: int
    usage_events: int
    revenue_recognition: Recognition
    usage_refunded_ucr: int
