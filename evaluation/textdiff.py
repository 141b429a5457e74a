"""Word-level diff of a baseline and a steered report: one implementation for the annotation
app and the study report, so radiologists and readers see the same highlighting."""

from __future__ import annotations

import difflib
import html
import re
from dataclasses import dataclass
from typing import Literal

Op = Literal["equal", "delete", "insert"]
_TOKEN = re.compile(r"\s+|[^\s]+")


@dataclass(frozen=True)
class Segment:
    op: Op
    text: str


def tokenize_words(text: str) -> list[str]:
    """Words and the whitespace between them, so that joining the tokens gives the text back."""
    return _TOKEN.findall(text)


def word_diff(baseline: str, steered: str) -> list[Segment]:
    """Segments that rebuild the baseline (equal + delete) and the steered text (equal + insert)."""
    a, b = tokenize_words(baseline), tokenize_words(steered)
    sm = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    out: list[Segment] = []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            out.append(Segment("equal", "".join(a[i1:i2])))
            continue
        if tag in ("delete", "replace"):
            out.append(Segment("delete", "".join(a[i1:i2])))
        if tag in ("insert", "replace"):
            out.append(Segment("insert", "".join(b[j1:j2])))
    return [s for s in out if s.text]


def render_side(segments: list[Segment], side: Literal["baseline", "steered"]) -> str:
    """HTML for one side of the diff. Every piece of model text is escaped."""
    keep = "delete" if side == "baseline" else "insert"
    parts = []
    for seg in segments:
        if seg.op == "equal":
            parts.append(html.escape(seg.text))
        elif seg.op == keep:
            cls = "rs-del" if keep == "delete" else "rs-ins"
            parts.append(f'<span class="{cls}">{html.escape(seg.text)}</span>')
    return "".join(parts)


DIFF_CSS = (
    ".rs-del{background:#fdd;color:#900;text-decoration:line-through}"
    ".rs-ins{background:#dfd;color:#060;font-weight:600}"
)
