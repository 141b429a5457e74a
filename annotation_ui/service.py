"""What the annotation app does, independent of Gradio: whose queue, which item next, store an
answer, skip, go back. The Gradio handlers (and so the HTTP API) are thin wrappers around this
class, and every method takes the annotator's identity from the caller's login, never from
the request body: nobody can act on, or read, another annotator's queue or answers."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from annotation_ui import persistence, queues, views
from annotation_ui.images import CaseImage, case_images
from annotation_ui.persistence import AnnotationInputError
from annotation_ui.queues import QueueConfig
from steering.store import StudyStore

MAX_CONTEXTS = 10


@dataclass
class ItemView:
    """Everything the page shows for one item (HTML already escaped)."""

    task: str
    ref: str  # "<task>:<position>:<item_key>", the only thing the page sends back
    position: int | None
    total: int
    done: int
    header: str = ""
    left: str = ""  # change: baseline report; feature: contexts
    right: str = ""  # change: steered report
    answers: dict[str, Any] = field(default_factory=dict)  # the annotator's own earlier answer
    message: str = ""
    finished: bool = False
    images: list[CaseImage] = field(default_factory=list)  # the case's images (change task, MAIRA-2 cases)
    readers: str = ""  # adjudication: the readers' answers (HTML)
    grounding: dict[str, list] = field(default_factory=dict)  # change: {"baseline"/"steered": phrases with boxes}

    @property
    def progress(self) -> str:
        return views.progress_html(self.done, self.total, self.position)


class AnnotationService:
    def __init__(self, store: StudyStore, task: str, config: QueueConfig, annotators: list[str],
                 *, show_automated: bool = False) -> None:
        if task not in queues.TASKS:
            raise AnnotationInputError(f"--task {task!r}: expected one of {', '.join(queues.TASKS)}")
        self.store, self.task, self.config = store, task, config
        self.show_automated = show_automated
        self._shown: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._has_queue: set[str] = set()
        queues.sync_queues(store, task, annotators, config)

    # ---- navigation -----------------------------------------------------------------------

    def current(self, annotator: str) -> ItemView:
        """The first item this annotator has not answered: where they resume after a restart."""
        self._ensure_queue(annotator)
        status = self.store.queue_status(annotator, self.task)
        if status.next is None:
            return self._view(annotator, status.total, status.total, status.done)
        return self._view(annotator, status.next.position, status.total, status.done, status.next.item_key, {})

    def back(self, annotator: str, ref: str) -> ItemView:
        self._ensure_queue(annotator)
        position, key = persistence.parse_item_ref(ref, self.task)
        status = self.store.queue_status(annotator, self.task)
        if not (key == "" and position == status.total):
            self._check(annotator, position, key)
        target = max(position - 1, 0)
        row = self.store.queued_answer(annotator, self.task, target)
        if row is None:
            return self._view(annotator, status.total, status.total, status.done)
        return self._view(annotator, target, status.total, status.done, row.item_key, row.answers or {})

    def submit(self, annotator: str, ref: str, raw: dict[str, Any]) -> ItemView:
        answers = persistence.validate_answers(self.task, raw)
        return self._store(annotator, ref, answers)

    def skip(self, annotator: str, ref: str) -> ItemView:
        return self._store(annotator, ref, {"skipped": True})

    # ---- internals ------------------------------------------------------------------------

    def _store(self, annotator: str, ref: str, answers: dict[str, Any]) -> ItemView:
        self._ensure_queue(annotator)
        position, key = persistence.parse_item_ref(ref, self.task)
        if key == "":
            raise AnnotationInputError("all your items are answered; nothing to submit (use Back to revise)")
        shown = self._shown.pop((annotator, key), None)
        seconds = round(time.monotonic() - shown, 3) if shown is not None else None
        # what the reader could see is part of the read (reader-study reporting): the server's state, not the client's
        answers = {**answers, "blinded": not self.show_automated}
        persistence.save_answer(self.store, annotator, self.task, position, key, answers, seconds)
        view = self.current(annotator)
        view.message = "Skipped." if answers.get("skipped") else "Saved."
        return view

    def _ensure_queue(self, annotator: str) -> None:
        if annotator not in self._has_queue:
            with self._lock:  # someone added to the accounts file while the server runs
                if not self.store.queue(annotator, self.task):
                    queues.sync_queues(self.store, self.task, [annotator], self.config)
                self._has_queue.add(annotator)

    def _check(self, annotator: str, position: int, key: str) -> None:
        if self.store.queue_key_at(annotator, self.task, position) != key:
            raise AnnotationInputError(
                f"item {key[:60]!r} at position {position} is not in your queue; nothing was stored (reload the page)")

    def _view(self, annotator: str, position: int, total: int, done: int, key: str = "",
              answers: dict | None = None) -> ItemView:
        if position >= total:
            msg = ("All your items are answered — thank you. Use Back to revise an answer."
                   if total else "Your queue is empty: this study has nothing to annotate for this task yet.")
            return ItemView(self.task, f"{self.task}:{total}:", None, total, done,
                            header=f'<div class="rs-head" id="rs-finished">{views.esc(msg)}</div>',
                            finished=True)
        view = ItemView(self.task, f"{self.task}:{position}:{key}", position, total, done,
                        answers=dict(answers or {}))
        self.fill(view, key)
        self._shown[(annotator, key)] = time.monotonic()
        return view

    def fill(self, view: ItemView, key: str) -> None:
        """What the page shows for item `key` of this task (also used by adjudication)."""
        if self.task == "change":
            self._fill_change(view, int(key))
        else:
            self._fill_feature(view, key)

    def _fill_change(self, view: ItemView, generation_id: int) -> None:
        item, labels = self.store.change_item(generation_id, with_labels=self.show_automated)
        if item is None:
            raise AnnotationInputError(f"generation {generation_id} is no longer in the study store")
        automated = None
        if self.show_automated:
            automated = labels.get("combined") or labels.get("entity_diff") or labels.get("llm_judge")
            automated = automated or "none recorded"
        shown = dict(feature_id=item.feature_id, alpha=item.alpha, description=item.description,
                     indication=item.inputs.get("indication"))
        view.header = views.change_header(shown, automated)
        view.left, view.right = views.change_sides(item.baseline_text, item.text)
        view.images = case_images(item.inputs)
        if any(im.view == "frontal" for im in view.images):  # grounded reports' boxes, drawn on the frontal image
            view.grounding = {side: v for side, v in (("baseline", item.baseline_grounding), ("steered", item.grounding))
                              if isinstance(v, list)}

    def _fill_feature(self, view: ItemView, feature_id: str) -> None:
        found, ctx = self.store.feature_with_contexts(feature_id, "top", MAX_CONTEXTS)
        if found is None:
            raise AnnotationInputError(f"feature {feature_id!r} is no longer in the study store")
        feature = asdict(found)
        interp = self.store.interpretation_for(feature_id)  # `radsteer interpret`, if it ran
        f1 = feature.get("interpretability")
        if f1 is None and interp is not None and interp.get("description") == feature.get("description"):
            f1 = interp.get("f1")  # the score of exactly the description shown
        # the F1 is an automated score: shown only where the automated labels are (not blinded)
        view.header = views.feature_header(feature, f1=f1 if self.show_automated else None)
        view.left = views.contexts_html([asdict(c) for c in ctx])
        if interp is not None:
            view.left += views.heldout_html(interp.get("examples") or [])
