"""The offline `lexicon` explainer and scorer: deterministic, no server, no weights.

Explainer: the vocabulary concepts *enriched* in a feature's activating contexts versus its
non-activating ones — smoothed log-odds (add ½) of "mentions concept c" between the two groups of
shown contexts, kept when the concept occurs in at least `min_count` activating contexts and
its log-odds reach `min_log_odds` and `min_z` standard errors; at most `max_concepts`, best first, a concept dropped when an
ancestor or descendant already stands for it. The description names them ("mentions of pleural
effusion"); the targets are their ids. A feature with no enriched concept gets no targets, so
its detection F1 is 0: the baseline an LLM explainer must beat.

Scorer: a held-out context is predicted active when it mentions one of the targets (or a more
specific concept under one, e.g. "pacemaker" under "cardiac_device").

A mention is any extracted observation of the concept, whatever its assertion ("no pacemaker"
mentions a pacemaker): features read words, not clinical truth.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evaluation.interpret_examples import Context, Example, FeatureEvidence


@functools.lru_cache(maxsize=1)
def _extractor():
    from evaluation.lexicon import LexiconExtractor

    return LexiconExtractor()


def concept_category(cid: str) -> str:
    """finding / device / anatomy (/ longitudinal / textual once the vocabulary has them)."""
    try:
        from evaluation import vocabulary  # the concept vocabulary (issue 12), when present
    except ImportError:
        c = _extractor().lexicon.concepts.get(cid)
        return c.kind if c is not None else "unknown"
    try:
        return vocabulary.category(cid)
    except Exception:  # noqa: BLE001 - an id the vocabulary does not know
        return "unknown"


@functools.lru_cache(maxsize=200_000)
def concepts_in(text: str) -> frozenset[str]:
    """Concept ids the lexicon finds in `text` that can be targets (not anatomy), whatever their
    assertion. Full extraction, not just the phrase trie: longitudinal and textual concepts
    (e.g. a measurement) are found by the extractor's own rules. Cached: contexts repeat across
    features."""
    return frozenset(e.concept for e in _extractor().extract_one(text)
                     if e.concept and _targetable(e.concept))


@functools.lru_cache(maxsize=4096)
def _targetable(cid: str) -> bool:
    return concept_category(cid) not in ("anatomy", "unknown")


def concept_name(cid: str) -> str:
    c = _extractor().lexicon.concepts.get(cid)
    return c.name if c is not None else cid.replace("_", " ")


def _ancestors(cid: str) -> list[str]:
    return _extractor().lexicon.ancestors(cid)


def mentions_any(text: str, targets: Sequence[str]) -> bool:
    """Does `text` mention one of `targets` or a concept below one of them?"""
    if not targets:
        return False
    wanted = set(targets)
    return any(c in wanted or wanted.intersection(_ancestors(c)) for c in concepts_in(text))


@dataclass(frozen=True)
class LexiconSettings:
    min_count: int = 3
    min_log_odds: float = 1.0
    min_z: float = 2.0  # log-odds / its standard error: chance enrichment in a few contexts is not a concept
    max_concepts: int = 3

    def describe(self) -> dict[str, Any]:
        return {"min_count": self.min_count, "min_log_odds": self.min_log_odds, "min_z": self.min_z,
                "max_concepts": self.max_concepts}


@dataclass
class Explanation:
    """An explainer's answer for one feature (or its error)."""

    feature_id: str
    description: str
    targets: list[str]
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    exchanges: list[dict[str, Any]] = field(default_factory=list)  # raw requests/answers (LLM)


def describe_concepts(targets: Sequence[str]) -> str:
    names = [concept_name(t) for t in targets]
    if not names:
        return ""
    if len(names) == 1:
        return f"mentions of {names[0]}"
    return f"mentions of {', '.join(names[:-1])} or {names[-1]}"


NO_CONCEPT = "no vocabulary concept is enriched in its activating contexts"


def enrichment(active: Sequence[Context], inactive: Sequence[Context]) -> list[dict[str, Any]]:
    """Per concept seen in the activating contexts: counts and smoothed log-odds, best first."""
    n_a, n_b = len(active), len(inactive)
    ca: Counter[str] = Counter()
    cb: Counter[str] = Counter()
    for c in active:
        ca.update(concepts_in(c.text))
    for c in inactive:
        cb.update(concepts_in(c.text))
    rows = []
    for cid, a in ca.items():
        b = cb.get(cid, 0)
        lo = math.log((a + 0.5) / (n_a - a + 0.5)) - math.log((b + 0.5) / (n_b - b + 0.5))
        se = math.sqrt(1 / (a + 0.5) + 1 / (n_a - a + 0.5) + 1 / (b + 0.5) + 1 / (n_b - b + 0.5))
        rows.append({"concept": cid, "active": a, "inactive": b, "n_active": n_a, "n_inactive": n_b,
                     "log_odds": round(lo, 4), "z": round(lo / se, 4)})
    rows.sort(key=lambda r: (-r["log_odds"], -r["active"], r["concept"]))
    return rows


class LexiconExplainer:
    name = "lexicon"

    def __init__(self, settings: LexiconSettings | None = None) -> None:
        self.settings = settings or LexiconSettings()

    def describe(self) -> dict[str, Any]:
        return {"explainer": self.name, **self.settings.describe()}

    def explain(self, ev: FeatureEvidence) -> Explanation:
        s = self.settings
        table = enrichment(ev.shown_active, ev.shown_inactive)
        chosen: list[str] = []
        for row in table:
            if len(chosen) >= s.max_concepts:
                break
            if row["active"] < s.min_count or row["log_odds"] < s.min_log_odds or row["z"] < s.min_z:
                continue
            cid = row["concept"]
            if any(cid in _ancestors(c) or c in _ancestors(cid) for c in chosen):
                continue
            chosen.append(cid)
        description = describe_concepts(chosen) or NO_CONCEPT
        return Explanation(ev.feature_id, description, chosen, details={"enrichment": table[:10]})

    def explain_many(self, evidence: Sequence[FeatureEvidence]) -> list[Explanation]:
        return [self.explain(ev) for ev in evidence]


class LexiconScorer:
    name = "lexicon"

    def describe(self) -> dict[str, Any]:
        return {"scorer": self.name}

    def predict(self, explanation: Explanation, examples: Sequence[Example]) -> list[bool]:
        return [mentions_any(e.text, explanation.targets) for e in examples]

    def score_many(self, jobs: Sequence[tuple[Explanation, Sequence[Example]]]) -> list[tuple[list[bool | None], list[dict[str, Any]], str | None]]:
        """(predictions, raw exchanges, error) per (explanation, examples) job."""
        return [(list(self.predict(ex, examples)), [], None) for ex, examples in jobs]
