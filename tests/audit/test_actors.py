"""Who an audit record names (issue 16 part 3): the CLI as ``cli``, code outside any request
as ``system``, a block run :func:`acting_as` someone as them; a rolled-back action leaves
no record."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from modelbank.audit import service as audit
from modelbank.audit.context import Actor, acting_as, current_actor, request_id_from
from modelbank.audit.models import audit_records_table as records
from modelbank.cli.app import app
from modelbank.platform import service as platform
from tests.conftest import Db


def _rows(db: Db) -> list[tuple[str, str, str | None]]:
    with db.tx() as session:
        return [
            (r.action, r.actor_kind, r.target_id)
            for r in session.execute(
                select(records).where(records.c.action.in_(["key.create", "setting.set"]))
            )
        ]


def test_cli_system_and_acting_as(db: Db) -> None:
    result = CliRunner().invoke(app, ["keys", "create", "--role", "admin", "--db", db.url])
    assert result.exit_code == 0, result.output
    with acting_as(Actor("system")), db.tx() as session:  # the CLI set "cli" for this thread
        assert current_actor().kind == "system"
        platform.put(session, "x_setting", 1)
    with acting_as(Actor("stripe")), db.tx() as session:
        platform.put(session, "x_setting", 2)
    with pytest.raises(RuntimeError), acting_as(Actor("system")), db.tx() as session:
        platform.put(session, "x_setting", 3)
        raise RuntimeError("rolled back: no record")
    assert _rows(db) == [
        ("key.create", "cli", "1"),
        ("setting.set", "system", "x_setting"),
        ("setting.set", "stripe", "x_setting"),
    ]
    with db.tx() as session:
        found, _ = audit.page(session, audit.AuditFilter(action="setting.set"))
    assert [(r["before"], r["after"]) for r in found] == [(1, 2), (None, 1)]


def test_request_ids_are_kept_only_when_sane() -> None:
    assert request_id_from("req-1.2:3_x") == "req-1.2:3_x"
    for bad in (None, "", "a b", "x" * 65, "é", "<script>"):
        made = request_id_from(bad)
        assert made != bad and len(made) == 32
