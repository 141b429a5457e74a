"""Judge response cache keyed by (model, prompt hash): a re-run of the same study costs nothing.

Only answers that passed schema validation are cached, so an error is always retried later.
The cache lives in the study store's `judge_cache` table; `MemoryJudgeCache` serves callers
with no store (e.g. `radsteer label` on a JSONL file).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from steering.store import StudyStore


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

    def __init__(self, store: StudyStore) -> None:
        self.store = store

    def get_many(self, model: str, hashes: Iterable[str]) -> dict[str, dict[str, Any]]:
        return self.store.cached_judge_responses(model, hashes)

    def put(self, model: str, prompt_hash: str, response: dict[str, Any]) -> None:
        self.store.cache_judge_response(model, prompt_hash, response)

    def put_many(self, rows: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Many (model, prompt hash, response) rows in one transaction."""
        self.store.cache_judge_responses(rows)
