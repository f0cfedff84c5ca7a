"""The command line on real traces: replay, demo and verify (exit codes, JSON, ledger)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from modelbank.cli import app
from modelbank.db.engine import make_engine
from modelbank.users import service as users
from modelbank.wallets import holds
from modelbank.wallets import service as wallets
from tests.conftest import Db, data_file

runner = CliRunner()


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def _replay(db: Db, trace: Path, *extra: str) -> dict[str, object]:
    code, out, err = _run("replay", str(trace), "--db", db.url, "--json", *extra)
    assert code == 0, err
    report: dict[str, object] = json.loads(out)
    return report


@pytest.mark.slow
def test_replay_azure_trace(db: Db) -> None:
    report = _replay(db, data_file("AzureLLMInferenceTrace_code.csv"), "--users", "20")
    assert report["events"] == 8_819
    assert report["charged"] + report["rejected"] == 8_819  # type: ignore[operator]
    assert report["ledger_ok"] is True
    assert report["revenue_ucr"] > 0 and report["creator_earnings_ucr"] > 0  # type: ignore[operator]
    top = report["top_models"]
    assert isinstance(top, list) and top[0]["revenue_ucr"] >= top[-1]["revenue_ucr"]
    code, _, err = _run("verify", "--db", db.url)
    assert code == 0, err


@pytest.mark.slow
def test_replay_mooncake_trace_twice_charges_once(db: Db) -> None:
    trace = data_file("mooncake_conversation_trace.jsonl")
    first = _replay(db, trace, "--credits", "100000")
    assert first["events"] == 12_031
    assert first["charged"] + first["rejected"] == 12_031  # type: ignore[operator]
    assert first["ledger_ok"] is True
    with db.engine.connect() as conn:
        total = conn.execute(text("select sum(charge_ucr) from usage_events")).scalar_one()
    assert total == first["revenue_ucr"]
    again = _replay(db, trace, "--credits", "100000")
    assert again["charged"] == 0 and again["revenue_ucr"] == 0
    assert again["replayed"] == first["charged"]
    with db.engine.connect() as conn:
        assert conn.execute(text("select sum(charge_ucr) from usage_events")).scalar_one() == total


def test_replay_generic_csv_assigns_only_missing_columns(db: Db, tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(
        "user,model,input_tokens,output_tokens,timestamp\n"
        "user-001,gpt-4o,1000,100,2024-05-01T00:00:00Z\n"
        ",,500,50,2024-05-01T00:00:01Z\n"
    )
    report = _replay(db, trace, "--users", "3", "--models", "2")
    assert report["charged"] == 2
    # gpt-4o: (1000 × $2.50 + 100 × $10) / 1M = $0.0035 × 1.5 (MEDIUM) × 100 credits/$
    top = {m["model"]: m for m in report["top_models"]}  # type: ignore[union-attr]
    assert top["gpt-4o"]["revenue_ucr"] >= 525_000


def test_replay_bad_trace_is_one_line_error(tmp_path: Path) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\r\n2023-11-16 18:17:03.9799600,-4,3")
    code, _, err = _run("replay", str(trace), "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert code == 2
    assert err.startswith("error:") and "bad.csv" in err and len(err.strip().splitlines()) <= 2
    assert not (tmp_path / "x.db").exists()  # nothing was written


def test_demo_falls_back_to_synthetic_trace(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    env = {"MODELBANK_DATA_DIR": str(tmp_path / "nothing-here")}
    code, out, err = _run("demo", "--db", url, "--json", env=env)
    assert code == 0, err
    report = json.loads(out)
    assert report["synthetic_trace"] is True and "synthetic" in err
    assert report["events"] == 8_819
    assert report["charged"] + report["rejected"] == 8_819
    assert report["ledger_ok"] is True
    assert any(m["model"] in ("dall-e-3", "ghibli-style") for m in report["top_models"])
    code, _, _ = _run("verify", "--db", url)
    assert code == 0


def test_verify_names_the_broken_invariant(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v.db'}"
    code, _, err = _run("migrate", "--db", url)
    assert code == 0, err
    assert _run("verify", "--db", url)[0] == 0
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("update accounts set credits_posted = 5 where code = 'platform_revenue'"))
    engine.dispose()
    code, _, err = _run("verify", "--db", url)
    assert code == 1
    assert "balanced" in err and "totals_match_transfers" in err


def test_verify_without_schema(tmp_path: Path) -> None:
    code, _, err = _run("verify", "--db", f"sqlite:///{tmp_path / 'empty.db'}")
    assert code == 2 and "modelbank migrate" in err


def test_verify_reports_grants_out_of_balance(db: Db) -> None:
    with db.tx() as session:
        user = users.create_user(session, "drift")
        wallets.grant(session, user.id, 7_000_000, idempotency_key="drift")
    code, out, _ = _run("verify", "--db", db.url)
    assert code == 0 and "grants sum to wallet balances" in out
    with db.engine.begin() as conn:
        conn.execute(text("update grants set remaining_ucr = remaining_ucr - 1"))
    code, _, err = _run("verify", "--db", db.url)
    assert code == 1
    assert f"wallet of user {user.id}: balance 7000000 µcr, grants 6999999 µcr" in err
    with db.engine.begin() as conn:  # leave the database sound for the fixture's own check
        conn.execute(text("update grants set remaining_ucr = remaining_ucr + 1"))


def test_jobs_run_sweeps_expired_grants_and_voids_expired_holds(db: Db) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=1)
    with db.tx() as session:
        user = users.create_user(session, "jobs")
        wallets.grant(session, user.id, 3_000_000, idempotency_key="keep")
        wallets.grant(
            session,
            user.id,
            2_000_000,
            source=wallets.GrantSource.BONUS,
            idempotency_key="lapse",
            expires_at=soon,
        )
        hold = holds.place(session, user.id, 1_000_000, timeout_s=1, idempotency_key="h")
    time.sleep(1.1)
    code, out, err = _run("jobs", "run", "--db", db.url, "--no-deliver")
    assert code == 0, err
    assert "holds expired 1" in out and "grants swept 1" in out
    with db.tx() as session:
        assert wallets.balance(session, user.id).balance_ucr == 3_000_000
        assert wallets.balance(session, user.id).available_ucr == 3_000_000
        assert holds.get_hold(session, hold.id).reason == "expired"
    code, out, _ = _run("jobs", "run", "--db", db.url, "--no-deliver")  # idempotent
    assert code == 0 and "holds expired 0" in out and "grants swept 0" in out


def test_domain_errors_keep_their_code_on_the_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    assert _run("migrate", "--db", url)[0] == 0
    code, _, err = _run("export", "usage", "--user", "9999", "--db", url, "--out", "-")
    assert code == 2
    assert err.strip() == "error: no user 9999 [user_not_found]"
