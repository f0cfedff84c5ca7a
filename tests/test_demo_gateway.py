"""``modelbank demo --gateway`` (issue 14 item 7; DESIGN §9, §15): fake upstreams in-process,
keys deposited through the API, part of the real Azure trace sent through ``/v1`` with the
official ``openai`` client; the report's figures agree with each other and with the plan, a
seeded flaky upstream forces at least one failover, and the ledger (pool invariant included)
is ok. One run on a fresh SQLite database in a temporary folder (the command's default)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from modelbank.cli import app
from modelbank.data import AZURE_TRACE, PACKAGED_DATA_DIR, require
from modelbank.demo_gateway import GatewayReport, emit_report
from modelbank.demo_gateway.report import ResourceLine
from modelbank.demo_gateway.run import DEPOSITS, TRIAL_CALLERS, plan
from modelbank.traces.readers import read_trace

EVENTS = 40


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One demo run's JSON report (module scope: the run takes a few seconds)."""
    env = {"MODELBANK_DATA_DIR": str(PACKAGED_DATA_DIR)}
    result = CliRunner().invoke(app, ["demo", "--gateway", "--events", str(EVENTS), "--json"],
                                env=env)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_every_request_is_served_failed_or_refused(report: dict[str, Any]) -> None:
    assert report["events"] == EVENTS
    assert report["served"] + report["failed"] + report["refused"] == EVENTS
    # the refused are exactly the trial callers' requests (0.01 credit: every hold fails)
    requests = read_trace(require(PACKAGED_DATA_DIR, AZURE_TRACE))[:EVENTS]
    planned = plan(requests, report["models"], seed=0)
    trial = sum(1 for user, *_ in planned.calls if user in TRIAL_CALLERS)
    assert trial > 0 and report["refused"] == trial
    assert report["streamed"] == sum(1 for *_, stream in planned.calls if stream)
    assert report["prompt_capped"] == sum(1 for r in requests if r.input_tokens > 4_096)
    # every served request has a route log naming the resource that served it
    assert report["route_outcomes"].get("served", 0) == report["served"]
    served = [r["served"] for r in report["resources"]]
    assert sum(served) == report["served"]
    assert sum(r["share"] for r in report["resources"]) == pytest.approx(1.0)


def test_the_flaky_upstream_is_failed_over(report: dict[str, Any]) -> None:
    flaky = next(r for r in report["resources"] if r["upstream"] == "flaky")
    # seed 1: the first request to reach the flaky upstream fails, the next resource serves it
    assert flaky["failed_attempts"] >= 1
    assert report["failovers"] >= 1 and report["failovers_served"] == report["failovers"]
    assert report["failed"] == 0
    others = [r for r in report["resources"] if r["upstream"] != "flaky"]
    assert all(r["failed_attempts"] == 0 for r in others)
    assert sum(r["attempts"] for r in report["resources"]) == report["served"] + sum(
        r["failed_attempts"] for r in report["resources"]
    )
    assert {r["breaker"] for r in report["resources"]} <= {"closed", "open", "half_open"}


def test_deposits_spread_and_ledger(report: dict[str, Any]) -> None:
    resources = report["resources"]
    assert [r["owner"] for r in resources] == ["platform", *(d[0] for d in DEPOSITS)]
    platform, *deposited = resources
    assert (platform["deposit_credit_ucr"], platform["fee_ucr"]) == (0, 0)
    assert platform["depositor_wallet_ucr"] is None
    for line, (_, upstream, quota_uusd) in zip(deposited, DEPOSITS, strict=True):
        assert line["upstream"] == upstream and line["pool_quota_uusd"] == quota_uusd
        # 90 % of the quota's credit value at 100 credits per USD; 10 % to the platform
        assert line["deposit_credit_ucr"] == quota_uusd * 100 * 9 // 10
        assert line["fee_ucr"] == quota_uusd * 100 // 10
        # depositors do not spend: their wallet holds their deposit credit
        assert line["depositor_wallet_ucr"] == line["deposit_credit_ucr"]
    for line in resources:
        # provider cost is booked on the quota; the spread is charge − cost at 100 cr/USD
        assert line["consumed_uusd"] == line["cost_uusd"]
        assert line["spread_ucr"] == line["charge_ucr"] - line["cost_uusd"] * 100
        assert line["served"] == 0 or line["charge_ucr"] > line["cost_uusd"] * 100 > 0
    assert report["charged_ucr"] == report["pool_charge_ucr"] > 0
    assert report["spread_ucr"] == sum(r["spread_ucr"] for r in resources) > 0
    assert report["fees_ucr"] == sum(q for *_, q in DEPOSITS) * 100 // 10
    assert report["ledger_ok"] is True and report["ledger_violations"] == []
    credits = " ".join(report["sources"])
    for fragment in ("Azure Public Dataset", "CC-BY-4.0", "LiteLLM", "MIT"):
        assert fragment in credits


def test_the_report_fits_80_columns(report: dict[str, Any]) -> None:
    fields = {k: v for k, v in report.items() if k not in ("database", "seed")}
    fields["resources"] = [ResourceLine(**r) for r in report["resources"]]
    out = Console(width=80, record=True, file=io.StringIO())
    emit_report(GatewayReport(**fields), as_json=False, console=out, err_console=out, extra={})
    text = out.export_text()
    assert "ledger ok" in text and "routing per resource" in text
    tables = text.split("upstream steady:")[0]
    assert max(len(line) for line in tables.splitlines()) <= 80
