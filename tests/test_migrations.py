"""Schema migrations: a study written by the first build's schema (tests/data/study_v0.sqlite)
is upgraded on open after a backup, keeps every row, and ends exactly at `schema.metadata`
(on SQLite and PostgreSQL); a study from a newer radsteer is refused with both versions."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect, text

from steering.errors import RadsteerError
from steering.store import StudyStore
from steering.store.schema import metadata
from steering.store.versioning import FIRST_REVISION, _config, head_revision

V0 = Path(__file__).parent / "data" / "study_v0.sqlite"
V0_TABLES = ["cases", "features", "generations", "extractions", "verdicts", "judge_cache", "annotations",
             "queue_items", "feature_contexts", "feature_stats", "mining_progress", "mining_state",
             "activation_checks"]


def _counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as con:
        return {t: con.execute(f"select count(*) from {t}").fetchone()[0] for t in V0_TABLES}  # noqa: S608


def _version(db: Path) -> str:
    with sqlite3.connect(db) as con:
        return con.execute("select version_num from alembic_version").fetchone()[0]


def test_first_build_study_is_backed_up_and_upgraded(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    db = run / "study.sqlite"
    shutil.copyfile(V0, db)
    before = _counts(db)
    with StudyStore.open(run) as store:
        assert store.upgraded_from == FIRST_REVISION
        assert store.rows("features")[0]["explainer"] is None  # the new column, on an old row
        assert store.rows("mining_state")[0]["state"] == b"\x00\x01"
        assert [g["text"] for g in store.rows("generations", case_id="c1")][0] == "c1: No effusion."
    backup = run / f"study.sqlite.bak-{FIRST_REVISION}"
    assert backup.read_bytes() == V0.read_bytes() or _counts(backup) == before
    with sqlite3.connect(backup) as con:  # the copy is the old study, untouched
        assert not con.execute("select name from sqlite_master where name='alembic_version'").fetchall()
    assert _counts(db) == before and _version(db) == head_revision()
    with StudyStore.open(run) as store:  # opened again: nothing to upgrade, no second backup
        assert store.upgraded_from is None
    assert sorted(p.name for p in run.iterdir() if ".bak-" in p.name) == [backup.name]


def _diff_after_upgrade(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            command.stamp(_config(conn), FIRST_REVISION)
            command.upgrade(_config(conn), "head")
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()


def test_migrations_end_exactly_at_the_schema_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "v0.sqlite"
    shutil.copyfile(V0, db)
    diff = _diff_after_upgrade(f"sqlite:///{db}")
    assert diff == [], f"schema.py changed without a migration in steering/store/migrations: {diff}"


@pytest.mark.postgres
def test_migrations_end_exactly_at_the_schema_postgres(pg_url: str) -> None:
    # The first build's tables on the server (SQLite's reflected types do not exist in PostgreSQL):
    # those of today's schema that the fixture has, less the columns added since.
    v0 = MetaData()
    lite = create_engine(f"sqlite:///{V0}")
    fixture = {t: {c["name"] for c in inspect(lite).get_columns(t)} for t in V0_TABLES}
    fixture_indexes = {t: {i["name"] for i in inspect(lite).get_indexes(t)} for t in V0_TABLES}
    lite.dispose()
    for table in metadata.sorted_tables:
        if table.name in fixture:
            copy = table.to_metadata(v0)
            for index in list(copy.indexes):  # and less the indexes added since
                if index.name not in fixture_indexes[table.name]:
                    copy.indexes.discard(index)
    pg = create_engine(pg_url)
    v0.create_all(pg)
    with pg.begin() as conn:
        for name, cols in fixture.items():
            for col in set(v0.tables[name].c.keys()) - cols:
                conn.execute(text(f'ALTER TABLE {name} DROP COLUMN "{col}"'))
    pg.dispose()
    diff = _diff_after_upgrade(pg_url)
    assert diff == [], f"schema.py changed without a migration in steering/store/migrations: {diff}"
    with StudyStore(pg_url) as store:
        assert store.upgraded_from is None and store.count("generations") == 0


def test_newer_study_is_refused_with_both_versions(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with StudyStore.open(run):
        pass
    db = run / "study.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("update alembic_version set version_num='9999'")
    data = db.read_bytes()
    with pytest.raises(RadsteerError, match=f"schema version 9999 is newer than this radsteer's \\({head_revision()}\\)"):
        StudyStore.open(run)
    assert db.read_bytes() == data and not list(run.glob("*.bak-*"))


def test_new_study_starts_at_the_newest_revision(tmp_path: Path) -> None:
    with StudyStore.open(tmp_path) as store:
        assert store.upgraded_from is None
    assert _version(tmp_path / "study.sqlite") == head_revision()
