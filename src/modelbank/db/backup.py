"""Backup and restore of the whole database (issue 16 part 6).

* SQLite: the online backup API (``sqlite3.Connection.backup``): a consistent copy of a live
  database, page by page, while writers go on; restore copies a backup back the same way.
* PostgreSQL: ``pg_dump --format=custom`` (one consistent snapshot, compressed) and
  ``pg_restore --clean --if-exists`` into a script that ``psql --single-transaction`` runs
  (all or nothing). A URL whose ``options`` set a ``search_path`` (one schema per
  deployment or test) dumps that schema only. The tools come with PostgreSQL (``pg_dump``
  ≥ the server's major version; ``psql``).

The CLI (``modelbank backup`` / ``modelbank restore``) runs ``verify --chain`` after each:
on the backup's own snapshot (SQLite: the copy; PostgreSQL: the snapshot ``pg_dump`` read,
exported to the verifying transaction) and on the restored database.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL, make_url

from modelbank.db.engine import normalise_url
from modelbank.errors import DomainError

T = TypeVar("T")

SQLITE_PAGES_PER_STEP = 1_024
"""Pages copied per backup step (4 MB): writers get the lock between steps."""
TOOL_TIMEOUT_S = 3_600
"""pg_dump / pg_restore may run for an hour at most (a run always ends)."""


class BackupFailed(DomainError):
    """A backup or restore could not be made (missing tool, unreadable file, tool error)."""

    code = "backup_failed"


def backend(url: str) -> str:
    """``sqlite`` or ``postgresql`` for a database URL."""
    return make_url(normalise_url(url)).get_backend_name()


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///`` URL. Raises :class:`BackupFailed` for ``:memory:``."""
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupFailed("an in-memory SQLite database cannot be backed up or restored")
    return Path(database)


def sqlite_copy(source: Path, target: Path) -> None:
    """Copy the SQLite database ``source`` onto ``target`` with the online backup API
    (``target`` is replaced, a live ``source`` stays writable between steps)."""
    if not source.exists():
        raise BackupFailed(f"no SQLite database at {source}")
    src = sqlite3.connect(source)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst, pages=SQLITE_PAGES_PER_STEP)
        finally:
            dst.close()
    except sqlite3.DatabaseError as exc:
        raise BackupFailed(f"SQLite backup {source} → {target} failed: {exc}") from None
    finally:
        src.close()


def sqlite_revision(path: Path) -> str | None:
    """The Alembic revision stored in the SQLite file ``path`` (read-only), or None when it
    is not a SQLite database with a modelbank schema."""
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError:
        return None
    finally:
        conn.close()
    return None if row is None else str(row[0])


def libpq(url: str) -> tuple[str, str | None]:
    """A libpq connection URI for a SQLAlchemy PostgreSQL ``url`` (driver dropped) and the
    schema its ``options`` put first on the ``search_path`` (None when none is set)."""
    parsed: URL = make_url(normalise_url(url)).set(drivername="postgresql")
    options = parsed.query.get("options")
    option = options[0] if isinstance(options, tuple) else options
    found = re.search(r"search_path=([A-Za-z_][A-Za-z0-9_]*)", option or "")
    return parsed.render_as_string(hide_password=False), found.group(1) if found else None


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupFailed(f"{name} not found on PATH (it comes with the PostgreSQL client)")
    return found


def _run(args: list[str]) -> None:
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise BackupFailed(f"{Path(args[0]).name} took over {TOOL_TIMEOUT_S} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise BackupFailed(f"{Path(args[0]).name} failed ({done.returncode}): {last}")


def pg_dump_snapshot(engine: Engine, url: str, path: Path, check: Callable[[Connection], T]) -> T:
    """Dump the database of ``url`` to ``path`` (custom format) from a snapshot that
    ``check(connection)`` also reads: the snapshot is exported by a REPEATABLE READ
    transaction, handed to ``pg_dump --snapshot``, then checked in that transaction; so what
    ``check`` returns describes exactly what the file holds."""
    uri, schema = libpq(url)
    dump = _tool("pg_dump")
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            args = [dump, "--format=custom", "--no-owner", f"--snapshot={snapshot}"]
            args += [f"--file={path}", f"--dbname={uri}"]
            if schema:
                args.append(f"--schema={schema}")
            _run(args)
            return check(conn)


PARTITION_CONSTRAINT_DROP = re.compile(
    r"^ALTER TABLE IF EXISTS ONLY \S+\.(usage_events|transfers|route_logs)_(y\d{4}m\d{2}|default)"
    r" DROP CONSTRAINT IF EXISTS "
)
"""The ``--clean`` statements pg_restore (PostgreSQL 15) writes for a month partition's own
primary key: PostgreSQL refuses them (the constraint is the parent's, inherited) and they
are not needed (dropping the partition drops it)."""


def pg_restore(url: str, path: Path) -> None:
    """Restore the custom-format dump ``path`` into the database of ``url``: its objects are
    dropped first when present (``--clean --if-exists``), in one transaction (``psql
    --single-transaction``, stopping at the first error, so nothing is half-restored).

    The dump becomes a SQL script first (``pg_restore --file``) so that the drops of the
    month partitions' inherited constraints (:data:`PARTITION_CONSTRAINT_DROP`) can be left
    out of it; raises :class:`BackupFailed` when a tool is missing or fails."""
    if not path.is_file():
        raise BackupFailed(f"no backup file at {path}")
    uri, _schema = libpq(url)
    with tempfile.TemporaryDirectory(prefix="modelbank-restore-") as work:
        script = Path(work) / "restore.sql"
        args = [_tool("pg_restore"), "--clean", "--if-exists", "--no-owner"]
        _run([*args, f"--file={script}", str(path)])
        runnable = Path(work) / "restore-runnable.sql"
        _without_partition_constraint_drops(script, runnable)
        psql = [_tool("psql"), "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1"]
        _run([*psql, "--single-transaction", f"--file={runnable}", f"--dbname={uri}"])


def _without_partition_constraint_drops(script: Path, target: Path) -> None:
    """Copy ``script`` to ``target`` line by line, leaving out the partition constraint
    drops; only in the clean section (before the first ``CREATE``), never in the data."""
    cleaning = True
    with script.open(encoding="utf-8") as source, target.open("w", encoding="utf-8") as out:
        for line in source:
            if cleaning and line.startswith("CREATE "):
                cleaning = False
            if cleaning and PARTITION_CONSTRAINT_DROP.match(line):
                continue
            out.write(line)


def is_pg_dump(path: Path) -> bool:
    """True when ``path`` starts like a pg_dump custom-format archive."""
    with path.open("rb") as file:
        return file.read(5) == b"PGDMP"


def describe(value: Any) -> str:
    """Bytes as a short human size (``12.3 MB``)."""
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"
