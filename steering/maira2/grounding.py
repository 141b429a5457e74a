"""Grounded MAIRA-2 output → phrases with boxes, or plain report text.

Grounded reporting writes each finding as `<obj>phrase<box><xA><yB><xC><yD></box>…</obj>`, the
coordinates being bins of 1/`bins` of the (centre-cropped) frontal image. The evaluator compares
plain text, so steered and baseline reports are both reduced to their phrases. Unlike the
official parser this one tolerates output cut off at the token limit (an unclosed `<obj>`).
"""

from __future__ import annotations

import re

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
    for match in _PHRASE.finditer(text):
        body = match.group(1)
        cut = body.find(BOX_START)
        if cut < 0:
            phrases.append((body.strip(), None))
            continue
        boxes: list[Box] = []
        for box_text in _BOX.findall(body[cut:]):
            coords = _COORDS.search(box_text)
            if coords:
                x0, y0, x1, y1 = ((int(c) + 0.5) / bins for c in coords.groups())
                boxes.append((x0, y0, x1, y1))
        phrases.append((body[:cut].strip(), boxes))
    return phrases
