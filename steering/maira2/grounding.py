"""Grounded MAIRA-2 output → phrases with boxes, or plain report text.

Grounded reporting writes each finding as `<obj>phrase<box><xA><yB><xC><yD></box>…</obj>`, the
coordinates being bins of 1/`bins` of the (centre-cropped) frontal image. The evaluator compares
plain text, so steered and baseline reports are both reduced to their phrases. Unlike the
official parser this one tolerates output cut off at the token limit (an unclosed `<obj>`), and
it keeps only boxes a reader can draw: every coordinate a bin inside the image (0 ≤ bin < `bins`;
a model may spell `<x150>` out of ordinary tokens), corners put in order (x0 ≤ x1, y0 ≤ y1).
`grounding_records` is what the study store keeps per generation (`generations.grounding`).
"""

from __future__ import annotations

import re
from typing import Any

PHRASE_START, PHRASE_END = "<obj>", "</obj>"
BOX_START, BOX_END = "<box>", "</box>"
NUM_BOX_BINS = 100

Box = tuple[float, float, float, float]

_BOX = re.compile(r"<box>(.*?)(?:</box>|$)", re.S)
_COORDS = re.compile(r"<x(\d+)><y(\d+)><x(\d+)><y(\d+)>")
_STRAY = re.compile(r"</?obj>|</?box>|<[xy]\d+>")
_PHRASE = re.compile(r"<obj>(.*?)(?:</obj>|$)", re.S)


def is_grounded(text: str) -> bool:
    return any(tag in text for tag in (PHRASE_START, PHRASE_END, BOX_START, BOX_END))


def grounded_to_plain(text: str) -> str:
    """Drop boxes, phrase tags and stray coordinate tokens; phrases become consecutive sentences."""
    text = text.strip()
    if not is_grounded(text) and not _STRAY.search(text):
        return text
    text = _BOX.sub(" ", text)
    text = _STRAY.sub(" ", text)
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s+([.,;:])", r"\1", text)


def parse_grounded(text: str, bins: int = NUM_BOX_BINS) -> list[tuple[str, list[Box] | None]]:
    """Phrases with their boxes (normalised to 0–1, bin centres); None for ungrounded phrases."""
    text = text.strip()
    if not is_grounded(text):
        return [(text, None)] if text else []
    phrases: list[tuple[str, list[Box] | None]] = []
    pos = 0
    for match in _PHRASE.finditer(text):
        _outside(text[pos : match.start()], phrases)  # text the model wrote outside any <obj>
        pos = match.end()
        body = match.group(1)
        cut = body.find(BOX_START)
        if cut < 0:
            _outside(body, phrases)  # a phrase without boxes (an empty <obj></obj> is none)
            continue
        boxes: list[Box] = []
        for box_text in _BOX.findall(body[cut:]):
            coords = _COORDS.search(box_text)
            if coords and all(int(c) < bins for c in coords.groups()):
                x0, y0, x1, y1 = ((int(c) + 0.5) / bins for c in coords.groups())
                boxes.append((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
        phrases.append((body[:cut].strip(), boxes))
    _outside(text[pos:], phrases)
    return phrases


def _outside(segment: str, phrases: list[tuple[str, list[Box] | None]]) -> None:
    plain = grounded_to_plain(segment)
    if plain:
        phrases.append((plain, None))


def grounding_records(text: str, bins: int = NUM_BOX_BINS) -> list[dict[str, Any]]:
    """The stored form of a grounded report: its phrases in order, each `{"text", "boxes"}` with
    boxes as `[x0, y0, x1, y1]` normalised to the frontal image (empty list: no box). Phrases
    without text and without boxes are left out."""
    out: list[dict[str, Any]] = []
    for phrase, boxes in parse_grounded(text, bins):
        if not phrase and not boxes:
            continue
        out.append({"text": phrase, "boxes": [[round(v, 4) for v in box] for box in boxes or []]})
    return out
