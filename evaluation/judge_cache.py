"""Judge response cache keyed by (model, prompt hash): a re-run of the same study costs nothing.

Only answers that passed schema validation are cached, so an error is always retried later.
The cache lives in the study store's `judge_cache` table; `MemoryJudgeCache` serves callers
with no store (e.g. `radsteer label` on a JSONL file).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from sqlalchemy import select

from steering.store import StudyStore
from steering.store.schema import judge_cache


class JudgeCache(Protocol):
    def get_many(self, model: str, hashes: Iterable[str]) -> dict[str, dict[str, Any]]: ...

    def put(self, model: str, prompt_hash: str, response: dict[str, Any]) -> None: ...


class MemoryJudgeCache:
    """A process-local cache (tests, one-off labelling)."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], dict[str, Any]] = {}

    def get_many(self, model: str, hashes: Iterable[str]) -> dict[str, dict[str, Any]]:
        return {h: self._data[(model, h)] for h in hashes if (model, h) in self._data}

    def put(self, model: str, prompt_hash: str, response: dict[str, Any]) -> None:
        self._data[(model, prompt_hash)] = response


class StoreJudgeCache:
    """The `judge_cache` table of a study store."""

    _CHUNK = 500  # stay well below SQLite's bound-parameter limit

    def __init__(self, store: StudyStore) -> None:
        self.store = store

    def get_many(self, model: str, hashes: Iterable[str]) -> dict[str, dict[str, Any]]:
        wanted = sorted(set(hashes))
        out: dict[str, dict[str, Any]] = {}
        with self.store.engine.connect() as conn:
            for i in range(0, len(wanted), self._CHUNK):
                chunk = wanted[i : i + self._CHUNK]
                stmt = select(judge_cache.c.prompt_hash, judge_cache.c.response).where(
                    judge_cache.c.model == model, judge_cache.c.prompt_hash.in_(chunk)
                )
                out.update({r.prompt_hash: r.response for r in conn.execute(stmt)})
        return out

    def put(self, model: str, prompt_hash: str, response: dict[str, Any]) -> None:
        self.store.upsert(
            "judge_cache", [{"model": model, "prompt_hash": prompt_hash, "response": response}],
            key=["model", "prompt_hash"],
        )

    def put_many(self, rows: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Many (model, prompt hash, response) rows in one transaction."""
        for i in range(0, len(rows), self._CHUNK):
            self.store.upsert("judge_cache", [{"model": m, "prompt_hash": h, "response": r}
                                              for m, h, r in rows[i : i + self._CHUNK]],
                              key=["model", "prompt_hash"])
