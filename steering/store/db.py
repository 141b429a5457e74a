"""The study store: one database per study, reached only through this class.

SQLite in WAL mode by default (`runs/<name>/study.sqlite`); any SQLAlchemy URL works, so a
multi-site reader study can share a PostgreSQL server. Every write is one transaction, and
every write is idempotent on the table's natural key, which is what makes each step resumable.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, Table, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from steering.errors import RadsteerError
from steering.store import schema
from steering.store.annotation_repo import AnnotationRepositoryMixin
from steering.store.location import DB_FILENAME, public_url, record_url, resolve_url
from steering.store.reader_study import ReaderStudyMixin
from steering.store.repositories import RepositoryMixin
from steering.store.schema import TABLES
from steering.store.versioning import ensure_schema

__all__ = ["DB_FILENAME", "StudyStore"]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint; safe with WAL
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")  # annotators and a sweep may write at once
    cur.close()


class StudyStore(ReaderStudyMixin, RepositoryMixin, AnnotationRepositoryMixin):
    """Access to one study's database.

    >>> store = StudyStore.open("runs/demo")          # runs/demo/study.sqlite
    >>> store = StudyStore("postgresql://host/study")  # any SQLAlchemy URL
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        try:
            # a ping per checkout guards against a server that dropped the connection; a SQLite
            # file has no server, and the ping is a statement per annotation request (issue 14).
            # On a server, the pool keeps as many connections as the annotation app's request
            # threads use at once: with SQLAlchemy's 5, ten readers opened and closed a
            # PostgreSQL connection (a new server process) about every third request.
            server = {} if url.startswith("sqlite") else {"pool_pre_ping": True, "pool_size": 20, "max_overflow": 20}
            self.engine: Engine = create_engine(url, echo=echo, future=True, **server)
        except (SQLAlchemyError, ImportError) as exc:  # unknown dialect, missing driver
            raise RadsteerError(f"study store {public_url(url)}: {str(exc).splitlines()[0]}") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        sqlite_file = Path(self.engine.url.database) if self.is_sqlite and self.engine.url.database else None
        try:  # create, or upgrade to the newest schema version (Alembic); a newer one is refused
            self.upgraded_from = ensure_schema(self.engine, where=public_url(url), sqlite_file=sqlite_file)
        except RadsteerError:
            self.engine.dispose()
            raise
        except SQLAlchemyError as exc:  # unreachable server, wrong database, no permission
            self.engine.dispose()
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise RadsteerError(f"cannot open the study store {public_url(url)}: {reason}") from None

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @classmethod
    def open(cls, run_dir: str | Path, url: str | None = None) -> StudyStore:
        """The study of `run_dir`: at `url`, $RADSTEER_STORE_URL, the URL recorded in the run
        directory, or its study.sqlite (steering.store.location)."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = resolve_url(run_dir, url)
        store = cls(resolved)
        record_url(run_dir, resolved)
        return store

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> StudyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- generic, idempotent writes -------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction: committed on success, rolled back on any exception."""
        with self.engine.begin() as conn:
            yield conn

    def _insert(self, table: Table):
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            return sqlite.insert(table)
        if dialect == "postgresql":
            return postgresql.insert(table)
        raise NotImplementedError(f"the study store supports SQLite and PostgreSQL, not {dialect!r}")

    def insert_ignore(
        self, table: str | Table, rows: Sequence[Mapping[str, Any]], conn: Connection | None = None
    ) -> int:
        """Insert rows, skipping any whose natural key is already stored. Returns rows inserted."""
        if not rows:
            return 0
        t = TABLES[table] if isinstance(table, str) else table
        # RETURNING counts the rows really inserted on both dialects (psycopg reports no
        # rowcount for an executemany); conflicting rows return nothing.
        stmt = self._insert(t).on_conflict_do_nothing().returning(*t.primary_key.columns)
        if conn is not None:
            return len(conn.execute(stmt, list(rows)).all())
        with self.transaction() as c:
            return len(c.execute(stmt, list(rows)).all())

    def upsert(
        self,
        table: str | Table,
        rows: Sequence[Mapping[str, Any]],
        key: Sequence[str],
        conn: Connection | None = None,
    ) -> None:
        """Insert rows or, where the natural `key` exists, update their other columns."""
        if not rows:
            return
        t = TABLES[table] if isinstance(table, str) else table
        ins = self._insert(t)
        cols = [c for c in rows[0] if c not in key]
        stmt = (
            ins.on_conflict_do_update(index_elements=list(key), set_={c: ins.excluded[c] for c in cols})
            if cols
            else ins.on_conflict_do_nothing()
        )
        if conn is not None:
            conn.execute(stmt, list(rows))
            return
        with self.transaction() as c:
            c.execute(stmt, list(rows))

    # ---- reads ----------------------------------------------------------------------------

    def rows(self, table: str, **where: Any) -> list[dict[str, Any]]:
        """All rows of `table` matching column == value filters, as dicts."""
        t = TABLES[table]
        stmt = select(t)
        for col, value in where.items():
            stmt = stmt.where(t.c[col] == value)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def rows_in(self, table: str, column: str, values: Iterable[Any], **where: Any) -> list[dict[str, Any]]:
        """Rows of `table` whose `column` is one of `values` (and matching `where`): a part of a big
        table — e.g. one Ray shard's verdicts — without reading the whole of it."""
        t = TABLES[table]
        values = list(dict.fromkeys(values))
        out: list[dict[str, Any]] = []
        with self.engine.connect() as conn:
            for i in range(0, len(values), 500):
                stmt = select(t).where(t.c[column].in_(values[i : i + 500]))
                for col, value in where.items():
                    stmt = stmt.where(t.c[col] == value)
                out.extend(dict(r._mapping) for r in conn.execute(stmt))
        return out

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(TABLES[table])).scalar_one())

    def dataframe(self, table: str) -> pd.DataFrame:
        """A whole table as a DataFrame: the way results leave the store."""
        t = TABLES[table]
        with self.engine.connect() as conn:
            result = conn.execute(select(t))
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))

    # ---- domain helpers used by several packages ------------------------------------------

    def add_cases(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self.upsert("cases", list(rows), key=["case_id"])

    def add_features(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Insert or update features; a column left out of a row keeps its stored value."""
        groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
        for r in rows:  # one statement per set of columns (rows may carry interpretability or not)
            groups.setdefault(tuple(sorted(r)), []).append(r)
        with self.transaction() as conn:
            for group in groups.values():
                self.upsert("features", group, key=["feature_id"], conn=conn)

    def generation_keys(self, settings_hash: str) -> set[tuple[str, str, float]]:
        """(case_id, feature_id, alpha) of every stored generation with these settings."""
        t = schema.generations
        stmt = select(t.c.case_id, t.c.feature_id, t.c.alpha).where(t.c.settings_hash == settings_hash)
        with self.engine.connect() as conn:
            return {(r.case_id, r.feature_id, float(r.alpha)) for r in conn.execute(stmt)}

    def add_generations(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Store a finished batch in one transaction; rows already stored are left untouched.
        Rows carry `error` only when they failed, so grouping by columns keeps one statement each."""
        groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
        for r in rows:
            groups.setdefault(tuple(sorted(r)), []).append(r)
        n = 0
        with self.transaction() as conn:
            for group in groups.values():
                n += self.insert_ignore("generations", group, conn=conn)
        return n

    def generation_groundings(self, generation_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
        """The stored phrases-with-boxes of these generations (only those generated grounded)."""
        t = schema.generations
        ids = sorted({int(i) for i in generation_ids})
        out: dict[int, list[dict[str, Any]]] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                stmt = select(t.c.id, t.c.grounding).where(t.c.id.in_(ids[i : i + 500]), t.c.grounding.is_not(None))
                out.update({int(r.id): r.grounding for r in conn.execute(stmt) if isinstance(r.grounding, list)})
        return out

    def generations_with_baselines(self) -> pd.DataFrame:
        """Each steered generation beside its case's baseline (same settings, α = 0).

        Columns: generation_id, case_id, feature_id, alpha, settings_hash, text, error,
        baseline_generation_id, baseline_text, baseline_error, description, target_concepts
        (`error`/`baseline_error`: why that generation failed, else None).
        """
        g = self.dataframe("generations")
        if "error" not in g.columns:  # a study made before generations had the column
            g["error"] = None
        f = self.dataframe("features")
        if g.empty:
            return pd.DataFrame(
                columns=[
                    "generation_id", "case_id", "feature_id", "alpha", "settings_hash", "text", "error",
                    "baseline_generation_id", "baseline_text", "baseline_error", "description", "target_concepts",
                ]
            )
        base = g[g.feature_id == schema.BASELINE_FEATURE][["case_id", "settings_hash", "id", "text", "error"]]
        base = base.rename(columns={"id": "baseline_generation_id", "text": "baseline_text",
                                    "error": "baseline_error"})
        steered = g[g.feature_id != schema.BASELINE_FEATURE].rename(columns={"id": "generation_id"})
        out = steered.merge(base, on=["case_id", "settings_hash"], how="left")
        out = out.merge(f[["feature_id", "description", "target_concepts"]], on="feature_id", how="left")
        return out.reset_index(drop=True)

    # ---- feature interpretation (issue 13) --------------------------------------------------

    def mined_feature_ids(self) -> list[str]:
        """Ids of every feature with stored contexts (`radsteer mine`), sorted."""
        t = schema.feature_contexts
        with self.engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(select(t.c.feature_id).distinct()))

    def feature_contexts_by_feature(self, feature_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Stored contexts of these features, grouped by feature, each in (kind, rank) order."""
        t = schema.feature_contexts
        out: dict[str, list[dict[str, Any]]] = {f: [] for f in feature_ids}
        with self.engine.connect() as conn:
            for i in range(0, len(feature_ids), 500):
                part = list(feature_ids[i : i + 500])
                stmt = select(t).where(t.c.feature_id.in_(part)).order_by(t.c.feature_id, t.c.kind, t.c.rank)
                for r in conn.execute(stmt):
                    out[r.feature_id].append(dict(r._mapping))
        return out

    def feature_stats_by_feature(self) -> dict[str, dict[str, Any]]:
        return {r["feature_id"]: r for r in self.rows("feature_stats")}

    def interpretation_hashes(self, explainer: str) -> dict[str, str]:
        """feature_id → settings hash of the stored interpretations by `explainer` (what resumes)."""
        t = schema.feature_interpretations
        stmt = select(t.c.feature_id, t.c.settings_hash).where(t.c.explainer == explainer, t.c.error.is_(None))
        with self.engine.connect() as conn:
            return {r.feature_id: r.settings_hash for r in conn.execute(stmt)}

    def add_interpretations(
        self,
        rows: Sequence[Mapping[str, Any]],
        exchanges: Sequence[Mapping[str, Any]] = (),
        features: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Store finished interpretations, their raw exchanges and the features' new description,
        targets, explainer and F1 (`features` rows: feature_id, source, bank_index, description,
        target_concepts, interpretability, explainer; description/targets left out of a row keep
        the stored ones) in one transaction."""
        with self.transaction() as conn:
            self.upsert("feature_interpretations", list(rows), key=["feature_id", "explainer"], conn=conn)
            if exchanges:
                self.upsert("interpretation_exchanges", list(exchanges),
                            key=["feature_id", "explainer", "stage", "batch"], conn=conn)
            groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
            for f in features:  # rows with the same columns are upserted together
                groups.setdefault(tuple(sorted(f)), []).append(f)
            for group in groups.values():
                self.upsert("features", group, key=["feature_id"], conn=conn)

    def interpretation_for(self, feature_id: str) -> dict[str, Any] | None:
        """The feature's latest stored interpretation without error (None if never interpreted)."""
        t = schema.feature_interpretations
        stmt = (select(t).where(t.c.feature_id == feature_id, t.c.error.is_(None))
                .order_by(t.c.created_at.desc(), t.c.explainer).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return dict(row._mapping) if row is not None else None

    def interpretations(self, explainer: str | None = None) -> pd.DataFrame:
        """The `feature_interpretations` table (optionally one explainer's rows)."""
        df = self.dataframe("feature_interpretations")
        return df if explainer is None else df[df.explainer == explainer].reset_index(drop=True)

