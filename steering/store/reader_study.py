"""Typed store methods of the reader study: login sessions and adjudicated answers.

Kept out of `db.py` so the annotation app's SQL lives in one place; every statement is
SQLAlchemy Core on the tables of `schema`, so it runs unchanged on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, select

from steering.store.schema import adjudications, sessions

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy import Connection, Engine


def _utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes for timezone-aware columns; treat them as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


_SESSION = select(sessions).where(sessions.c.token_hash == bindparam("token_hash"))
"""Looked up on every request of the annotation app: built once."""


class ReaderStudyMixin:
    """Mixed into `StudyStore` (which provides `engine`, `transaction` and `upsert`)."""

    engine: Engine

    # ---- sessions -------------------------------------------------------------------------

    def add_session(self, token_hash: str, annotator: str, credential: str, expires_at: datetime) -> None:
        now = datetime.now(timezone.utc)
        with self.transaction() as conn:  # type: ignore[attr-defined]
            conn.execute(sessions.insert().values(token_hash=token_hash, annotator=annotator,
                                                  credential=credential, created_at=now, expires_at=expires_at))

    def session(self, token_hash: str) -> dict[str, Any] | None:
        """The session row of this token hash (annotator, credential, created_at, expires_at), if any."""
        with self._reads().connect() as conn:  # type: ignore[attr-defined]  # autocommit: no BEGIN/ROLLBACK
            row = conn.execute(_SESSION, {"token_hash": token_hash}).first()
        if row is None:
            return None
        out = dict(row._mapping)
        out["created_at"], out["expires_at"] = _utc(out["created_at"]), _utc(out["expires_at"])
        return out

    def delete_sessions(self, *, token_hash: str | None = None, annotator: str | None = None,
                        expired_before: datetime | None = None) -> int:
        """Remove one session, all of one annotator's, or the expired ones; returns how many."""
        stmt = delete(sessions)
        if token_hash is not None:
            stmt = stmt.where(sessions.c.token_hash == token_hash)
        if annotator is not None:
            stmt = stmt.where(sessions.c.annotator == annotator)
        if expired_before is not None:
            stmt = stmt.where(sessions.c.expires_at < expired_before)
        if token_hash is None and annotator is None and expired_before is None:
            raise ValueError("delete_sessions: say which sessions to delete")
        with self.transaction() as conn:  # type: ignore[attr-defined]
            return int(conn.execute(stmt).rowcount or 0)

    # ---- adjudication ---------------------------------------------------------------------

    def save_adjudication(self, task: str, item_key: str, adjudicator: str, answers: dict[str, Any], *,
                          reason: str, readers: dict[str, dict[str, Any]], seconds: float | None,
                          conn: Connection | None = None) -> None:
        """Store (or revise) the final answer of one item; a revision adds to the time on task."""
        def write(c: Connection) -> None:
            prev = c.execute(select(adjudications.c.seconds).where(
                adjudications.c.task == task, adjudications.c.item_key == item_key)).first()
            total = seconds
            if prev is not None and prev.seconds is not None:
                total = prev.seconds + (seconds or 0.0)
            row = dict(task=task, item_key=item_key, adjudicator=adjudicator, answers=answers, reason=reason,
                       readers=readers, seconds=total, updated_at=datetime.now(timezone.utc))
            self.upsert("adjudications", [row], key=["task", "item_key"], conn=c)  # type: ignore[attr-defined]

        if conn is not None:
            write(conn)
        else:
            with self.transaction() as c:  # type: ignore[attr-defined]
                write(c)

    def adjudication(self, task: str, item_key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(adjudications).where(
                adjudications.c.task == task, adjudications.c.item_key == item_key)).first()
        return dict(row._mapping) if row is not None else None

    def adjudications(self, task: str | None = None) -> list[dict[str, Any]]:
        """Every final answer (of one task), ordered by (task, item_key)."""
        stmt = select(adjudications).order_by(adjudications.c.task, adjudications.c.item_key)
        if task is not None:
            stmt = stmt.where(adjudications.c.task == task)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]
