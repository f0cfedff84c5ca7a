"""Earnings service: rules and beneficiaries per model, the terms a charge needs, and
recording earnings with the per-model aggregates (DESIGN §7)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from modelbank.audit import service as audit
from modelbank.db.base import utcnow
from modelbank.db.bulk import BulkInsert, db_timestamp
from modelbank.db.fast import FastSQL, Read
from modelbank.db.fast import connection as fast_connection
from modelbank.db.locks import lock_sequence
from modelbank.earnings.errors import InvalidRule, InvalidSplit
from modelbank.earnings.models import beneficiaries_table as beneficiaries
from modelbank.earnings.models import earnings_rules_table as rules
from modelbank.earnings.models import earnings_table as earnings
from modelbank.earnings.models import model_stats_table as stats
from modelbank.earnings.rules import BPS, EarningsRule
from modelbank.money import parse_decimal
from modelbank.platform import service as platform

OTHER_KEY = "*"
"""Key of ``other_multiplier`` in the stored ``type_multipliers`` JSON."""


@dataclass(frozen=True, slots=True)
class Terms:
    """What charging one model needs to compute earnings: the rule in force, the
    beneficiaries ((user id, bps); the creator at 10,000 when none are set) and the model's
    lifetime use count so far."""

    model_id: int
    rule: EarningsRule
    beneficiaries: tuple[tuple[int, int], ...]
    use_count: int


@dataclass(frozen=True, slots=True)
class EarningLine:
    """One beneficiary's earning from one usage event (µcr, tokens = input + output)."""

    usage_id: int
    model_id: int
    user_id: int
    amount_ucr: int
    tokens: int
    rule_version: int
    popularity_multiplier: str | None = None
    type_multiplier: str | None = None
    share_bps: int | None = None


@dataclass(slots=True)
class StatsDelta:
    """Changes to one model's aggregates from a batch of charges."""

    uses: int = 0
    tokens: int = 0
    revenue_ucr: int = 0
    earnings_ucr: int = 0
    last_used_at: datetime | None = None


MONETISATION_KEY = "monetisation_enabled"
"""``platform_settings`` key of the platform-wide monetisation switch (1 on, 0 off)."""


def platform_monetised(session: Session) -> bool:
    """Whether usage earns creators anything platform-wide (DESIGN §7; on unless switched
    off)."""
    return platform.get(session, MONETISATION_KEY, 1) != 0


def set_platform_monetised(session: Session, enabled: bool) -> bool:
    """Switch monetisation on or off for every model; usage stays charged either way."""
    platform.put(session, MONETISATION_KEY, 1 if enabled else 0)
    return enabled


def set_rule(
    session: Session, model_id: int, rule: EarningsRule, *, effective_from: datetime | None = None
) -> EarningsRule:
    """Store ``rule`` as the next version of the model's earnings rule; return it versioned."""
    lock_sequence(session, "earnings_rules", model_id)  # concurrent edits: next number each
    conn = fast_connection(session)
    version = (
        int(
            conn.execute(
                select(func.coalesce(func.max(rules.c.version), 0)).where(
                    rules.c.model_id == model_id
                )
            ).scalar_one()
        )
        + 1
    )
    multipliers = {key: str(value) for key, value in rule.type_multipliers.items()}
    multipliers[OTHER_KEY] = str(rule.other_multiplier)
    conn.execute(
        insert(rules).values(
            model_id=model_id,
            version=version,
            effective_from=effective_from or utcnow(),
            per_use_ucr=rule.per_use_ucr,
            per_token_ucr=rule.per_token_ucr,
            share_bps=rule.share_bps,
            popularity_tiers=[[m, str(x)] for m, x in rule.popularity_tiers],
            type_multipliers=multipliers,
            created_at=utcnow(),
        )
    )
    stored = {
        "version": version,
        "per_use_ucr": rule.per_use_ucr,
        "per_token_ucr": rule.per_token_ucr,
        "share_bps": rule.share_bps,
        "popularity_tiers": [[m, str(x)] for m, x in rule.popularity_tiers],
        "type_multipliers": multipliers,
    }
    previous = (
        conn.execute(
            select(*(rules.c[k] for k in stored)).where(
                rules.c.model_id == model_id, rules.c.version == version - 1
            )
        )
        .mappings()
        .first()
    )
    audit.record(
        session,
        "earnings_rule.set",
        "model",
        model_id,
        before=None if previous is None else dict(previous),
        after={**stored, "effective_from": effective_from},
    )
    return _rule_from_row(stored)


def build_rule(
    *,
    per_use_ucr: int = 0,
    per_token_ucr: Decimal | int | str = 0,
    share_bps: int | None = None,
    popularity_tiers: Sequence[Sequence[Any]] | None = None,
    type_multipliers: Mapping[str, Any] | None = None,
) -> EarningsRule:
    """An :class:`EarningsRule` from loose input (numbers or decimal strings), defaults from
    DESIGN §7 for what is omitted. Raises :class:`InvalidRule`."""
    try:
        kwargs: dict[str, Any] = {
            "per_use_ucr": int(per_use_ucr),
            "per_token_ucr": parse_decimal(per_token_ucr),
        }
        if share_bps is not None:
            kwargs["share_bps"] = int(share_bps)
        if popularity_tiers is not None:
            kwargs["popularity_tiers"] = tuple(
                (int(m), parse_decimal(x)) for m, x in popularity_tiers
            )
        if type_multipliers is not None:
            parsed = {k: parse_decimal(v) for k, v in type_multipliers.items()}
            other = parsed.pop(OTHER_KEY, None)
            kwargs["type_multipliers"] = parsed
            if other is not None:
                kwargs["other_multiplier"] = other
            elif not parsed:
                kwargs["other_multiplier"] = Decimal(1)
        return EarningsRule(**kwargs)
    except (ValueError, TypeError) as exc:
        raise InvalidRule(f"invalid earnings rule: {exc}") from exc


def set_beneficiaries(session: Session, model_id: int, shares: Sequence[tuple[int, int]]) -> None:
    """Replace the model's beneficiaries with ``shares`` ((user id, bps), summing to 10,000).

    Raises :class:`InvalidSplit` for a wrong sum, a share ≤ 0 or a duplicate user.
    """
    users = [user_id for user_id, _ in shares]
    if len(set(users)) != len(users):
        raise InvalidSplit("a beneficiary appears twice")
    if any(bps <= 0 for _, bps in shares) or sum(bps for _, bps in shares) != BPS:
        raise InvalidSplit("beneficiary shares must be positive and sum to 10000 bps")
    conn = fast_connection(session)
    conn.execute(beneficiaries.delete().where(beneficiaries.c.model_id == model_id))
    conn.execute(
        insert(beneficiaries),
        [{"model_id": model_id, "user_id": u, "share_bps": bps} for u, bps in shares],
    )


def rule_versions(
    session: Session, model_ids: Iterable[int]
) -> dict[int, list[tuple[datetime, EarningsRule]]]:
    """Every stored rule version of each model as (effective from, rule), oldest first;
    models without a stored rule are absent (they use the default :class:`EarningsRule`).
    One query. :func:`rule_at` picks the version in force."""
    ids = sorted(set(model_ids))
    if not ids:
        return {}
    found: dict[int, list[tuple[datetime, EarningsRule]]] = {}
    for row in fast_connection(session).execute(_ALL_RULES, {"ids": ids}):
        found.setdefault(int(row.model_id), []).append((row.effective_from, _rule_of(row)))
    return found


def rule_at(history: Sequence[tuple[datetime, EarningsRule]], at: datetime) -> EarningsRule:
    """The rule in force at ``at``: the highest version whose effective_from ≤ at, or the
    DESIGN §7 default before the first (or with none)."""
    best: EarningsRule | None = None
    for effective_from, rule in history:
        if effective_from <= at and (best is None or rule.version > best.version):
            best = rule
    return _DEFAULT_RULE if best is None else best


def beneficiaries_of(
    session: Session, creators: Mapping[int, int | None]
) -> dict[int, tuple[tuple[int, int], ...]]:
    """The beneficiaries ((user id, bps), by user id) of each model in ``creators`` (model
    id → creator or None): its stakes, or its creator at 10,000 bps when none are set, or
    none for a platform model. One query.

    A charge reads them after locking the model's aggregate row (:func:`lock_use_counts`):
    a stake sale locks that row first, so the charge splits by the stakes as of its commit.
    """
    ids = sorted(creators)
    if not ids:
        return {}
    shares: dict[int, list[tuple[int, int]]] = {}
    for row in fast_connection(session).execute(_BENEFICIARIES, {"ids": ids}):
        shares.setdefault(int(row.model_id), []).append((int(row.user_id), int(row.share_bps)))
    result: dict[int, tuple[tuple[int, int], ...]] = {}
    for model_id in ids:
        creator = creators[model_id]
        default = [(creator, BPS)] if creator is not None else []
        result[model_id] = tuple(shares.get(model_id, default))
    return result


def use_counts_read(dialect: str, model_ids: Iterable[int]) -> Read:
    """The locking read :func:`lock_use_counts` runs."""
    ids = sorted(set(model_ids))
    return (_STATS_PG_FAST if dialect == "postgresql" else _STATS_FAST).read(ids, size=len(ids))


def lock_use_counts(session: Session, model_ids: Iterable[int]) -> dict[int, int]:
    """Each model's lifetime use count, read under a row lock held until the caller's
    transaction ends, so that concurrent charges of one model each see their own exact
    prior count (popularity tiers, DESIGN §7). Creates missing aggregate rows (a concurrent
    first use must not fail: ON CONFLICT DO NOTHING). One locking read in the common case."""
    ids = sorted(set(model_ids))
    if not ids:
        return {}
    conn = fast_connection(session)
    postgres = conn.dialect.name == "postgresql"
    read = use_counts_read(conn.dialect.name, ids)
    found = read.sql.execute(conn, read.params, size=read.size).fetchall()
    counts = {int(m): int(n) for m, n in found}
    if len(counts) < len(ids):
        conn.execute(
            _INSERT_STATS_PG if postgres else _INSERT_STATS_SQLITE,
            [
                {"model_id": m, "use_count": 0, "tokens": 0, "revenue_ucr": 0, "earnings_ucr": 0}
                for m in ids
                if m not in counts
            ],
        )
        found = read.sql.execute(conn, read.params, size=read.size).fetchall()
        counts = {int(m): int(n) for m, n in found}
    return counts


def _rule_of(row: Any) -> EarningsRule:
    # Rule versions are immutable: parse each one (JSON, Decimals) once per process.
    key = tuple(_freeze(value) for value in row)
    rule = _RULE_CACHE.get(key)
    if rule is None:
        if len(_RULE_CACHE) >= _RULE_CACHE_SIZE:
            _RULE_CACHE.clear()
        rule = _RULE_CACHE[key] = _rule_from_row(row._mapping)
    return rule


_DEFAULT_RULE = EarningsRule()
_ALL_RULES = (
    select(rules)
    .where(rules.c.model_id.in_(bindparam("ids", expanding=True)))
    .order_by(rules.c.model_id, rules.c.version)
)
_BENEFICIARIES = (
    select(beneficiaries)
    .where(beneficiaries.c.model_id.in_(bindparam("ids", expanding=True)))
    .order_by(beneficiaries.c.model_id, beneficiaries.c.user_id)
)
_INSERT_STATS_PG = pg_insert(stats).on_conflict_do_nothing()
_INSERT_STATS_SQLITE = sqlite_insert(stats).on_conflict_do_nothing()
_RULE_CACHE_SIZE = 4096
_RULE_CACHE: dict[tuple[Any, ...], EarningsRule] = {}
"""Rule row content → parsed rule (keyed by content, not id: safe across databases)."""


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a JSON column value (lists and dicts)."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


_STATS_FAST = FastSQL(
    "SELECT model_id, use_count FROM model_stats WHERE model_id IN ({in}) ORDER BY model_id"
)
_STATS_PG_FAST = FastSQL(_STATS_FAST.text + " FOR UPDATE")
_UPDATE_STATS_FAST = FastSQL(
    "UPDATE model_stats SET use_count = use_count + ?, tokens = tokens + ?,"
    " revenue_ucr = revenue_ucr + ?, earnings_ucr = earnings_ucr + ?,"
    " last_used_at = coalesce(?, last_used_at) WHERE model_id = ?"
)

EarningRow = tuple[int, int, int, int, int, int, str | None, str | None, int | None]
"""One earning for :func:`record_rows`: (usage id, model id, beneficiary user id, µcr,
tokens, rule version, popularity multiplier, type multiplier (decimal strings), the
beneficiary's stake in bps)."""

_INSERT_EARNINGS = BulkInsert(
    earnings,
    (
        "usage_id",
        "model_id",
        "user_id",
        "amount_ucr",
        "tokens",
        "rule_version",
        "popularity_multiplier",
        "type_multiplier",
        "share_bps",
        "created_at",
    ),
)


def record(
    session: Session,
    lines: Sequence[EarningLine],
    deltas: Mapping[int, StatsDelta],
    *,
    now: datetime | None = None,
) -> None:
    """Insert earning lines and apply aggregate deltas (one update per model)."""
    record_rows(
        session,
        [
            (
                line.usage_id,
                line.model_id,
                line.user_id,
                line.amount_ucr,
                line.tokens,
                line.rule_version,
                line.popularity_multiplier,
                line.type_multiplier,
                line.share_bps,
            )
            for line in lines
        ],
        deltas,
        now=now,
    )


def record_rows(
    session: Session,
    rows: Sequence[EarningRow],
    deltas: Mapping[int, StatsDelta],
    *,
    now: datetime | None = None,
) -> None:
    """:func:`record` for hot paths: earning lines as plain tuples (see :data:`EarningRow`),
    inserted with one driver ``executemany``."""
    conn = fast_connection(session)
    now = now or utcnow()
    if rows:
        created = db_timestamp(conn.dialect.name, now)
        _INSERT_EARNINGS.execute(conn, [(*row, created) for row in rows])
    if deltas:
        dialect = conn.dialect.name
        _UPDATE_STATS_FAST.executemany(
            conn,
            [
                (
                    d.uses,
                    d.tokens,
                    d.revenue_ucr,
                    d.earnings_ucr,
                    db_timestamp(dialect, d.last_used_at),
                    model_id,
                )
                for model_id, d in sorted(deltas.items())
            ],
        )


@dataclass(frozen=True, slots=True)
class ModelEarnings:
    """A model's lifetime aggregates."""

    model_id: int
    use_count: int
    tokens: int
    revenue_ucr: int
    earnings_ucr: int
    last_used_at: datetime | None


def model_stats(session: Session, model_ids: Iterable[int] | None = None) -> list[ModelEarnings]:
    """Aggregates of the given models (all when None), most revenue first."""
    query = select(stats).order_by(stats.c.revenue_ucr.desc(), stats.c.model_id)
    if model_ids is not None:
        query = query.where(stats.c.model_id.in_(list(model_ids)))
    return [
        ModelEarnings(
            model_id=int(r.model_id),
            use_count=int(r.use_count),
            tokens=int(r.tokens),
            revenue_ucr=int(r.revenue_ucr),
            earnings_ucr=int(r.earnings_ucr),
            last_used_at=r.last_used_at,
        )
        for r in fast_connection(session).execute(query)
    ]


_EARNINGS_BY_USAGE = (
    select(earnings.c.usage_id, earnings.c.user_id, earnings.c.amount_ucr)
    .where(earnings.c.usage_id.in_(bindparam("ids", expanding=True)))
    .order_by(earnings.c.id)
)


def earnings_by_usage(
    session: Session, usage_ids: Iterable[int]
) -> dict[int, list[tuple[int, int]]]:
    """usage id → [(beneficiary user id, µcr)] (for replaying an idempotent charge)."""
    ids = list(usage_ids)
    found: dict[int, list[tuple[int, int]]] = {}
    if not ids:
        return found
    for row in fast_connection(session).execute(_EARNINGS_BY_USAGE, {"ids": ids}):
        found.setdefault(int(row.usage_id), []).append((int(row.user_id), int(row.amount_ucr)))
    return found


def total_earned(session: Session, user_id: int) -> int:
    """All µcr ``user_id`` has earned from others' usage, over all models."""
    return int(
        fast_connection(session)
        .execute(
            select(func.coalesce(func.sum(earnings.c.amount_ucr), 0)).where(
                earnings.c.user_id == user_id
            )
        )
        .scalar_one()
    )


def _rule_from_row(row: Mapping[Any, Any]) -> EarningsRule:
    multipliers = {k: Decimal(v) for k, v in dict(row["type_multipliers"]).items()}
    other = multipliers.pop(OTHER_KEY, Decimal(1))
    return EarningsRule(
        per_use_ucr=int(row["per_use_ucr"]),
        per_token_ucr=Decimal(row["per_token_ucr"]),
        share_bps=int(row["share_bps"]),
        popularity_tiers=tuple((int(m), Decimal(x)) for m, x in row["popularity_tiers"]),
        type_multipliers=multipliers,
        other_multiplier=other,
        version=int(row["version"]),
    )
