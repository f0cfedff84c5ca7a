"""The gateway demo's report: what the callers saw, what the route logs, usage rows, resources
and shared health recorded, the depositors' earnings, the platform's spread and fees, and the
ledger check (DESIGN §3, §9), as Rich tables or one JSON object.

Money stays integer: µcr for credits, µUSD for provider cost and quotas. The spread is the
pool panel's: what users paid − provider cost × ``credits_per_usd``, rounded once half-even
(:func:`modelbank.pool.panel.served_by`).
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from modelbank.db.engine import session_factory, transaction
from modelbank.ledger import invariants
from modelbank.ledger import service as ledger
from modelbank.metering.models import usage_events_table as usage
from modelbank.money import format_credits, format_usd
from modelbank.pool import invariants as pool_invariants
from modelbank.pool import service as pool
from modelbank.pool.health import health_store
from modelbank.pool.models import route_logs_table as route_logs
from modelbank.pool.panel import served_by
from modelbank.users import service as users
from modelbank.wallets import grants

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from modelbank.config import Settings
    from modelbank.demo_gateway.servers import UpstreamRole
    from modelbank.pool.health import Health
    from modelbank.pool.panel import Served
    from modelbank.pool.resources import ResourceInfo


@dataclass(frozen=True, slots=True)
class Call:
    """One request as the ``openai`` client saw it: ``outcome`` served / refused / failed,
    ``seconds`` end to end (a stream: until its last chunk), ``status`` the HTTP status (None
    when the connection failed)."""

    outcome: str
    stream: bool
    seconds: float
    status: int | None


@dataclass(frozen=True, slots=True)
class DemoResource:
    """A resource the demo deposited: its id, the upstream its key opens, its depositor
    (None: the platform's own key)."""

    id: int
    upstream: str
    depositor: str | None


@dataclass
class CastInfo:
    """The demo's users (name → id) and resources, in the order they were made."""

    users: dict[str, int] = field(default_factory=dict)
    resources: list[DemoResource] = field(default_factory=list)


@dataclass
class ResourceLine:
    """One resource's figures: requests it served (route logs) and its share of all served,
    attempts and failed attempts on it, its breaker and health, quota and deposit figures
    (µUSD, µcr), and the usage it served (charge µcr, provider cost µUSD, spread µcr)."""

    id: int
    upstream: str
    owner: str
    served: int
    share: float
    attempts: int
    failed_attempts: int
    breaker: str
    success_rate: float
    latency_ms: float | None
    pool_quota_uusd: int
    consumed_uusd: int
    deposit_credit_ucr: int
    fee_ucr: int
    charge_ucr: int
    cost_uusd: int
    spread_ucr: int
    depositor_wallet_ucr: int | None


@dataclass
class GatewayReport:
    """Everything the demo prints (see the module docstring); ``served + failed + refused ==
    events``; ``route_outcomes`` counts the route logs' outcomes; ``failovers`` the requests
    that took more than one attempt (``failovers_served``: and were served)."""

    events: int
    served: int
    failed: int
    refused: int
    streamed: int
    elapsed_s: float
    workers: int
    latency_p50_ms: float
    latency_p95_ms: float
    route_outcomes: dict[str, int]
    failovers: int
    failovers_served: int
    resources: list[ResourceLine]
    charged_ucr: int
    pool_charge_ucr: int
    pool_cost_uusd: int
    spread_ucr: int
    fees_ucr: int
    deposit_credit_ucr: int
    ledger_ok: bool
    ledger_violations: list[str]
    models: list[str]
    upstreams: dict[str, str]
    prompt_capped: int
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return asdict(self)


def _pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] * 1000 if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def collect(
    engine: Engine,
    settings: Settings,
    cast: CastInfo,
    calls: list[Call],
    *,
    elapsed_s: float,
    roles: tuple[UpstreamRole, ...],
    models: list[str],
    prompt_capped: int,
    workers: int,
) -> GatewayReport:
    """Read the run's figures from the database (route logs of the demo's users, the usage
    its resources served, the resources, their shared health) and check the ledger."""
    outcomes = Counter(c.outcome for c in calls)
    ids = [r.id for r in cast.resources]
    health = health_store(settings, engine).snapshot(ids)
    recorded = _read(engine, settings, cast, ids)
    routing = _Routing.of(recorded.logs)
    lines = _resource_lines(cast, recorded, routing, health)
    seconds = sorted(c.seconds for c in calls if c.outcome == "served")
    return GatewayReport(
        events=len(calls),
        served=outcomes["served"],
        failed=outcomes["failed"],
        refused=outcomes["refused"],
        streamed=sum(c.stream for c in calls),
        elapsed_s=elapsed_s,
        workers=workers,
        latency_p50_ms=_pct(seconds, 50),
        latency_p95_ms=_pct(seconds, 95),
        route_outcomes=dict(Counter(row[0] for row in recorded.logs)),
        failovers=routing.failovers,
        failovers_served=routing.failovers_served,
        resources=lines,
        charged_ucr=int(recorded.charged),
        pool_charge_ucr=sum(x.charge_ucr for x in lines),
        pool_cost_uusd=sum(x.cost_uusd for x in lines),
        spread_ucr=sum(x.spread_ucr for x in lines),
        fees_ucr=sum(x.fee_ucr for x in lines),
        deposit_credit_ucr=sum(x.deposit_credit_ucr for x in lines),
        ledger_ok=not recorded.violations,
        ledger_violations=recorded.violations,
        models=models,
        upstreams={role.name: role.behaviour for role in roles},
        prompt_capped=prompt_capped,
    )


@dataclass(slots=True)
class _Recorded:
    """What the database recorded of the run: the callers' route logs (outcome, resource,
    attempts), their total charge (µcr), usage served per resource, the resources, the
    depositors' wallet balances (µcr, by resource) and the invariant violations."""

    logs: list[Any]
    charged: int
    per_resource: dict[int, Served]
    infos: dict[int, ResourceInfo]
    wallets: dict[int, int]
    violations: list[str]


def _read(engine: Engine, settings: Settings, cast: CastInfo, ids: list[int]) -> _Recorded:
    """Read the run's rows and check the ledger, pool and grant invariants, in one
    transaction."""
    callers = list(cast.users.values())
    with transaction(session_factory(engine)) as session:
        conn = session.connection()
        logs = conn.execute(
            select(route_logs.c.outcome, route_logs.c.resource_id, route_logs.c.attempts).where(
                route_logs.c.user_id.in_(callers)
            )
        ).all()
        charged = conn.execute(
            select(func.coalesce(func.sum(usage.c.charge_ucr), 0)).where(
                usage.c.user_id.in_(callers)
            )
        ).scalar_one()
        per_resource = served_by(session, ids, settings.credits_per_usd)
        infos = {rid: pool.get_resource(session, rid) for rid in ids}
        wallets = {
            r.id: ledger.get_balance(
                session, users.get_user(session, cast.users[r.depositor]).wallet_account_id
            ).balance
            for r in cast.resources
            if r.depositor is not None
        }
        violations = [
            *map(str, invariants.check(session)),
            *map(str, grants.check(session)),
            *map(str, pool_invariants.check(session)),
        ]
    return _Recorded(list(logs), charged, per_resource, infos, wallets, violations)


@dataclass(slots=True)
class _Routing:
    """The route logs tallied: requests served, attempts and failed attempts per resource,
    and the requests that failed over (and of those, the ones served)."""

    served_on: Counter[int] = field(default_factory=Counter)
    attempts_on: Counter[int] = field(default_factory=Counter)
    failed_on: Counter[int] = field(default_factory=Counter)
    failovers: int = 0
    failovers_served: int = 0

    @classmethod
    def of(cls, logs: list[Any]) -> _Routing:
        tally = cls()
        for outcome, resource_id, attempts in logs:
            if outcome == "served" and resource_id is not None:
                tally.served_on[int(resource_id)] += 1
            for attempt in attempts or []:
                tally.attempts_on[int(attempt["resource_id"])] += 1
                tally.failed_on[int(attempt["resource_id"])] += attempt.get("kind") != "success"
            if len(attempts or []) > 1:
                tally.failovers += 1
                tally.failovers_served += outcome == "served"
        return tally


def _resource_lines(
    cast: CastInfo, recorded: _Recorded, routing: _Routing, health: dict[int, Health]
) -> list[ResourceLine]:
    """One line per resource of the cast: routing share, breaker, quota and money."""
    served_on = routing.served_on
    total_served = sum(served_on.values())
    lines = []
    for r in cast.resources:
        info, h, used = recorded.infos[r.id], health.get(r.id), recorded.per_resource.get(r.id)
        lines.append(
            ResourceLine(
                id=r.id,
                upstream=r.upstream,
                owner=r.depositor or "platform",
                served=served_on[r.id],
                share=served_on[r.id] / total_served if total_served else 0.0,
                attempts=routing.attempts_on[r.id],
                failed_attempts=routing.failed_on[r.id],
                breaker=h.breaker.state.value if h else "closed",
                success_rate=h.breaker.success_rate if h else 1.0,
                latency_ms=h.latency_ms if h else None,
                pool_quota_uusd=info.pool_quota_uusd,
                consumed_uusd=info.consumed_uusd,
                deposit_credit_ucr=info.deposit_credit_ucr,
                fee_ucr=info.fee_ucr,
                charge_ucr=used.charge_ucr if used else 0,
                cost_uusd=used.cost_uusd if used else 0,
                spread_ucr=used.spread_ucr if used else 0,
                depositor_wallet_ucr=recorded.wallets.get(r.id),
            )
        )
    return lines


def _summary(report: GatewayReport) -> Table:
    t = Table(title="gateway demo", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    rate = report.events / report.elapsed_s if report.elapsed_s else 0.0
    outcomes = ", ".join(f"{k} {v:,}" for k, v in sorted(report.route_outcomes.items()))
    rows = [
        ("requests", f"{report.events:,} ({report.streamed:,} streamed)"),
        ("served", f"{report.served:,}"),
        ("failed (every attempt)", f"{report.failed:,}"),
        ("refused (402, before any upstream call)", f"{report.refused:,}"),
        ("route log outcomes", outcomes),
        ("failovers (attempts > 1)", f"{report.failovers:,} ({report.failovers_served:,} served)"),
        ("wall time", f"{report.elapsed_s:.1f} s, {rate:.1f} requests/s, {report.workers} callers"),
        ("latency served p50 / p95",
         f"{report.latency_p50_ms:,.0f} / {report.latency_p95_ms:,.0f} ms"),
        ("total charged", format_credits(report.charged_ucr, 2)),
        ("provider cost of pool usage", format_usd(report.pool_cost_uusd, 4)),
        ("platform spread (charge − cost)", format_credits(report.spread_ucr, 2)),
        ("deposit fees (10 %)", format_credits(report.fees_ucr, 2)),
        ("deposit credit paid to depositors", format_credits(report.deposit_credit_ucr, 2)),
        ("ledger", "ok" if report.ledger_ok else "BROKEN"),
    ]  # fmt: skip
    for label, value in rows:
        t.add_row(label, value)
    return t


def _table(title: str, columns: list[str], left: set[str]) -> Table:
    """A report table that fits 80 columns: no vertical rules, one space of padding."""
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
              padding=(0, 1), collapse_padding=True)  # fmt: skip
    for name in columns:
        t.add_column(name, justify="left" if name in left else "right")
    return t


def _cr(amount_ucr: int) -> str:
    return format_credits(amount_ucr, 2).removesuffix(" cr")


def _resources(report: GatewayReport) -> Table:
    t = _table(
        "routing per resource",
        ["id", "upstream", "owner", "served", "share", "tries", "failed", "breaker",
         "ok", "latency"],
        {"upstream", "owner", "breaker"},
    )  # fmt: skip
    for r in report.resources:
        latency = "-" if r.latency_ms is None else f"{r.latency_ms:,.0f} ms"
        t.add_row(str(r.id), r.upstream, r.owner, f"{r.served:,}", f"{r.share:.1%}",
                  f"{r.attempts:,}", f"{r.failed_attempts:,}", r.breaker,
                  f"{r.success_rate:.0%}", latency)  # fmt: skip
    return t


def _money(report: GatewayReport) -> Table:
    t = _table(
        "money per resource (credits; quota and provider cost in USD)",
        ["id", "owner", "quota used", "paid", "cost", "spread", "deposit credit",
         "fee", "wallet"],
        {"owner"},
    )  # fmt: skip
    for r in report.resources:
        held = r.depositor_wallet_ucr
        t.add_row(str(r.id), r.owner,
                  f"{format_usd(r.consumed_uusd, 4)}/{format_usd(r.pool_quota_uusd, 0)}",
                  _cr(r.charge_ucr), format_usd(r.cost_uusd, 4), _cr(r.spread_ucr),
                  _cr(r.deposit_credit_ucr), _cr(r.fee_ucr),
                  "-" if held is None else _cr(held))  # fmt: skip
    return t


def emit_report(
    report: GatewayReport,
    *,
    as_json: bool,
    console: Console,
    err_console: Console,
    extra: dict[str, Any],
) -> None:
    """Print the report: one JSON object (``extra`` merged in) with ``as_json``, else Rich
    tables (summary, routing per resource, money per resource), notes and data credits."""
    if as_json:
        print(json.dumps({**extra, **report.as_dict()}, indent=2, default=str))
        return
    console.print(_summary(report))
    console.print(_resources(report))
    console.print(_money(report))
    for name, behaviour in report.upstreams.items():
        console.print(f"upstream {name}: {behaviour}", highlight=False)
    for line in report.notes:
        console.print(f"note: {line}", highlight=False, soft_wrap=True)
    for line in report.sources:
        console.print(f"data: {line}", highlight=False, soft_wrap=True)
    for violation in report.ledger_violations:
        err_console.print(f"[red]broken:[/] {violation}")
    if report.ledger_ok:
        console.print(
            "[green]ledger ok[/]: balanced, holds resolved once, grants sum to wallet balances,"
            " pool deposits accounted for (deposit credit = consumed share + clawed back"
            " + outstanding)"
        )
