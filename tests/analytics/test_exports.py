"""CSV exports (DESIGN §8): every kind's rows match the database exactly, for every scope and
period, across page boundaries; the ``modelbank export`` command writes them with exit 0 and
refuses bad input with one line and exit 2. Runs on SQLite and PostgreSQL.

The expected rows are built here from the tables with plain queries and Python filters, not
through the exporter's column lists, so that a wrong join, scope or period shows."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from modelbank.analytics import exports
from modelbank.analytics.exports import ExportKind, InvalidPeriod, UnknownExportKind
from modelbank.catalog.models import models_table
from modelbank.cli import app
from modelbank.db.engine import read_session_factory
from modelbank.earnings import service as earnings
from modelbank.earnings.models import earnings_table, payouts_table
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.ledger.models import accounts_table, transfers_table
from modelbank.metering import refunds
from modelbank.metering import service as metering
from modelbank.metering.models import usage_events_table
from modelbank.metering.service import UsageEvent
from modelbank.money import format_credits
from modelbank.users import service as users
from modelbank.users.errors import UserNotFound
from tests import factories
from tests.conftest import Db
from tests.pool.helpers import deposit

CR = 1_000_000
T0 = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
"""Midnight UTC tomorrow: events are charged at T0 + hours, after the prices took effect."""


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@dataclass
class Scenario:
    alice: int
    bob: int
    carol: int
    dave: int
    carols_model: int
    plain_model: int


def scenario(db: Db) -> Scenario:
    """Alice and Bob use Carol's model (Carol 70 %, Dave 30 % of its earnings) and a model
    without a creator; Carol uses her own (Dave earns his share, she nothing); Alice's first
    charge is refunded; Carol has a pending payout and a failed one, Dave a completed one.
    Events at T0 + hours."""
    with db.tx() as s:
        alice = factories.user(s, "alice", credits_ucr=1_000 * CR)
        bob = factories.user(s, "bob", credits_ucr=1_000 * CR)
        carol = factories.user(s, "carol", credits_ucr=100 * CR)
        dave = factories.user(s, "dave")
        carols = factories.model(s, "carols", creator_id=carol)
        plain = factories.model(s, "plain")
        earnings.set_beneficiaries(s, carols, [(carol, 7_000), (dave, 3_000)])
    charges = [
        (alice, "carols", 1, {"input_tokens": 100_000, "output_tokens": 20_000}),
        (alice, "carols", 2, {"input_tokens": 50_000, "cached_input_tokens": 10_000}),
        (bob, "carols", 3, {"input_tokens": 200_000, "output_tokens": 1_000}),
        (alice, "plain", 4, {"input_tokens": 10_000}),
        (carol, "carols", 5, {"input_tokens": 30_000}),
        (bob, "carols", 6, {"input_tokens": 1_000, "usage_type": "image_generation"}),
    ]
    usage_ids = []
    for i, (user_id, model, hours, fields) in enumerate(charges):
        with db.tx() as s:
            result = metering.charge(
                s,
                UsageEvent(
                    f"ev-{i}",
                    user_id,
                    model,
                    occurred_at=at(hours) - timedelta(seconds=5),
                    **fields,
                ),
                now=at(hours),
            )
            usage_ids.append(result.usage_id)
    with db.tx() as s:
        refunds.refund_usage(s, usage_ids[0], now=at(7))
    with db.tx() as s:
        _payout(s, carol, CR // 10, "pending", at(8))
        _payout(s, carol, CR // 20, "failed", at(9))
        _payout(s, dave, CR // 50, "completed", at(10))
    return Scenario(alice, bob, carol, dave, carols, plain)


def _payout(session: Session, user_id: int, amount: int, status: str, now: datetime) -> None:
    """A payout row as the payouts service keeps it: a hold on the earnings account, posted
    (completed) or voided (failed)."""
    account = users.get_user(session, user_id).earnings_account_id
    world = ledger.platform_account(session, AccountCode.WORLD_PAYOUTS)
    spec = ledger.NewTransfer(
        account, world, amount, TransferCode.PAYOUT, ref_type="payout", ref_id=None
    )
    hold = ledger.create_hold(session, spec, timeout_s=None, now=now)
    later = now + timedelta(minutes=30)
    done = status != "pending"
    if status == "completed":
        ledger.post_hold(session, hold, now=later)
    elif status == "failed":
        ledger.void_hold(session, hold, now=later, reason="failed")
    session.execute(
        insert(payouts_table).values(
            user_id=user_id,
            amount_ucr=amount,
            status=status,
            hold_id=hold,
            adapter="manual",
            external_reference='ref, with "quotes"\nand a newline' if done else None,
            amount_uusd=amount // 100 if status == "completed" else None,
            credits_per_usd=Decimal("100") if status == "completed" else None,
            failure_reason="bank said no" if status == "failed" else None,
            created_at=now,
            resolved_at=later if done else None,
        )
    )


# ------------------------------------------------------------------ the oracle


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _kind_of(flags: int) -> str:
    return {0: "single", 1: "pending", 2: "post", 4: "void"}[flags]


def expected(
    db: Db,
    kind: ExportKind,
    *,
    user_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict[str, str]]:
    """Every row of ``kind`` in scope and period, in id order, as CSV cells."""
    with db.tx() as s:
        slugs = dict(s.execute(select(models_table.c.id, models_table.c.slug)).all())
        acct = {r.id: r for r in s.execute(select(accounts_table))}
        mine: set[int] = set()
        if user_id is not None:
            info = users.get_user(s, user_id)
            mine = {info.wallet_account_id, info.earnings_account_id}
        table = {
            ExportKind.USAGE: usage_events_table,
            ExportKind.TRANSFERS: transfers_table,
            ExportKind.EARNINGS: earnings_table,
            ExportKind.PAYOUTS: payouts_table,
        }[kind]
        rows = s.execute(select(table).order_by(table.c.id)).all()
    out: list[dict[str, Any]] = []
    for r in rows:
        if (since is not None and r.created_at < since) or (
            until is not None and r.created_at >= until
        ):
            continue
        if kind is ExportKind.TRANSFERS:
            if user_id is not None and not {r.debit_account_id, r.credit_account_id} & mine:
                continue
            d, c = acct[r.debit_account_id], acct[r.credit_account_id]
            out.append(
                {
                    "id": r.id,
                    "created_at": r.created_at,
                    "code": r.code,
                    "kind": _kind_of(r.flags),
                    "pending_id": r.pending_id,
                    "debit_account_id": r.debit_account_id,
                    "debit_account_code": d.code,
                    "debit_owner_id": d.owner_id,
                    "credit_account_id": r.credit_account_id,
                    "credit_account_code": c.code,
                    "credit_owner_id": c.owner_id,
                    "amount_ucr": r.amount,
                    "amount": format_credits(r.amount),
                    "ref_type": r.ref_type,
                    "ref_id": r.ref_id,
                    "reverses_id": r.reverses_id,
                }
            )
            continue
        if user_id is not None and r.user_id != user_id:
            continue
        if kind is ExportKind.USAGE:
            out.append(
                {
                    **{k: getattr(r, k) for k in ("id", "created_at", "occurred_at", "user_id")},
                    "model_id": r.model_id,
                    "model": slugs[r.model_id],
                    **{
                        k: getattr(r, k)
                        for k in (
                            "usage_type",
                            "input_tokens",
                            "cached_input_tokens",
                            "output_tokens",
                            "units",
                            "charge_ucr",
                        )
                    },
                    "charge": format_credits(r.charge_ucr),
                    **{
                        k: getattr(r, k)
                        for k in (
                            "cost_uusd",
                            "earnings_ucr",
                            "margin_ucr",
                            "earnings_note",
                            "price_version_id",
                            "idempotency_key",
                            "resource_id",
                        )
                    },
                    "usage_estimated": "true" if r.usage_estimated else "false",
                }
            )
        elif kind is ExportKind.EARNINGS:
            out.append(
                {
                    **{k: getattr(r, k) for k in ("id", "created_at", "usage_id", "model_id")},
                    "model": slugs[r.model_id],
                    "user_id": r.user_id,
                    "amount_ucr": r.amount_ucr,
                    "amount": format_credits(r.amount_ucr),
                    **{
                        k: getattr(r, k)
                        for k in (
                            "tokens",
                            "rule_version",
                            "popularity_multiplier",
                            "type_multiplier",
                            "share_bps",
                        )
                    },
                }
            )
        else:
            out.append(
                {
                    **{k: getattr(r, k) for k in ("id", "created_at", "user_id", "status")},
                    "amount_ucr": r.amount_ucr,
                    "amount": format_credits(r.amount_ucr),
                    **{
                        k: getattr(r, k)
                        for k in (
                            "amount_uusd",
                            "credits_per_usd",
                            "adapter",
                            "external_reference",
                            "failure_reason",
                            "resolved_at",
                        )
                    },
                }
            )
    return [{k: _cell(v) for k, v in row.items()} for row in out]


# ------------------------------------------------------------------ helpers


def reader(db: Db) -> Any:
    factory = read_session_factory(db.engine)

    @contextmanager
    def read() -> Iterator[Session]:
        with factory() as session, session.begin():
            yield session

    return read


def parse(text: str) -> tuple[list[str], list[dict[str, str]]]:
    rows = list(csv.reader(io.StringIO(text, newline="")))
    header = rows[0]
    return header, [dict(zip(header, r, strict=True)) for r in rows[1:]]


def export_text(db: Db, kind: ExportKind | str, **kwargs: Any) -> str:
    return "".join(exports.export_csv(reader(db), kind, **kwargs))


def count(db: Db, kind: ExportKind, **kwargs: Any) -> int:
    with db.tx() as s:
        return exports.count(s, kind, **kwargs)


# ------------------------------------------------------------------ service


def test_every_kind_and_scope_matches_the_database(db: Db) -> None:
    w = scenario(db)
    scopes = [None, w.alice, w.bob, w.carol, w.dave]
    for kind in ExportKind:
        for user_id in scopes:
            want = expected(db, kind, user_id=user_id)
            header, got = parse(export_text(db, kind, user_id=user_id))
            assert tuple(header) == exports.columns(kind)
            if want:  # the oracle names the same columns in the same order
                assert list(want[0]) == header
            assert got == want, (kind, user_id)
            assert count(db, kind, user_id=user_id) == len(want)

    # the scenario's shape, so that the comparisons above compared something
    assert len(expected(db, ExportKind.USAGE)) == 6
    notes = [r["earnings_note"] for r in expected(db, ExportKind.USAGE)]
    assert notes[3] == "no_creator" and notes[0] == ""
    carol_earnings = expected(db, ExportKind.EARNINGS, user_id=w.carol)
    dave_earnings = expected(db, ExportKind.EARNINGS, user_id=w.dave)
    # Carol earns from the 4 charges by others on her model, Dave from Carol's too
    assert (len(carol_earnings), len(dave_earnings)) == (4, 5)
    assert {r["share_bps"] for r in carol_earnings} == {"7000"}
    assert {r["user_id"] for r in dave_earnings} == {str(w.dave)}
    codes = {r["code"] for r in expected(db, ExportKind.TRANSFERS, user_id=w.carol)}
    assert {"purchase", "usage_charge", "earning", "refund", "payout"} <= codes
    kinds = {r["kind"] for r in expected(db, ExportKind.TRANSFERS, user_id=w.carol)}
    assert kinds == {"single", "pending", "void"}
    # Alice's transfers are hers: every row touches one of her two accounts
    _, alices = parse(export_text(db, ExportKind.TRANSFERS, user_id=w.alice))
    assert all(str(w.alice) in (r["debit_owner_id"], r["credit_owner_id"]) for r in alices)
    assert [r["status"] for r in expected(db, ExportKind.PAYOUTS)] == [
        "pending",
        "failed",
        "completed",
    ]


def test_gateway_usage_names_its_resource_and_whether_it_was_estimated(db: Db) -> None:
    """Usage the gateway charged carries the pool resource that served it and the estimate
    flag (the gateway sets both on the usage row in its capture transaction); usage reported
    through the API has neither."""
    w = scenario(db)
    with db.tx() as s:
        served = deposit(s, None, "carols", api_key="sk-export-test-key-0123456789")
        keys = ["ev-2", "ev-5"]
        for key, estimated in zip(keys, (False, True), strict=True):
            s.execute(
                update(usage_events_table)
                .where(usage_events_table.c.idempotency_key == key)
                .values(resource_id=served.id, usage_estimated=estimated)
            )
    header, rows = parse(export_text(db, "usage"))
    assert header[-2:] == ["resource_id", "usage_estimated"]
    assert [(r["idempotency_key"], r["resource_id"], r["usage_estimated"]) for r in rows] == [
        ("ev-0", "", "false"),
        ("ev-1", "", "false"),
        ("ev-2", str(served.id), "false"),
        ("ev-3", "", "false"),
        ("ev-4", "", "false"),
        ("ev-5", str(served.id), "true"),
    ]
    assert rows == expected(db, ExportKind.USAGE)
    _, bobs = parse(export_text(db, "usage", user_id=w.bob))
    assert [(r["idempotency_key"], r["resource_id"]) for r in bobs] == [
        ("ev-2", str(served.id)),
        ("ev-5", str(served.id)),
    ]


def test_refund_rows_reference_the_refunded_charge(db: Db) -> None:
    w = scenario(db)
    _, rows = parse(export_text(db, "transfers", user_id=w.alice))
    refunded = [r for r in rows if r["code"] == "refund"]
    assert len(refunded) == 1  # Alice's side; the earnings reversals are Carol's and Dave's
    (original,) = [
        r for r in rows if r["code"] == "usage_charge" and r["ref_id"] == refunded[0]["ref_id"]
    ]
    assert refunded[0]["ref_type"] == original["ref_type"] == "usage"
    assert refunded[0]["amount_ucr"] == original["amount_ucr"]
    assert refunded[0]["credit_owner_id"] == original["debit_owner_id"] == str(w.alice)
    _, carols = parse(export_text(db, "transfers", user_id=w.carol))
    reversal = [r for r in carols if r["code"] == "refund"]
    assert [r["ref_id"] for r in reversal] == [original["ref_id"]]
    assert reversal[0]["debit_account_code"] == "user_earnings"
    # the wallet's rows add up to its balance: posted transfers only (no holds for Alice)
    with db.tx() as s:
        info = users.get_user(s, w.alice)
        balance = ledger.get_balance(s, info.wallet_account_id).balance
    signed = sum(
        int(r["amount_ucr"]) * (1 if r["credit_account_id"] == str(info.wallet_account_id) else -1)
        for r in rows
        if str(info.wallet_account_id) in (r["debit_account_id"], r["credit_account_id"])
    )
    assert signed == balance


def test_period_is_half_open_on_created_at(db: Db) -> None:
    w = scenario(db)
    windows = [
        (at(2), at(5)),
        (at(2), None),
        (None, at(5)),
        (at(0), at(1)),  # ends exactly at the first charge: excluded
        (at(1), at(1) + timedelta(microseconds=1)),  # exactly the first charge
        (at(100), None),
    ]
    for since, until in windows:
        for kind in ExportKind:
            for user_id in (None, w.alice, w.carol):
                want = expected(db, kind, user_id=user_id, since=since, until=until)
                _, got = parse(export_text(db, kind, user_id=user_id, since=since, until=until))
                assert got == want, (kind, user_id, since, until)
                assert count(db, kind, user_id=user_id, since=since, until=until) == len(want)
    # [at(2), at(5)): charges 2, 3, 4 (the fifth at exactly at(5) is outside)
    _, rows = parse(export_text(db, "usage", since=at(2), until=at(5)))
    assert [r["idempotency_key"] for r in rows] == ["ev-1", "ev-2", "ev-3"]
    _, first = parse(export_text(db, "usage", since=at(1), until=at(1) + timedelta(microseconds=1)))
    assert [r["idempotency_key"] for r in first] == ["ev-0"]
    # a period with nothing in it is a header alone
    text = export_text(db, "payouts", since=at(100))
    assert text == ",".join(exports.columns("payouts")) + "\n"


def test_csv_parses_back_with_quotes_newlines_and_exact_amounts(db: Db) -> None:
    scenario(db)
    text = export_text(db, "payouts")
    _, rows = parse(text)
    assert rows[1]["external_reference"] == 'ref, with "quotes"\nand a newline'
    assert rows[2]["credits_per_usd"] == "100"
    assert rows[2]["amount_ucr"] == str(CR // 50) and rows[2]["amount"] == "0.020000 cr"
    assert rows[0]["resolved_at"] == "" and rows[0]["amount_uusd"] == ""
    assert datetime.fromisoformat(rows[0]["created_at"]) == at(8)
    _, usage = parse(export_text(db, "usage"))
    for r in usage:
        assert datetime.fromisoformat(r["created_at"]).utcoffset() == timedelta(0)
        charge = int(r["charge_ucr"])
        assert r["charge"] == format_credits(charge)
        # margin = charge − cost (at 100 credits/USD) − earnings, all integers
        assert int(r["margin_ucr"]) + int(r["earnings_ucr"]) <= charge


@pytest.mark.parametrize("ucr", [0, 1, 999_999, 1_000_000, 1_234_567_890_123, -5, -1_500_000])
def test_cheap_credit_format_is_format_credits(ucr: int) -> None:
    assert exports.format_ucr(ucr) == format_credits(ucr)


def test_pages_cross_boundaries_in_short_transactions(db: Db) -> None:
    w = scenario(db)
    with db.tx() as s:
        more = [UsageEvent(f"bulk-{i}", w.bob, "plain", input_tokens=1_000 + i) for i in range(237)]
        results = metering.charge_batch(s, more, now=at(20))
        assert {r.status for r in results} == {"charged"}
    whole = export_text(db, "usage")
    _, rows = parse(whole)
    assert len(rows) == 243 == count(db, ExportKind.USAGE)
    assert [int(r["id"]) for r in rows] == sorted(int(r["id"]) for r in rows)
    assert len({r["id"] for r in rows}) == 243
    assert rows == expected(db, ExportKind.USAGE)
    for page_size in (1, 7, 81, 243, 1_000):  # 243 = 3 × 81: the last page is exactly full
        pages: list[int] = []
        chunks = list(
            exports.export_csv(reader(db), "usage", page_size=page_size, on_page=pages.append)
        )
        assert "".join(chunks) == whole, page_size
        full, rest = divmod(243, page_size)
        assert pages == [page_size] * full + ([rest] if rest else []), page_size
        assert len(chunks) == 1 + len(pages)  # header, then one chunk per page
    # one user's rows, paged
    _, bobs = parse(export_text(db, "usage", user_id=w.bob, page_size=10))
    assert bobs == expected(db, ExportKind.USAGE, user_id=w.bob) and len(bobs) == 239
    _, transfers = parse(export_text(db, "transfers", user_id=w.bob, page_size=10))
    assert transfers == expected(db, ExportKind.TRANSFERS, user_id=w.bob)


def test_each_page_reads_in_its_own_transaction(db: Db) -> None:
    w = scenario(db)
    opened = 0
    inner = reader(db)

    @contextmanager
    def read() -> Iterator[Session]:
        nonlocal opened
        opened += 1
        with inner() as session:
            yield session

    stream = exports.export_csv(read, "usage", user_id=w.alice, page_size=2)
    assert opened == 1  # validation (the user exists)
    assert len(list(stream)) == 1 + 2  # header + 3 rows in pages of 2
    assert opened == 1 + 2


def test_bad_input_raises_before_anything_is_read_or_yielded(db: Db) -> None:
    read = reader(db)
    with pytest.raises(UnknownExportKind) as unknown:
        exports.export_csv(read, "grants")
    assert unknown.value.code == "unknown_export_kind" and "usage" in str(unknown.value)
    with pytest.raises(InvalidPeriod):
        exports.export_csv(read, "usage", since=at(2), until=at(2))
    with pytest.raises(InvalidPeriod):
        exports.export_csv(read, "usage", since=at(3), until=at(2))
    with pytest.raises(InvalidPeriod):
        exports.export_csv(read, "usage", since=datetime(2025, 1, 1))
    with pytest.raises(UserNotFound):
        exports.export_csv(read, "transfers", user_id=999_999)
    with db.tx() as s, pytest.raises(UserNotFound):
        exports.count(s, "earnings", user_id=999_999)
    with pytest.raises(exports.InvalidInput):
        exports.export_csv(read, "usage", page_size=0)


def test_a_user_without_rows_gets_the_header(db: Db) -> None:
    with db.tx() as s:
        lonely = factories.user(s, "lonely")
    for kind in ExportKind:
        text = export_text(db, kind, user_id=lonely)
        assert text == ",".join(exports.columns(kind)) + "\n"


# ------------------------------------------------------------------ CLI

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["export", *args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_writes_the_file_and_exits_0(db: Db, tmp_path: Path) -> None:
    w = scenario(db)
    out = tmp_path / "usage.csv"
    code, _, err = run("usage", "--db", db.url, "--out", str(out))
    assert code == 0, err
    assert out.read_text(encoding="utf-8") == export_text(db, "usage")
    assert "wrote 6 usage rows" in err
    assert not (tmp_path / "usage.csv.part").exists()

    # one user, a period given as dates and datetimes (a datetime without zone is UTC)
    out = tmp_path / "carol.csv"
    code, _, err = run(
        "transfers", "--user", str(w.carol), "--from", at(2).replace(tzinfo=None).isoformat(),
        "--to", at(9).isoformat(), "--db", db.url, "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    _, rows = parse(out.read_text(encoding="utf-8"))
    assert rows == expected(db, ExportKind.TRANSFERS, user_id=w.carol, since=at(2), until=at(9))
    assert rows

    tomorrow = (T0 + timedelta(days=1)).date().isoformat()
    code, _, err = run("earnings", "--from", tomorrow, "--db", db.url, "-o", str(out))
    assert code == 0, err
    assert out.read_text(encoding="utf-8") == ",".join(exports.columns("earnings")) + "\n"


def test_cli_default_file_name_and_stdout(
    db: Db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = scenario(db)
    monkeypatch.chdir(tmp_path)
    code, _, err = run("payouts", "--db", db.url)
    assert code == 0, err
    assert (tmp_path / "payouts.csv").read_text(encoding="utf-8") == export_text(db, "payouts")

    code, out, err = run("earnings", "--user", str(w.dave), "--out", "-", "--db", db.url)
    assert code == 0, err
    assert out == export_text(db, "earnings", user_id=w.dave)
    assert "rows" not in err  # no progress bar on stdout exports


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("grants",), "unknown export kind 'grants'"),
        (("usage", "--from", "yesterday"), "--from 'yesterday' is not an ISO 8601"),
        (("usage", "--to", "2025-13-01"), "--to '2025-13-01' is not an ISO 8601"),
        (("usage", "--from", "2025-01-02", "--to", "2025-01-01"), "the period is empty"),
        (("usage", "--from", "2025-01-01", "--to", "2025-01-01"), "the period is empty"),
        (("transfers", "--user", "999999"), "no user 999999"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    db: Db, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    out = tmp_path / "x.csv"
    code, stdout, err = run(*args, "--db", db.url, "--out", str(out))
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error:") and message in err, err
    assert not out.exists() and not (tmp_path / "x.csv.part").exists()
    assert stdout == ""


def test_cli_unwritable_target_is_one_line_and_exit_2(db: Db, tmp_path: Path) -> None:
    code, _, err = run("usage", "--db", db.url, "--out", str(tmp_path / "missing" / "u.csv"))
    assert code == 2, err
    assert "cannot write" in err and err.count("error:") == 1
