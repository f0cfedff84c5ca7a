"""HTTP bodies of the resource pool routes (DESIGN §9) and their presenters. A provider key
goes in (``api_key``) and never comes out: responses show ``key_mask`` and
``key_fingerprint`` only. Quotas ``*_uusd`` in µUSD of provider spend; credits ``*_ucr`` in
µcr with a display string."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictInt

from modelbank.api.schemas import NO_NUL, Strict
from modelbank.money import format_credits, format_usd
from modelbank.pool.deposits import MAX_KEY_LENGTH, MAX_MODELS, MAX_QUOTA_UUSD, MAX_URL_LENGTH
from modelbank.pool.panel import PoolSummary, ResourceLine, Served
from modelbank.pool.resources import ResourceInfo
from modelbank.pool.routelog import RouteLogRow

Status = Literal["pending", "active", "depleted", "suspended", "withdrawn", "failed"]
QuotaUusd = Annotated[
    StrictInt, Field(gt=0, le=MAX_QUOTA_UUSD, description="µUSD of provider spend (> 0)")
]


class ServedModelIn(Strict):
    model: StrictInt | str = Field(description="catalog model id or slug")
    upstream_model: str = Field(
        min_length=1, max_length=200, pattern=NO_NUL, description="the upstream's model name"
    )


class ResourceIn(Strict):
    provider: str = Field(
        min_length=1, max_length=64, pattern=NO_NUL, description="e.g. openai, groq, vllm"
    )
    base_url: str = Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        pattern=r"^https?://[^\s\x00]+$",
        description="the OpenAI-compatible API root, e.g. https://api.openai.com/v1"
        " (no credentials, query or fragment)",
    )
    api_key: str = Field(
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        pattern=r"^[\x21-\x7e]+$",
        description="the provider key (printable ASCII); stored encrypted, never shown again",
    )
    models: list[ServedModelIn] = Field(min_length=1, max_length=MAX_MODELS)
    quota_uusd: QuotaUusd
    market_quota_uusd: StrictInt = Field(
        default=0,
        ge=0,
        le=MAX_QUOTA_UUSD,
        description="the part of quota_uusd sold through marketplace listings; never credited",
    )


class ServedModelOut(BaseModel):
    model_id: int
    model: str = Field(description="the catalog model's slug")
    upstream_model: str


class ResourceOut(BaseModel):
    id: int
    owner_id: int | None = Field(description="the depositor; null for a platform resource")
    provider: str
    base_url: str
    status: Status
    status_reason: str | None = Field(description="why it is pending, failed or suspended")
    key_mask: str = Field(description="e.g. sk-…7f3a")
    key_fingerprint: str = Field(description="hex SHA-256 of the key")
    quota_uusd: int
    market_quota_uusd: int
    pool_quota_uusd: int = Field(description="quota − market part: what was credited")
    consumed_uusd: int = Field(description="provider spend through the pool part")
    quota: str
    consumed: str
    deposit_credit_ucr: int = Field(description="credited to the depositor (deposit grant)")
    deposit_credit: str
    fee_ucr: int = Field(description="kept by the platform at deposit")
    clawed_back_ucr: int = Field(description="deposit credit reversed at withdrawal/failure")
    moved_credit_ucr: int = Field(
        description="deposit credit reversed when pool quota moved to the market part"
    )
    models: list[ServedModelOut]
    created_at: datetime
    updated_at: datetime
    activated_at: datetime | None
    ended_at: datetime | None


def resource_out(r: ResourceInfo) -> ResourceOut:
    return ResourceOut(
        id=r.id,
        owner_id=r.owner_id,
        provider=r.provider,
        base_url=r.base_url,
        status=r.status,
        status_reason=r.status_reason,
        key_mask=r.key_mask,
        key_fingerprint=r.key_fingerprint,
        quota_uusd=r.quota_uusd,
        market_quota_uusd=r.market_quota_uusd,
        pool_quota_uusd=r.pool_quota_uusd,
        consumed_uusd=r.consumed_uusd,
        quota=format_usd(r.quota_uusd, 6),
        consumed=format_usd(r.consumed_uusd, 6),
        deposit_credit_ucr=r.deposit_credit_ucr,
        deposit_credit=format_credits(r.deposit_credit_ucr),
        fee_ucr=r.fee_ucr,
        clawed_back_ucr=r.clawed_back_ucr,
        moved_credit_ucr=r.moved_credit_ucr,
        models=[
            ServedModelOut(model_id=m.model_id, model=m.slug, upstream_model=m.upstream_model)
            for m in r.models
        ],
        created_at=r.created_at,
        updated_at=r.updated_at,
        activated_at=r.activated_at,
        ended_at=r.ended_at,
    )


class ResourcePage(BaseModel):
    items: list[ResourceOut]
    next_cursor: str | None


class ServedOut(BaseModel):
    requests: int
    charge_ucr: int = Field(description="what users paid for usage the pool served")
    cost_uusd: int = Field(description="provider cost of that usage")
    spread_ucr: int = Field(description="charge − cost × credits_per_usd (half-even)")
    spread: str


def served_out(s: Served) -> ServedOut:
    return ServedOut(
        requests=s.requests,
        charge_ucr=s.charge_ucr,
        cost_uusd=s.cost_uusd,
        spread_ucr=s.spread_ucr,
        spread=format_credits(s.spread_ucr),
    )


class ResourceLineOut(BaseModel):
    resource: ResourceOut
    served: ServedOut


def _line(line: ResourceLine) -> ResourceLineOut:
    return ResourceLineOut(resource=resource_out(line.resource), served=served_out(line.served))


class PoolPanelOut(BaseModel):
    by_status: dict[str, int] = Field(description="resources per status")
    quota_uusd: int
    market_quota_uusd: int
    consumed_uusd: int
    deposit_credit_ucr: int
    fee_ucr: int
    fees: str
    clawed_back_ucr: int
    debts_open_ucr: int = Field(description="clawbacks still owed by depositors")
    served: ServedOut = Field(description="usage served by pool resources, and the spread")
    resources: list[ResourceLineOut]
    next_cursor: str | None


def panel_out(p: PoolSummary, next_cursor: str | None) -> PoolPanelOut:
    return PoolPanelOut(
        by_status=p.by_status,
        quota_uusd=p.quota_uusd,
        market_quota_uusd=p.market_quota_uusd,
        consumed_uusd=p.consumed_uusd,
        deposit_credit_ucr=p.deposit_credit_ucr,
        fee_ucr=p.fee_ucr,
        fees=format_credits(p.fee_ucr),
        clawed_back_ucr=p.clawed_back_ucr,
        debts_open_ucr=p.debts_open_ucr,
        served=served_out(p.served),
        resources=[_line(line) for line in p.resources],
        next_cursor=next_cursor,
    )


class RouteLogOut(BaseModel):
    id: int
    request_id: str
    user_id: int | None = Field(description="who asked; hidden from depositors unless it was them")
    model_id: int | None
    endpoint: str
    stream: bool
    outcome: str
    resource_id: int | None = Field(description="the resource that served it")
    candidates: list[dict[str, Any]] = Field(
        description="the ranked candidates with their scores (a depositor sees its own)"
    )
    attempts: list[dict[str, Any]] = Field(
        description="each attempt's resource, outcome, status and timings (a depositor sees"
        " its own)"
    )
    hold_id: int | None
    usage_id: int | None
    charge_ucr: int | None = Field(description="what the caller paid; hidden from depositors")
    cost_uusd: int = Field(description="provider cost booked against the quota")
    latency_ms: float | None
    created_at: datetime


def route_log_out(
    row: RouteLogRow, *, resource_id: int, full: bool, viewer: int | None
) -> RouteLogOut:
    """A route log row as ``viewer`` may see it: ``full`` (admin, service) shows it all; a
    depositor sees its own resource's candidates and attempts and none of another user's
    identity, hold, usage or charge. Prompts and keys are never stored at all."""
    mine = full or (viewer is not None and row.user_id == viewer)

    def own(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return items if full else [i for i in items if i.get("resource_id") == resource_id]

    return RouteLogOut(
        id=row.id,
        request_id=row.request_id,
        user_id=row.user_id if mine else None,
        model_id=row.model_id,
        endpoint=row.endpoint,
        stream=row.stream,
        outcome=row.outcome,
        resource_id=row.resource_id,
        candidates=own(row.candidates),
        attempts=own(row.attempts),
        hold_id=row.hold_id if mine else None,
        usage_id=row.usage_id if mine else None,
        charge_ucr=row.charge_ucr if mine else None,
        cost_uusd=row.cost_uusd,
        latency_ms=row.latency_ms,
        created_at=row.created_at,
    )


class RouteLogPage(BaseModel):
    items: list[RouteLogOut]
    next_cursor: str | None
