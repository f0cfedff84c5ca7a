"""``modelbank demo`` on the data shipped with the package (DESIGN §15; issue 12): the real
Azure trace, users who top up through the manual provider, a few honest rejections, revenue
per category, the margin after creator earnings, and the data's credits."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from modelbank.cli import app
from modelbank.data import AZURE_TRACE, PACKAGED_DATA_DIR, PRICE_SHEET, require
from tests.conftest import Db

runner = CliRunner()


def _demo(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, ["demo", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def packaged(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MODELBANK_DATA_DIR: the data folder is the packaged one."""
    monkeypatch.delenv("MODELBANK_DATA_DIR", raising=False)


@pytest.mark.slow
def test_demo_replays_the_shipped_azure_trace_with_top_ups(db: Db, packaged: None) -> None:
    code, out, err = _demo("--db", db.url, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["trace"] == f"{AZURE_TRACE}.gz" and report["synthetic_trace"] is False
    assert report["events"] == 8_819 and report["ledger_ok"] is True
    assert report["charged"] + report["rejected"] == 8_819
    # sustained traffic: users top up; the few left rejected ran past their 15 packages
    assert 0 < report["rejected"] < 0.01 * 8_819
    assert set(report["rejected_by_reason"]) == {"insufficient_funds"}
    top_ups = report["top_ups"]
    assert top_ups["purchases"] >= 10 and top_ups["users"] >= 5
    # half the users have auto top-up (issue 13): their charges start the purchases
    auto = report["auto_top_ups"]
    assert auto["purchases"] >= 10 and auto["users"] >= 3
    with db.engine.connect() as conn:
        origins = dict(
            conn.execute(text("select origin, count(*) from purchases group by origin")).all()
        )
    assert origins == {"checkout": top_ups["purchases"], "auto_topup": auto["purchases"]}
    with db.engine.connect() as conn:
        rows = conn.execute(
            text(
                "select count(*), sum(p.credits_ucr), sum(p.price_uusd), min(p.provider),"
                " max(p.provider), min(p.status), max(p.status), count(g.id)"
                " from purchases p join grants g on g.id = p.grant_id"
                " where g.source = 'purchased'"
            )
        ).one()
    assert tuple(rows) == (
        top_ups["purchases"] + auto["purchases"],
        top_ups["credits_ucr"] + auto["credits_ucr"],
        top_ups["paid_uusd"] + auto["paid_uusd"],
        "manual",
        "manual",
        "completed",
        "completed",
        top_ups["purchases"] + auto["purchases"],
    )
    assert top_ups["credits_ucr"] == top_ups["purchases"] * 200_000_000  # Popular: 200 credits
    assert auto["credits_ucr"] == auto["purchases"] * 200_000_000
    # revenue per category adds up; the margin is after provider cost and creator earnings
    categories = report["by_category"]
    assert {c["category"] for c in categories} >= {"General", "Anime", "Realistic", "Fantasy"}
    assert sum(c["revenue_ucr"] for c in categories) == report["revenue_ucr"]
    assert sum(c["creator_earnings_ucr"] for c in categories) == report["creator_earnings_ucr"]
    assert report["margin_ucr"] == (
        report["revenue_ucr"] - report["provider_cost_uusd"] * 100 - report["creator_earnings_ucr"]
    )
    with db.engine.connect() as conn:
        charged = conn.execute(text("select sum(charge_ucr) from usage_events")).scalar_one()
    assert charged == report["revenue_ucr"]
    credits = " ".join(report["data_sources"])
    for fragment in ("Azure Public Dataset", "CC-BY-4.0", "LiteLLM", "MIT", "genai-prices"):
        assert fragment in credits


def test_demo_text_report_names_its_data_and_categories(tmp_path: Path, packaged: None) -> None:
    trace = tmp_path / "short.csv.gz"  # the real trace's first 400 requests
    lines = gzip.decompress(require(PACKAGED_DATA_DIR, AZURE_TRACE).read_bytes()).splitlines()
    trace.write_bytes(gzip.compress(b"\r\n".join(lines[:401])))
    code, out, err = _demo("--db", f"sqlite:///{tmp_path / 'd.db'}", "--trace", str(trace))
    assert code == 0, err
    assert "revenue per model category" in out and "margin after creator earnings" in out
    assert "data: trace: " in out and "short.csv.gz" in out
    assert "data: image costs: LiteLLM model price sheet" in out


def test_demo_synthetic_trace_only_when_asked(tmp_path: Path) -> None:
    env = {"MODELBANK_DATA_DIR": str(tmp_path / "nothing-here")}  # not even read
    code, out, err = _demo(
        "--db", f"sqlite:///{tmp_path / 'd.db'}", "--synthetic", "--json",
        "--prices", str(require(PACKAGED_DATA_DIR, PRICE_SHEET)), env=env,
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["synthetic_trace"] is True and report["trace"] == "synthetic"
    assert "not real traffic" in report["data_sources"][0]
    assert report["events"] == 8_819 and report["ledger_ok"] is True


def test_demo_without_its_data_is_a_one_line_error(tmp_path: Path) -> None:
    env = {"MODELBANK_DATA_DIR": str(tmp_path)}
    code, _, err = _demo("--db", f"sqlite:///{tmp_path / 'd.db'}", env=env)
    assert code == 2
    assert err.startswith("error:") and AZURE_TRACE in err and "[data_file_missing]" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d.db").exists()  # nothing was written
