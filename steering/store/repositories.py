"""Typed store methods for the judge cache and the feature miner, so that no module outside
`steering.store` writes SQL: every statement here is SQLAlchemy Core on `schema`'s tables and
runs unchanged on SQLite and PostgreSQL (both are tested)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from steering.store.schema import feature_contexts, feature_stats, judge_cache, mining_progress, mining_state

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy import Engine

_CHUNK = 500  # ids per IN (...): well below SQLite's bound-parameter limit


@dataclass(frozen=True)
class MiningCheckpoint:
    """The miner's running state for one corpus (mining key) and how many documents it covers."""

    corpus_hash: str
    n_docs: int
    state: bytes


def _chunks(items: Sequence[Any], n: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


class RepositoryMixin:
    """Mixed into `StudyStore` (which provides `engine`, `transaction`, `upsert`, `insert_ignore`)."""

    engine: Engine

    # ---- judge cache ----------------------------------------------------------------------

    def cached_judge_responses(self, model: str, prompt_hashes: Iterable[str]) -> dict[str, dict[str, Any]]:
        """prompt hash -> cached response, for the hashes that have one."""
        wanted = sorted(set(prompt_hashes))
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for part in _chunks(wanted):
                stmt = select(judge_cache.c.prompt_hash, judge_cache.c.response).where(
                    judge_cache.c.model == model, judge_cache.c.prompt_hash.in_(part))
                out.update({r.prompt_hash: r.response for r in conn.execute(stmt)})
        return out

    def cache_judge_response(self, model: str, prompt_hash: str, response: dict[str, Any]) -> None:
        self.upsert("judge_cache", [{"model": model, "prompt_hash": prompt_hash, "response": response}],  # type: ignore[attr-defined]
                    key=["model", "prompt_hash"])

    def cache_judge_responses(self, rows: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """Many (model, prompt hash, response) rows in one transaction (batched writers, issue 13)."""
        if not rows:
            return
        with self.transaction() as conn:  # type: ignore[attr-defined]
            for part in _chunks(list(rows)):
                self.upsert("judge_cache", [{"model": m, "prompt_hash": h, "response": r} for m, h, r in part],  # type: ignore[attr-defined]
                            key=["model", "prompt_hash"], conn=conn)

    # ---- feature mining -------------------------------------------------------------------

    def mining_checkpoint(self, corpus_hash: str) -> MiningCheckpoint | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(mining_state).where(mining_state.c.corpus_hash == corpus_hash)).first()
        return None if row is None else MiningCheckpoint(row.corpus_hash, int(row.n_docs), bytes(row.state))

    def mined_documents(self, corpus_hash: str, doc_ids: Sequence[str]) -> set[str]:
        """Which of `doc_ids` the checkpointed state of this corpus already covers."""
        out: set[str] = set()
        with self.engine.connect() as conn:
            for part in _chunks(list(doc_ids)):
                stmt = select(mining_progress.c.doc_id).where(mining_progress.c.corpus_hash == corpus_hash,
                                                              mining_progress.c.doc_id.in_(part))
                out.update(r.doc_id for r in conn.execute(stmt))
        return out

    def save_mining_checkpoint(self, checkpoint: MiningCheckpoint, doc_ids: Sequence[str]) -> None:
        """The state and the documents it covers, in one transaction: never one without the other."""
        with self.transaction() as conn:  # type: ignore[attr-defined]
            self.upsert("mining_state", [{"corpus_hash": checkpoint.corpus_hash, "n_docs": checkpoint.n_docs,  # type: ignore[attr-defined]
                                          "state": checkpoint.state}], key=["corpus_hash"], conn=conn)
            self.insert_ignore("mining_progress", [{"corpus_hash": checkpoint.corpus_hash, "doc_id": d}  # type: ignore[attr-defined]
                                                   for d in doc_ids], conn=conn)

    def replace_feature_evidence(self, feature_ids: Sequence[str], contexts: Iterable[dict[str, Any]],
                                 stats: Sequence[dict[str, Any]], *, chunk: int = 5000) -> int:
        """Replace these features' top contexts and activation statistics in one transaction;
        returns the contexts stored."""
        n = 0
        with self.transaction() as conn:  # type: ignore[attr-defined]
            for part in _chunks(list(feature_ids)):
                conn.execute(delete(feature_contexts).where(feature_contexts.c.feature_id.in_(part)))
                conn.execute(delete(feature_stats).where(feature_stats.c.feature_id.in_(part)))
            rows: list[dict[str, Any]] = []
            for row in contexts:
                rows.append(row)
                if len(rows) >= chunk:
                    n += self.insert_ignore("feature_contexts", rows, conn=conn)  # type: ignore[attr-defined]
                    rows = []
            n += self.insert_ignore("feature_contexts", rows, conn=conn)  # type: ignore[attr-defined]
            for part in _chunks(list(stats), chunk):
                self.insert_ignore("feature_stats", list(part), conn=conn)  # type: ignore[attr-defined]
        return n
