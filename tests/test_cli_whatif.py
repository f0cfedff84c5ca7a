"""``modelbank replay TRACE --what-if / --markup / --demand``: the trace priced under today's
and proposed prices, nothing written; today's figures are what the replay then charges."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func, select, text
from typer.testing import CliRunner

from modelbank.cli import app
from modelbank.db.models import metadata
from tests.analytics.whatif_history import write_sheet
from tests.conftest import Db

runner = CliRunner()


def _trace(folder: Path) -> Path:
    rows = ["user,model,input_tokens,output_tokens,timestamp"]
    rows += [f",,{1000 + 37 * i},{100 + 11 * i},2024-05-01T00:00:{i:02d}Z" for i in range(40)]
    rows.append("alice0,gpt-4o,5000,700,2024-05-01T00:01:00Z")
    path = folder / "t.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def _counts(db: Db) -> dict[str, int]:
    with db.engine.connect() as conn:
        return {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in metadata.sorted_tables
            if t.name != "reference_epoch"
        }


def _run(db: Db, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["replay", *args, "--db", db.url])
    return result.exit_code, result.stdout, result.stderr


def test_markup_what_if_writes_nothing_and_today_is_what_the_replay_charges(
    db: Db, tmp_path: Path
) -> None:
    trace, sheet = _trace(tmp_path), write_sheet(tmp_path)
    common = ["--prices", str(sheet), "--users", "5", "--models", "3", "--credits", "1000"]
    before = _counts(db)
    code, out, err = _run(db, str(trace), *common, "--markup", "medium=1.65", "--json")
    assert code == 0, err
    assert _counts(db) == before  # no user, model, grant, transfer or usage row stays
    report = json.loads(out)
    assert report["what_if"] is True and report["now"]["events"] == 41
    changed = {m["model"] for m in report["models"] if m["changed"]}
    assert changed == {"gpt-4o"}  # the only MEDIUM model
    for m in report["models"]:
        if m["model"] != "gpt-4o":
            assert m["now"] == m["proposed"]
    assert report["difference"]["revenue_ucr"] > 0
    assert report["users_dry_now"] == 0
    # the same trace replayed for real charges exactly today's figures, model by model
    code, out, err = _run(db, str(trace), *common, "--json")
    assert code == 0, err
    charged = json.loads(out)
    assert charged["charged"] == 41
    assert charged["revenue_ucr"] == report["now"]["revenue_ucr"]
    assert charged["provider_cost_uusd"] == report["now"]["cost_uusd"]
    assert charged["creator_earnings_ucr"] == report["now"]["earnings_ucr"]
    with db.engine.connect() as conn:
        by_model = dict(
            conn.execute(
                text(
                    "select m.slug, sum(u.charge_ucr) from usage_events u"
                    " join models m on m.id = u.model_id group by m.slug"
                )
            ).all()
        )
    assert by_model == {m["model"]: m["now"]["revenue_ucr"] for m in report["models"]}


def test_current_sheet_what_if_changes_nothing_and_prints_a_table(db: Db, tmp_path: Path) -> None:
    trace, sheet = _trace(tmp_path), write_sheet(tmp_path)
    common = ["--prices", str(sheet), "--users", "5", "--models", "3", "--credits", "1"]
    code, out, err = _run(db, str(trace), *common, "--what-if", str(sheet), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert set(report["difference"].values()) == {0}
    assert not any(m["changed"] for m in report["models"])
    assert report["users_dry_now"] == report["users_dry_proposed"] > 0  # 1 credit each
    # the wallets simulated are the replay's: it refuses exactly the unfunded events
    code, out, err = _run(db, str(trace), *common, "--json")
    assert code == 0, err
    charged = json.loads(out)
    now = report["now"]
    assert charged["rejected"] == now["unfunded_events"] > 0
    assert charged["revenue_ucr"] == now["revenue_ucr"] - now["unfunded_ucr"]
    code, out, err = _run(
        db, str(trace), *common, "--demand", "gpt-4o-mini=low", "--markup", "LARGE=2"
    )  # the replay's users exist now: their wallets are what the replay left
    assert code == 0, err
    assert "price what-if" in out and "total" in out and "run dry" in out
    assert "price changed" in out and out.count(" *") >= 2  # two models marked changed


def test_bad_overrides_are_one_line_errors_and_write_nothing(tmp_path: Path) -> None:
    trace, url = _trace(tmp_path), f"sqlite:///{tmp_path / 'x.db'}"
    for bad in (
        ["--markup", "huge=2"],
        ["--markup", "large=-1"],
        ["--demand", "gpt-4o=extreme"],
        ["--what-if", str(tmp_path / "missing.json")],
    ):
        result = runner.invoke(app, ["replay", str(trace), "--db", url, *bad])
        assert result.exit_code == 2, (bad, result.stdout)
        err = result.stderr.strip()
        assert err.startswith("error:") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x.db").exists()
    result = runner.invoke(
        app, ["replay", str(trace), "--db", url, "--demand", "no-such-model=high"]
    )
    assert result.exit_code == 2 and "unknown model 'no-such-model'" in result.stderr
