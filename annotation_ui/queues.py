"""Per-annotator queues: seeded, randomised, recorded in `queue_items`, with double reads.

Why recorded rather than recomputed: a queue must survive a restart, a changed accounts file
and a sweep that adds items later, and the study report must be able to say who read what in
which order. Building is therefore incremental and idempotent:

* items that no queue holds yet are shuffled (seeded) and dealt to the least-loaded
  annotators; a fraction `overlap` of them goes to two annotators (double read, for
  inter-rater agreement);
* an annotator who joins after queues exist receives a fair share of the least-read items;
* each annotator's new items are appended in their own seeded random order, disagreement-
  flagged items first when configured.
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass

from steering.store import StudyStore
from steering.store.annotation_repo import QueueEntry, QueueItem

TASKS = ("change", "feature")
__all__ = ["TASKS", "QueueConfig", "QueueItem", "disagreement_items", "queue_of", "sync_queues", "task_items"]


@dataclass(frozen=True)
class QueueConfig:
    overlap: float = 0.2
    seed: int = 0
    disagreements_first: bool = True  # as `radsteer annotate` (annotate.disagreements_first)

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap <= 1.0:
            from steering.errors import RadsteerError

            raise RadsteerError(f"--overlap {self.overlap}: must be between 0 and 1")


def task_items(store: StudyStore, task: str) -> list[str]:
    """Keys of everything there is to annotate: steered generations that have a baseline
    (task "change", key = generation id) or features (task "feature", key = feature id)."""
    if task == "change":
        return [str(i) for i in store.steered_generation_ids()]
    if task == "feature":
        return store.feature_ids()
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def disagreement_items(store: StudyStore, task: str) -> set[str]:
    """Items whose combined verdict says the two automated methods disagree."""
    rows = store.disagreement_generations()
    return {str(g) for g, _f in rows} if task == "change" else {f for _g, f in rows}


def queue_of(store: StudyStore, annotator: str, task: str) -> list[QueueItem]:
    return store.queue(annotator, task)


_LOCK = threading.Lock()


def sync_queues(store: StudyStore, task: str, annotators: list[str], config: QueueConfig) -> dict[str, int]:
    """Bring the recorded queues up to date; returns the number of items added per annotator.

    Safe to call at every start: with nothing new it writes nothing."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    annotators = sorted(set(annotators))
    if not annotators:
        return {}
    items = task_items(store, task)
    flagged = disagreement_items(store, task) if config.disagreements_first else set()
    added = {a: 0 for a in annotators}

    def plan(existing: list[QueueEntry]) -> list[QueueEntry]:
        length: dict[str, int] = {a: 0 for a in annotators}
        readers: dict[str, set[str]] = {}
        for e in existing:
            length[e.annotator] = max(length.get(e.annotator, 0), e.position + 1)
            readers.setdefault(e.item_key, set()).add(e.annotator)
        new_rows: list[QueueEntry] = []

        # 1. annotators joining a study whose queues already exist: a fair share of the least-read items
        if existing:
            n_total = len({*length})
            for a in annotators:
                if length.get(a, 0) or not readers:
                    continue
                rng = random.Random(f"{config.seed}:{task}:join:{a}")
                pool = sorted(readers, key=lambda k: (len(readers[k]), rng.random()))
                share = pool[: math.ceil(len(readers) / max(n_total, 1))]
                new_rows += _append(a, share, length, flagged, config, task, double=True)
                for k in share:
                    readers[k].add(a)
                added[a] += len(share)

        # 2. items no queue holds yet: dealt to the least-loaded annotators, a fraction read twice
        fresh = [k for k in items if k not in readers]
        if fresh:
            rng = random.Random(f"{config.seed}:{task}:deal:{len(readers)}")
            rng.shuffle(fresh)
            n_double = round(config.overlap * len(fresh)) if len(annotators) >= 2 else 0
            load = {a: length.get(a, 0) for a in annotators}
            dealt: dict[str, list[str]] = {a: [] for a in annotators}
            doubles: set[str] = set()
            for i, key in enumerate(fresh):
                k = 2 if i < n_double else 1
                chosen = sorted(annotators, key=lambda a: (load[a], rng.random()))[:k]
                for a in chosen:
                    dealt[a].append(key)
                    load[a] += 1
                if k == 2:
                    doubles.add(key)
            for a in annotators:
                new_rows += _append(a, dealt[a], length, flagged, config, task, double=False, doubles=doubles)
                added[a] += len(dealt[a])
        # a late joiner turns single reads into double reads: the store marks every copy
        return new_rows

    with _LOCK:
        store.extend_queues(task, plan)
    return added


def _append(annotator: str, keys: list[str], length: dict[str, int], flagged: set[str], config: QueueConfig,
            task: str, *, double: bool, doubles: set[str] | None = None) -> list[QueueEntry]:
    """Rows that append `keys` to `annotator`'s queue in a seeded order (flagged first if asked)."""
    start = length.get(annotator, 0)
    order = sorted(keys)
    random.Random(f"{config.seed}:{task}:order:{annotator}:{start}").shuffle(order)
    if config.disagreements_first:
        order.sort(key=lambda k: k not in flagged)  # stable: random order within each group
    length[annotator] = start + len(order)
    return [QueueEntry(annotator, task, start + i, k, double or (doubles is not None and k in doubles), config.seed)
            for i, k in enumerate(order)]
