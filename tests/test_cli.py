"""The command line on real traces: replay, demo and verify (exit codes, JSON, ledger)."""

from __future__ import annotations

import gzip
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from modelbank.cli import app
from modelbank.cli.helptext import prose
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


# --- traces users bring (issue 12) ----------------------------------------------------------


def _ids(db: Db) -> dict[str, int]:
    with db.engine.connect() as conn:
        return dict(conn.execute(text("select external_id, id from users")).all())  # type: ignore[arg-type]


def test_replay_csv_creates_the_users_it_names_and_counts_unknown_models(
    db: Db, tmp_path: Path
) -> None:
    trace = tmp_path / "mine.csv"
    trace.write_text(
        "user,model,input_tokens,output_tokens,timestamp\n"
        "alice0,gpt-4o,1000,100,2024-05-01T00:00:00Z\n"
        "u7,claude-3-5-haiku,500,50,2024-05-01T00:00:01Z\n"  # not in the catalog: from genai
        "u7,no-such-model,500,50,2024-05-01T00:00:02Z\n"  # nobody knows it: rejected
        "u7,no-such-model,10,10,2024-05-01T00:00:03Z\n"
        ",,500,50,2024-05-01T00:00:04Z\n"  # assigned to user-001 or user-002
        "alice0,gpt-4o,20,20,2024-05-01T00:00:05Z\n"
    )
    report = _replay(db, trace, "--format", "csv", "--users", "2", "--models", "2")
    assert (report["events"], report["charged"], report["rejected"]) == (6, 4, 2)
    assert report["rejected_by_reason"] == {"model_not_found": 2}
    assert report["unknown_models"] == {"no-such-model": 2}
    assert "claude-3-5-haiku" in report["models_created"]  # type: ignore[operator]
    assert report["users_created"] == 4  # user-001, user-002, alice0, u7
    assert set(_ids(db)) == {"user-001", "user-002", "alice0", "u7"}
    with db.engine.connect() as conn:
        spent = dict(
            conn.execute(
                text(
                    "select u.external_id, sum(e.charge_ucr) from usage_events e"
                    " join users u on u.id = e.user_id group by u.external_id"
                )
            ).all()
        )
        model = conn.execute(
            text("select provider, mode from models where slug = 'claude-3-5-haiku'")
        ).one()
    assert spent["alice0"] > 0 and spent["u7"] > 0
    assert model.mode == "chat" and model.provider != "platform"  # priced from genai-prices
    again = _replay(db, trace, "--format", "csv", "--users", "2", "--models", "2")
    assert again["replayed"] == 4 and again["users_created"] == 0 and again["charged"] == 0


def test_replay_unknown_model_with_a_litellm_source_is_rejected_not_a_traceback(
    db: Db, tmp_path: Path
) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(
        "user,model,input_tokens,output_tokens,timestamp\n"
        "x1,made-up-7b,10,10,2024-05-01T00:00:00Z\n"
        "x2,gpt-4o-mini,10,10,2024-05-01T00:00:01Z\n"
    )
    report = _replay(db, trace, "--prices", "litellm", "--models", "1", "--users", "1")
    assert report["unknown_models"] == {"made-up-7b": 1} and report["charged"] == 1
    assert report["prices"] == "litellm:litellm_model_prices_and_context_window.json"


def _first_rows(name: str, rows: int, target: Path) -> Path:
    lines = gzip.decompress(data_file(name).read_bytes()).splitlines()
    target.write_bytes(
        gzip.compress(b"\n".join(lines[: rows + (1 if name.endswith("csv") else 0)]))
    )
    return target


@pytest.mark.parametrize(
    ("name", "suffix", "users"),
    [
        ("AzureLLMInferenceTrace_code.csv", "csv.gz", 1),
        ("AzureLLMInferenceTrace_code.csv", "csv.gz", 3),
        ("mooncake_conversation_trace.jsonl", "jsonl.gz", 2),
    ],
)
def test_replay_real_traces_with_few_users(
    db: Db, tmp_path: Path, name: str, suffix: str, users: int
) -> None:
    trace = _first_rows(name, 300, tmp_path / f"head.{suffix}")
    report = _replay(db, trace, "--users", str(users), "--credits", "100000")
    assert report["events"] == 300 and report["charged"] == 300
    assert report["users_created"] == users and report["ledger_ok"] is True
    assert sorted(_ids(db)) == [f"user-{i:03d}" for i in range(1, users + 1)]


def test_replay_top_up_buys_through_the_manual_provider_and_retries(db: Db, tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    rows = "".join(f"spender,gpt-4o,100000,1000,2024-05-01T00:00:{i:02d}Z\n" for i in range(10))
    trace.write_text("user,model,input_tokens,output_tokens,timestamp\n" + rows)
    # gpt-4o: (100,000 × $2.50 + 1,000 × $10) / 1M = $0.26 × 1.5 (MEDIUM) × 100 cr/$ = 39
    # credits a request. The spender has 5 bonus credits: every request is refused, the
    # spender buys a Starter package (50 credits) and the refused requests are tried again,
    # one more package per round while some are still refused, then while under 50 credits.
    report = _replay(db, trace, "--credits", "0", "--models", "1", "--top-up", "starter")
    assert (report["rejected"], report["charged"]) == (0, 10)
    assert report["revenue_ucr"] == 10 * 39_000_000
    top_ups = report["top_ups"]
    assert top_ups["users"] == 1 and top_ups["purchases"] == 9  # type: ignore[index]
    assert top_ups["credits_ucr"] == 9 * 50_000_000  # type: ignore[index]
    assert top_ups["paid_uusd"] == 9 * 4_990_000  # type: ignore[index]
    assert report["retried_after_top_up"] == 10
    with db.engine.connect() as conn:
        bought = conn.execute(
            text("select count(*), min(status), min(provider) from purchases")
        ).one()
    assert tuple(bought) == (9, "completed", "manual")
    with db.tx() as session:
        spender = users.find_by_external_ids(session, ["spender"])["spender"]
        balance = wallets.balance(session, spender).balance_ucr
    assert balance == 5_000_000 + 9 * 50_000_000 - 390_000_000  # 65 credits left


def test_replay_top_up_of_an_unknown_package_is_one_line(db: Db, tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("user,model,input_tokens,output_tokens,timestamp\nu,,1,1,0\n")
    code, _, err = _run("replay", str(trace), "--db", db.url, "--top-up", "gold")
    assert code == 2 and "no package 'gold' on sale" in err and "popular" in err


# --- help (issue 12) ------------------------------------------------------------------------


def _commands() -> list[list[str]]:
    found: list[list[str]] = [[]]
    for command in app.registered_commands:
        found.append([command.name or command.callback.__name__.replace("_", "-")])  # type: ignore[union-attr]
    for group in app.registered_groups:
        assert group.name and group.typer_instance
        found.append([group.name])
        for command in group.typer_instance.registered_commands:
            found.append([group.name, command.name or command.callback.__name__])  # type: ignore[union-attr]
    return found


def _continuation_rows(out: str) -> list[str]:
    """Rows of the Commands panel that continue the previous command's help on a new line."""
    if "─ Commands " not in out:
        return []
    panel = out.split("─ Commands ", 1)[1].split("╰", 1)[0]
    rows = [row[1:].rstrip(" │") for row in panel.splitlines()[1:] if row.startswith("│")]
    return [row for row in rows if row.startswith("  ")]


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c) or "modelbank")
def test_help_reads_well(command: list[str]) -> None:
    """Every command's --help, rendered wide: the first paragraph on one line (no break in
    the middle of a sentence), an example in every command's help, a group's command list
    one line per command, and no path of the build machine."""
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "../shared" not in out and "/work/" not in out
    lines = [line.strip(" │") for line in out.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("Usage:")) + 2
    first = lines[start : lines.index("", start)]
    assert len(first) == 1, f"first paragraph broken over lines: {first}"
    assert _continuation_rows(out) == []
    if "─ Commands " not in out:
        assert "Example" in out, f"`modelbank {' '.join(command)} --help` shows no example"


def test_prose_joins_each_paragraph_and_keeps_indented_blocks() -> None:
    text = """First line of a
    sentence that goes on.

    A second
    paragraph.

    Examples:
      modelbank demo
      modelbank demo --json
    """
    assert prose(text) == (
        "First line of a sentence that goes on.\n\nA second paragraph.\n\n"
        "Examples:\n  modelbank demo\n  modelbank demo --json"
    )
