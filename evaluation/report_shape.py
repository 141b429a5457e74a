"""Does a generated text read as a findings section? (The demo's report-shape benchmark.)

A text is *report-shaped* when it has no markdown (bold, headings, code), no list numbering or
bullets, and mentions at least one chest finding, device or anatomical structure that the offline
lexicon recognises (present, absent or uncertain: "No pleural effusion." is a finding statement).
Chat answers about a report ("The findings section … contains: 1. **Indication** …") fail it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MARKDOWN = re.compile(r"\*\*|__|`|^\s*#{1,6}\s", re.M)
LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s", re.M)
CHEST_CATEGORIES = ("finding", "device", "anatomy")


def is_report_shaped(text: str, extractor=None) -> bool:
    from evaluation.lexicon import LexiconExtractor
    from evaluation.vocabulary import category

    if not text.strip() or MARKDOWN.search(text) or LIST_ITEM.search(text):
        return False
    entities = (extractor or LexiconExtractor()).extract_one(text)
    return any(e.kind == "anatomy" or (e.concept and category(e.concept) in CHEST_CATEGORIES) for e in entities)


def report_shaped_count(texts: Iterable[str]) -> tuple[int, int]:
    """(report-shaped, total) over `texts`."""
    from evaluation.lexicon import LexiconExtractor

    extractor = LexiconExtractor()
    flags = [is_report_shaped(t, extractor) for t in texts]
    return sum(flags), len(flags)
