"""Typed store methods of the annotation app: what there is to read, the readers' recorded queues,
their answers, and what the page shows for an item.

Why here and not in `annotation_ui`: the store is the only way into the database (docs/design.md,
"The study directory and the store"), so the app never holds a table, a connection or SQL text, and the same
statements serve SQLite and PostgreSQL (both are tested). The hot paths of the reader's loop
(`queue_status`, `change_item`, `record_answer`) are one or two indexed statements each, on one
connection, because every reader's `next_item` and `submit` pass through them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, case, func, select

from steering.store.schema import (
    BASELINE_FEATURE,
    annotations,
    cases,
    feature_contexts,
    features,
    generations,
    queue_items,
    verdicts,
)

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy import Engine


@dataclass(frozen=True)
class QueueItem:
    """One item of one reader's queue."""

    position: int
    item_key: str
    double_read: bool


@dataclass(frozen=True)
class QueueEntry:
    """A row of `queue_items`: item `item_key` at `position` of `annotator`'s queue of `task`."""

    annotator: str
    task: str
    position: int
    item_key: str
    double_read: bool = False
    seed: int = 0


@dataclass(frozen=True)
class QueueStatus:
    """A reader's queue at a glance: its length, how many items they answered, and the first one
    they have not (None when every item is answered)."""

    total: int
    done: int
    next: QueueItem | None


@dataclass(frozen=True)
class QueuedAnswer:
    """An item of a reader's queue with their own answer (None if not answered yet)."""

    position: int
    item_key: str
    answers: dict[str, Any] | None


@dataclass(frozen=True)
class ChangeItem:
    """A steered generation beside its case's baseline: what the change task shows."""

    generation_id: int
    baseline_generation_id: int
    case_id: str
    feature_id: str
    alpha: float
    text: str
    baseline_text: str
    description: str | None
    inputs: dict[str, Any]
    grounding: list[dict[str, Any]] | None = None  # grounded reports: phrases with boxes (None: not grounded)
    baseline_grounding: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class FeatureRecord:
    feature_id: str
    source: str
    bank_index: int
    description: str
    target_concepts: list[str]
    interpretability: float | None
    explainer: str | None


@dataclass(frozen=True)
class FeatureContext:
    """One stored context of a feature (`radsteer mine`)."""

    feature_id: str
    kind: str
    rank: int
    activation: float
    doc_id: str
    token_index: int
    tokens: list[str]
    activations: list[float]
    center: int | None = None


@dataclass(frozen=True)
class Read:
    """One reader's stored answer to one item."""

    task: str
    item_key: str
    annotator: str
    answers: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None


_q, _a, _g, _b = queue_items, annotations, generations, generations.alias("b")
_OWN = _q.outerjoin(_a, (_a.c.task == _q.c.task) & (_a.c.item_key == _q.c.item_key)
                    & (_a.c.annotator == bindparam("annotator")))
"""`queue_items` beside the reader's own answer to each item (never anyone else's)."""
_MINE = (_q.c.annotator == bindparam("annotator")) & (_q.c.task == bindparam("task"))
_AT = _MINE & (_q.c.position == bindparam("position"))
# The reader's loop runs these on every request: built once (bound parameters), so a request pays
# for executing them, not for building and hashing a statement.
_COUNTS = (select(func.count(_q.c.position).label("total"), func.count(_a.c.id).label("done"),
                  func.min(case((_a.c.id.is_(None), _q.c.position))).label("first"))
           .select_from(_OWN).where(_MINE).subquery("counts"))
_q2 = queue_items.alias("q2")
_STATUS = (select(_COUNTS.c.total, _COUNTS.c.done, _COUNTS.c.first, _q2.c.item_key, _q2.c.double_read)
           .select_from(_COUNTS.outerjoin(_q2, (_q2.c.annotator == bindparam("annotator"))
                                          & (_q2.c.task == bindparam("task")) & (_q2.c.position == _COUNTS.c.first))))
_ITEM_AT = select(_q.c.item_key, _q.c.double_read).where(_AT)
_ANSWER_AT = select(_q.c.item_key, _a.c.answers, _a.c.seconds).select_from(_OWN).where(_AT)
_BEFORE_ANSWER = (select(_q.c.item_key, _a.c.seconds, _g.c.feature_id)
                  .select_from(_OWN.outerjoin(_g, _g.c.id == bindparam("generation_id"))).where(_AT))
"""What storing an answer needs, in one read: the queued item, the earlier time on task, the
generation's feature (change task; `generation_id` None otherwise)."""
_CHANGE_ITEM = (select(_g.c.id, _b.c.id.label("baseline_id"), _g.c.case_id, _g.c.feature_id, _g.c.alpha, _g.c.text,
                       _b.c.text.label("baseline"), features.c.description, cases.c.inputs,
                       _g.c.grounding, _b.c.grounding.label("baseline_grounding"))
                .join(_b, (_b.c.case_id == _g.c.case_id) & (_b.c.settings_hash == _g.c.settings_hash)
                      & (_b.c.feature_id == BASELINE_FEATURE))
                .outerjoin(features, features.c.feature_id == _g.c.feature_id)
                .outerjoin(cases, cases.c.case_id == _g.c.case_id)
                .where(_g.c.id == bindparam("generation_id")))
_LABELS = select(verdicts.c.method, verdicts.c.label).where(verdicts.c.generation_id == bindparam("generation_id"))
_FEATURE = select(features).where(features.c.feature_id == bindparam("feature_id"))
_CONTEXTS = (select(feature_contexts).where(feature_contexts.c.feature_id == bindparam("feature_id"),
                                            feature_contexts.c.kind == bindparam("kind"))
             .order_by(feature_contexts.c.rank).limit(bindparam("limit")))


class AnnotationRepositoryMixin:
    """Mixed into `StudyStore` (which provides `engine`, `transaction`, `upsert`, `insert_ignore`)."""

    engine: Engine

    def _reads(self) -> Engine:
        """The engine for the reader's loop's reads, in autocommit on a server: a one-statement read
        needs no transaction, and on PostgreSQL that saves the BEGIN and ROLLBACK round trips per
        request (about 40 % of a read's time, measured). Same pool."""
        engine = self.__dict__.get("_autocommit_engine")
        if engine is None:  # SQLite reads begin no transaction anyway, and switching its mode costs PRAGMAs
            engine = self.engine if self.engine.dialect.name == "sqlite" else self.engine.execution_options(
                isolation_level="AUTOCOMMIT")
            self.__dict__["_autocommit_engine"] = engine
        return engine

    # ---- what there is to read ------------------------------------------------------------

    def steered_generation_ids(self) -> list[int]:
        """Ids of the steered generations that have a baseline (same case and settings), ascending."""
        g, b = generations, generations.alias("b")
        stmt = (select(g.c.id)
                .join(b, and_(b.c.case_id == g.c.case_id, b.c.settings_hash == g.c.settings_hash,
                              b.c.feature_id == BASELINE_FEATURE))
                .where(g.c.feature_id != BASELINE_FEATURE).order_by(g.c.id))
        with self.engine.connect() as conn:
            return [int(r[0]) for r in conn.execute(stmt)]

    def feature_ids(self) -> list[str]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(select(features.c.feature_id).order_by(features.c.feature_id))]

    def disagreement_generations(self) -> list[tuple[int, str]]:
        """(generation id, feature id) of every generation whose combined verdict flags that the
        automated methods disagree."""
        stmt = (select(generations.c.id, generations.c.feature_id)
                .join(verdicts, verdicts.c.generation_id == generations.c.id)
                .where(verdicts.c.method == "combined", verdicts.c.disagreement.is_(True)))
        with self.engine.connect() as conn:
            return [(int(r.id), r.feature_id) for r in conn.execute(stmt)]

    # ---- recorded queues ------------------------------------------------------------------

    def queue(self, annotator: str, task: str) -> list[QueueItem]:
        """`annotator`'s queue of `task`, in order."""
        q = queue_items
        stmt = (select(q.c.position, q.c.item_key, q.c.double_read)
                .where(q.c.annotator == annotator, q.c.task == task).order_by(q.c.position))
        with self.engine.connect() as conn:
            return [QueueItem(int(r.position), r.item_key, bool(r.double_read)) for r in conn.execute(stmt)]

    def extend_queues(self, task: str, plan: Callable[[list[QueueEntry]], Sequence[QueueEntry]]) -> int:
        """Append to the queues of `task` what `plan` makes of the queues as stored, in one
        transaction; then every item that two or more readers hold is marked a double read.
        Entries already stored (same reader and position, or same reader and item) are left as
        they are. Returns the entries added."""
        with self.transaction() as conn:  # type: ignore[attr-defined]
            n = self._extend_queues(conn, task, plan)
        if n and self.engine.dialect.name == "postgresql":
            # fresh planner statistics: a study's queues are written in one go, and with the empty
            # tables' statistics PostgreSQL planned the reader's-loop joins as nested loops over
            # every answer (3.4 ms a status read at 50 items a reader, 0.3 ms after ANALYZE)
            with self._reads().connect() as conn:  # autocommit: ANALYZE after the queues' commit
                conn.exec_driver_sql("ANALYZE queue_items, annotations")
        return n

    def _extend_queues(self, conn: Any, task: str, plan: Callable[[list[QueueEntry]], Sequence[QueueEntry]]) -> int:
        q = queue_items
        existing = [QueueEntry(r.annotator, task, int(r.position), r.item_key, bool(r.double_read))
                    for r in conn.execute(select(q.c.annotator, q.c.position, q.c.item_key, q.c.double_read)
                                          .where(q.c.task == task))]
        new = list(plan(existing))
        if not new:
            return 0
        n = self.insert_ignore("queue_items", [dict(annotator=e.annotator, task=e.task, position=e.position,  # type: ignore[attr-defined]
                                                    item_key=e.item_key, double_read=e.double_read,
                                                    seed=e.seed) for e in new], conn=conn)
        twice = (select(q.c.item_key).where(q.c.task == task).group_by(q.c.item_key)
                 .having(func.count() >= 2))
        conn.execute(q.update().where(q.c.task == task, q.c.double_read.is_(False), q.c.item_key.in_(twice))
                     .values(double_read=True))
        return n

    def queue_status(self, annotator: str, task: str) -> QueueStatus:
        """Length, answered count and first unanswered item of a reader's queue (one statement)."""
        with self._reads().connect() as conn:
            row = conn.execute(_STATUS, {"annotator": annotator, "task": task}).one()
        nxt = None if row.item_key is None else QueueItem(int(row.first), row.item_key, bool(row.double_read))
        return QueueStatus(int(row.total), int(row.done), nxt)

    def queue_key_at(self, annotator: str, task: str, position: int) -> str | None:
        """The item at `position` of the reader's queue, if there is one."""
        with self._reads().connect() as conn:
            row = conn.execute(_ITEM_AT, {"annotator": annotator, "task": task, "position": position}).first()
        return None if row is None else row.item_key

    def queued_answer(self, annotator: str, task: str, position: int) -> QueuedAnswer | None:
        """The item at `position` of the reader's queue and their own answer to it."""
        with self._reads().connect() as conn:
            row = conn.execute(_ANSWER_AT, {"annotator": annotator, "task": task, "position": position}).first()
        return None if row is None else QueuedAnswer(position, row.item_key, row.answers)

    # ---- answers --------------------------------------------------------------------------

    def record_answer(self, annotator: str, task: str, position: int, item_key: str, answers: dict[str, Any],
                      seconds: float | None) -> bool:
        """Store (or update) a reader's answer in one transaction, only if `item_key` is at `position`
        of their own queue; a resubmission updates the answer and adds the time on task, it never
        duplicates it. False (nothing stored) when the item is not in their queue."""
        now = datetime.now(timezone.utc)
        with self.transaction() as conn:  # type: ignore[attr-defined]
            generation_id = int(item_key) if task == "change" else None
            row = conn.execute(_BEFORE_ANSWER, {"annotator": annotator, "task": task, "position": position,
                                                "generation_id": generation_id}).first()
            if row is None or row.item_key != item_key:
                return False
            total = seconds
            if row.seconds is not None:
                total = row.seconds + (seconds or 0.0)
            feature_id = row.feature_id if task == "change" else item_key
            conn.execute(self._answer_upsert(), dict(
                task=task, item_key=item_key, annotator=annotator, generation_id=generation_id,
                feature_id=feature_id, answers=answers, seconds=total, shown_order=position, updated_at=now))
        return True

    def _answer_upsert(self) -> Any:
        """INSERT … ON CONFLICT (task, item_key, annotator) DO UPDATE for this store's dialect, built once."""
        stmt = self.__dict__.get("_answer_upsert_stmt")
        if stmt is None:
            ins = self._insert(annotations)  # type: ignore[attr-defined]
            cols = ("generation_id", "feature_id", "answers", "seconds", "shown_order", "updated_at")
            stmt = ins.on_conflict_do_update(index_elements=["task", "item_key", "annotator"],
                                             set_={c: ins.excluded[c] for c in cols})
            self.__dict__["_answer_upsert_stmt"] = stmt
        return stmt

    def reads(self, task: str) -> list[Read]:
        """Every stored answer of `task`, ordered by (item_key, annotator)."""
        a = annotations
        stmt = (select(a.c.task, a.c.item_key, a.c.annotator, a.c.answers, a.c.seconds)
                .where(a.c.task == task).order_by(a.c.item_key, a.c.annotator))
        with self.engine.connect() as conn:
            return [Read(r.task, r.item_key, r.annotator, dict(r.answers or {}), r.seconds) for r in conn.execute(stmt)]

    def queue_lengths(self, task: str) -> dict[str, int]:
        """Reader → number of items in their queue of `task`."""
        q = queue_items
        stmt = select(q.c.annotator, func.count()).where(q.c.task == task).group_by(q.c.annotator)
        with self.engine.connect() as conn:
            return {r[0]: int(r[1]) for r in conn.execute(stmt)}

    def queued_reads(self, task: str) -> list[Read]:
        """The stored answers of `task` to items in the answering reader's own queue."""
        q, a = queue_items, annotations
        stmt = (select(a.c.task, a.c.item_key, a.c.annotator, a.c.answers, a.c.seconds)
                .join(q, (q.c.annotator == a.c.annotator) & (q.c.task == a.c.task) & (q.c.item_key == a.c.item_key))
                .where(a.c.task == task))
        with self.engine.connect() as conn:
            return [Read(r.task, r.item_key, r.annotator, dict(r.answers or {}), r.seconds) for r in conn.execute(stmt)]

    # ---- what the page shows --------------------------------------------------------------

    def change_item(self, generation_id: int, *, with_labels: bool = False,
                    ) -> tuple[ChangeItem | None, dict[str, str | None]]:
        """The steered generation with its baseline, feature description and case inputs, and (when
        `with_labels`) its automated labels by method; one connection."""
        labels: dict[str, str | None] = {}
        with self._reads().connect() as conn:
            row = conn.execute(_CHANGE_ITEM, {"generation_id": generation_id}).first()
            if row is not None and with_labels:
                labels = {m: lab for m, lab in conn.execute(_LABELS, {"generation_id": generation_id})}
        if row is None:
            return None, labels
        item = ChangeItem(int(row.id), int(row.baseline_id), row.case_id, row.feature_id, float(row.alpha), row.text,
                          row.baseline, row.description, row.inputs if isinstance(row.inputs, dict) else {},
                          row.grounding, row.baseline_grounding)
        return item, labels

    def feature_with_contexts(self, feature_id: str, kind: str = "top", limit: int = 10,
                              ) -> tuple[FeatureRecord | None, list[FeatureContext]]:
        """A feature and its first `limit` stored contexts of `kind`, by rank; one connection."""
        with self._reads().connect() as conn:
            f = conn.execute(_FEATURE, {"feature_id": feature_id}).first()
            ctx = conn.execute(_CONTEXTS, {"feature_id": feature_id, "kind": kind, "limit": limit}).all() if f else []
        if f is None:
            return None, []
        feature = FeatureRecord(f.feature_id, f.source, int(f.bank_index), f.description or "",
                                list(f.target_concepts or []), f.interpretability, f.explainer)
        return feature, [FeatureContext(c.feature_id, c.kind, int(c.rank), float(c.activation), c.doc_id,
                                        int(c.token_index), list(c.tokens), list(c.activations), c.center)
                         for c in ctx]
