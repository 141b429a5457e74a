"""Adjudication: an `adjudicator` resolves the double reads on which readers disagreed and the
items a reader flagged, seeing every reader's answer, and records the final answer.

Which items: for each task, every item with at least two answered (not skipped) reads that
differ in any question, and every item a reader flagged. The list is derived from the stored
answers at each step (so a new disagreement appears without a restart), ordered by task and
item; the adjudicator resumes at the first item without a final answer. Final answers go to the
store's `adjudications` table (`StudyStore.save_adjudication`), one row per item, revisable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from annotation_ui import views
from annotation_ui.persistence import CHOICES, MAX_KEY, AnnotationInputError, validate_answers
from annotation_ui.service import AnnotationService, ItemView
from steering.store import StudyStore

PREFIX = "adj"


@dataclass(frozen=True)
class Case:
    """One item to adjudicate."""

    task: str
    item_key: str
    reason: str  # "disagreement" | "flagged" | "disagreement+flagged"
    readers: dict[str, dict[str, Any]]  # annotator → answers


def _sort_key(task: str, key: str) -> tuple:
    return (task, 0, int(key), "") if key.isdigit() else (task, 1, 0, key)


def to_adjudicate(store: StudyStore, tasks: tuple[str, ...]) -> list[Case]:
    """Items needing a final answer, in a stable order."""
    out: list[Case] = []
    for task in tasks:
        reads: dict[str, dict[str, dict[str, Any]]] = {}
        for read in store.reads(task):
            reads.setdefault(read.item_key, {})[read.annotator] = dict(read.answers)
        for key, by in reads.items():
            answered = {a: ans for a, ans in by.items() if not ans.get("skipped")}
            fields = CHOICES[task]
            disagree = len(answered) >= 2 and any(
                len({ans.get(f) for ans in answered.values()}) > 1 for f in fields)
            flagged = any(ans.get("flagged") for ans in by.values())
            if disagree or flagged:
                reason = "+".join(r for r, on in (("disagreement", disagree), ("flagged", flagged)) if on)
                out.append(Case(task, key, reason, dict(sorted(by.items()))))
    return sorted(out, key=lambda c: _sort_key(c.task, c.item_key))


class AdjudicationService:
    """The adjudicator's walk through `to_adjudicate`: current, back, skip, submit."""

    def __init__(self, store: StudyStore, services: dict[str, AnnotationService]) -> None:
        self.store, self.services = store, services
        self._shown: dict[tuple[str, str, str], float] = {}

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.services)

    def current(self, adjudicator: str) -> ItemView:
        items = to_adjudicate(self.store, self.tasks)
        done = {(a["task"], a["item_key"]) for a in self.store.adjudications()}
        for i, c in enumerate(items):
            if (c.task, c.item_key) not in done:
                return self._view(adjudicator, items, i, done)
        return self._finished(items, done)

    def back(self, adjudicator: str, ref: str) -> ItemView:
        items, i, done = self._locate(ref, allow_end=True)
        if i == 0 and not items:
            return self._finished(items, done)
        return self._view(adjudicator, items, max(i - 1, 0), done)

    def skip(self, adjudicator: str, ref: str) -> ItemView:
        items, i, done = self._locate(ref)
        return self._view(adjudicator, items, i + 1, done) if i + 1 < len(items) else self._finished(items, done)

    def submit(self, adjudicator: str, ref: str, raw: dict[str, Any]) -> ItemView:
        items, i, _ = self._locate(ref)
        case = items[i]
        answers = validate_answers(case.task, raw)
        shown = self._shown.pop((adjudicator, case.task, case.item_key), None)
        seconds = round(time.monotonic() - shown, 3) if shown is not None else None
        self.store.save_adjudication(case.task, case.item_key, adjudicator, answers, reason=case.reason,
                                     readers=case.readers, seconds=seconds)
        view = self.current(adjudicator)
        view.message = "Final answer saved."
        return view

    # ---- internals ------------------------------------------------------------------------

    def _locate(self, ref: str, *, allow_end: bool = False) -> tuple[list[Case], int, set]:
        """Parse `adj:<task>:<item_key>` and find it among the items needing adjudication."""
        text = str(ref or "")
        parts = text.split(":", 2)
        refusal = AnnotationInputError(f"item reference {text[:60]!r} is not an adjudication item; reload the page")
        if len(parts) != 3 or parts[0] != PREFIX or parts[1] not in self.tasks or len(parts[2]) > MAX_KEY:
            raise refusal
        items = to_adjudicate(self.store, self.tasks)
        done = {(a["task"], a["item_key"]) for a in self.store.adjudications()}
        if parts[2] == "" and allow_end:
            return items, len(items), done
        for i, c in enumerate(items):
            if c.task == parts[1] and c.item_key == parts[2]:
                return items, i, done
        raise AnnotationInputError(
            f"item {parts[2][:60]!r} does not need adjudication (no disagreement or flag); nothing was stored")

    def _finished(self, items: list[Case], done: set) -> ItemView:
        n = sum(1 for c in items if (c.task, c.item_key) in done)
        msg = ("Every disagreement and flagged item has a final answer — thank you. Use Back to revise."
               if items else "Nothing to adjudicate yet: no double reads disagree and nothing is flagged.")
        task = self.tasks[0] if self.tasks else "change"
        return ItemView(task, f"{PREFIX}:{task}:", None, len(items), n,
                        header=f'<div class="rs-head" id="rs-finished">{views.esc(msg)}</div>', finished=True)

    def _view(self, adjudicator: str, items: list[Case], i: int, done: set) -> ItemView:
        case = items[i]
        final = self.store.adjudication(case.task, case.item_key)
        n = sum(1 for c in items if (c.task, c.item_key) in done)
        view = ItemView(case.task, f"{PREFIX}:{case.task}:{case.item_key}", i, len(items), n,
                        answers=dict(final["answers"]) if final else {})
        self.services[case.task].fill(view, case.item_key)
        view.readers = views.readers_html(case.task, case.reason, case.readers)
        self._shown[(adjudicator, case.task, case.item_key)] = time.monotonic()
        return view
