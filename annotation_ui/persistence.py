"""Validated, idempotent storage of annotators' answers.

Each submit is one transaction that first checks the item is in the submitting annotator's
own recorded queue (so a tampered or foreign item id stores nothing) and then upserts on the
natural key (task, item_key, annotator): a resubmission updates that annotator's answer and
adds the time spent, it never duplicates it.
"""

from __future__ import annotations

import re
from typing import Any

from steering.errors import RadsteerError
from steering.store import StudyStore

MAX_COMMENT = 4000
"""Characters. Long enough for a clinical remark, short enough that nobody pastes a report."""

CHOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "change": {
        "label": ("on", "off", "both", "none"),
        "interpretation_valid": ("yes", "no", "unsure"),
        "coherent": ("yes", "no"),
    },
    "feature": {
        "validity": ("valid", "partly", "invalid"),
        "clinically_relevant": ("yes", "no"),
    },
}
"""The fixed answer vocabularies (shared with statistics and reports)."""


class AnnotationInputError(RadsteerError):
    """An answer or item reference the app refuses; nothing was stored."""


def validate_answers(task: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The answers dict to store, or AnnotationInputError naming the field to fix."""
    if task not in CHOICES:
        raise AnnotationInputError(f"task {task!r}: expected one of {', '.join(CHOICES)}")
    out: dict[str, Any] = {}
    for field, allowed in CHOICES[task].items():
        value = raw.get(field)
        if value in (None, ""):
            raise AnnotationInputError(f"{field}: choose one of {' / '.join(allowed)} before submitting")
        if value not in allowed:
            raise AnnotationInputError(f"{field}: {str(value)[:40]!r} is not one of {' / '.join(allowed)}")
        out[field] = value
    comment = raw.get("comment") or ""
    if not isinstance(comment, str):
        raise AnnotationInputError("comment: must be text")
    if len(comment) > MAX_COMMENT:
        raise AnnotationInputError(
            f"comment: {len(comment)} characters is over the limit of {MAX_COMMENT}; please shorten it"
        )
    out["comment"] = comment
    out["flagged"] = bool(raw.get("flagged", False))
    return out


MAX_POSITION = 10**9
"""Above any queue a study will have, and far below SQL's 32-bit INTEGER."""
MAX_KEY = 200
"""`item_key` columns are String(200)."""
_GENERATION_ID = re.compile(r"[1-9][0-9]{0,17}")  # a positive id that fits in a signed 64-bit integer
_FEATURE_ID = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


def parse_item_ref(ref: str, task: str) -> tuple[int, str]:
    """`"<task>:<position>:<item_key>"` → (position, item_key), or a clear refusal.

    Every part is checked before it reaches the database: the task, a position that is a plain
    decimal below `MAX_POSITION`, and a key of the task's form (a generation id that fits in 64
    bits for "change"; at most 200 printable characters for "feature"; empty = "past the end")."""
    text = str(ref or "")
    parts = text.split(":", 2)
    refusal = AnnotationInputError(f"item reference {text[:60]!r} is not a {task} item of this app; reload the page")
    if len(parts) != 3 or parts[0] != task:
        raise refusal
    pos, key = parts[1], parts[2]
    if not (pos.isascii() and pos.isdigit() and len(pos) <= 10 and (pos == "0" or not pos.startswith("0"))):
        raise refusal
    if int(pos) >= MAX_POSITION:
        raise refusal
    if key:
        pattern = _GENERATION_ID if task == "change" else _FEATURE_ID
        if len(key) > MAX_KEY or not pattern.fullmatch(key):
            raise refusal
    return int(pos), key


def save_answer(store: StudyStore, annotator: str, task: str, position: int, item_key: str,
                answers: dict[str, Any], seconds: float | None) -> None:
    """Store (or update) one answer in one transaction, after checking the queue."""
    if not store.record_answer(annotator, task, position, item_key, answers, seconds):
        raise AnnotationInputError(
            f"item {item_key[:60]!r} at position {position} is not in your queue; nothing was stored (reload the page)"
        )


def progress(store: StudyStore, task: str) -> list[dict[str, Any]]:
    """Per annotator: assigned, done, skipped, flagged, remaining, median seconds. Counts only."""
    assigned = store.queue_lengths(task)
    rows = store.queued_reads(task)
    out = []
    for who in sorted(assigned):
        mine = [r for r in rows if r.annotator == who]
        skipped = sum(1 for r in mine if r.answers.get("skipped"))
        secs = sorted(r.seconds for r in mine if r.seconds is not None and not r.answers.get("skipped"))
        out.append(dict(
            annotator=who, assigned=int(assigned[who]), done=len(mine) - skipped, skipped=skipped,
            flagged=sum(1 for r in mine if r.answers.get("flagged")),
            remaining=int(assigned[who]) - len(mine),
            median_seconds=round(secs[len(secs) // 2], 1) if secs else None,
        ))
    return out
