"""The store's schema version (Alembic): every study records it, older studies are upgraded
when opened, newer ones refused.

- A new, empty database gets every table and is stamped with the newest revision.
- A study written before migrations existed (tables, no `alembic_version`) is stamped `0001`
  (the first build's schema) and upgraded from there.
- An older revision is upgraded — for SQLite after copying the file to
  `study.sqlite.bak-<revision>` (an existing backup of that name is never overwritten).
- A revision this installation does not know was written by a newer radsteer: refused, with
  both version numbers, before anything is changed.

Migrations live in `steering/store/migrations/versions/`; a test upgrades a first-build study to
the newest revision and checks the result equals `schema.metadata`, so a table or column added
to `schema.py` without its migration fails the tests.
"""

from __future__ import annotations

import sqlite3
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from steering.errors import RadsteerError
from steering.store import schema

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
FIRST_REVISION = "0001"
_PG_LOCK = 0x7261647374  # "radst": one schema change at a time per PostgreSQL database


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    head = _script().get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    return {r.revision for r in _script().walk_revisions()}


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def backup_sqlite(db_file: Path, revision: str) -> Path:
    """A consistent copy (SQLite's backup API: WAL contents included) beside the study."""
    target = db_file.with_name(f"{db_file.name}.bak-{revision}")
    if target.exists():
        return target  # an earlier attempt's copy of the same revision: keep it as it is
    tmp = target.with_name(target.name + ".tmp")
    src, dst = sqlite3.connect(db_file), sqlite3.connect(tmp)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal/-shm beside it
    finally:
        dst.close()
        src.close()
    tmp.replace(target)
    return target


def ensure_schema(engine: Engine, *, where: str, sqlite_file: Path | None = None) -> str | None:
    """Bring the database to the newest schema; returns the revision it was upgraded from
    (None when nothing had to be upgraded). `where` names the study in messages."""
    head = head_revision()
    with engine.connect() as conn:  # a cheap look first: most opens find the newest revision
        found = current_revision(conn)
        legacy = found is None and inspect(conn).has_table("generations")
    if found is not None and found not in known_revisions():
        raise RadsteerError(
            f"{where}: the study's schema version {found} is newer than this radsteer's ({head}); "
            f"upgrade radsteer (pip install -U radsteer) to open it")
    upgraded_from = FIRST_REVISION if legacy else (found if found not in (None, head) else None)
    if upgraded_from is not None and sqlite_file is not None and sqlite_file.exists():
        backup_sqlite(sqlite_file, upgraded_from)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
        found = current_revision(conn)  # again, under the lock: another process may have done it
        cfg = _config(conn)
        if found is None and not inspect(conn).has_table("generations"):
            schema.metadata.create_all(conn)
            command.stamp(cfg, head)
            return None
        if found is None:
            command.stamp(cfg, FIRST_REVISION)
            found = FIRST_REVISION
        if found != head:
            command.upgrade(cfg, head)
        schema.metadata.create_all(conn)  # checkfirst: only what is missing (never alters a table)
    return upgraded_from
