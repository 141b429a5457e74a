"""The lexicon backend, entity diff and target matching on hand-written report pairs
(tests/data/lexicon_pairs.yaml, and tests/data/family_pairs.yaml for the longitudinal and
textual families, hedging, negation scope, laterality / severity and rewordings): every pair's
diff and label must come out as written."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from evaluation.diff import diff_entities
from evaluation.labels import LABELS
from evaluation.lexicon import LexiconExtractor
from evaluation.targets import match_targets

DATA = Path(__file__).parent / "data"
PAIRS = yaml.safe_load((DATA / "lexicon_pairs.yaml").read_text(encoding="utf-8"))
FAMILY_PAIRS = yaml.safe_load((DATA / "family_pairs.yaml").read_text(encoding="utf-8"))
CATEGORIES = {"negation", "uncertainty", "laterality", "severity", "synonyms", "comparison", "devices",
              "paraphrase", "multiple"}
FAMILY_CATEGORIES = {"longitudinal", "textual", "hedging", "negation_scope", "laterality_severity", "rewording"}


@pytest.fixture(scope="module")
def extractor() -> LexiconExtractor:
    return LexiconExtractor()


def test_the_pair_set_covers_what_the_issue_asks() -> None:
    assert len(PAIRS) >= 60
    assert len({p["id"] for p in PAIRS}) == len(PAIRS)
    counts = Counter(p["category"] for p in PAIRS)
    assert set(counts) == CATEGORIES
    assert all(n >= 3 for n in counts.values()), counts
    labels = Counter(p["label"] for p in PAIRS)
    assert set(labels) == set(LABELS), labels  # every label occurs
    assert {p["direction"] for p in PAIRS} == {1, -1}


def test_the_family_pair_set_covers_what_issue_12_asks() -> None:
    from evaluation.vocabulary import resolve

    assert len(FAMILY_PAIRS) >= 60
    assert len({p["id"] for p in PAIRS + FAMILY_PAIRS}) == len(PAIRS) + len(FAMILY_PAIRS)
    counts = Counter(p["category"] for p in FAMILY_PAIRS)
    assert set(counts) == FAMILY_CATEGORIES and all(n >= 8 for n in counts.values()), counts
    assert set(Counter(p["label"] for p in FAMILY_PAIRS)) == set(LABELS)
    assert {p["direction"] for p in FAMILY_PAIRS} == {1, -1}
    families = Counter(resolve(p["target"]) for p in FAMILY_PAIRS)
    for cid in ("comparison", "worsening", "improvement", "stability", "new_finding", "resolution",
                "recommendation", "communication", "technical_limitation", "measurement"):
        assert families[cid] >= 1, cid
    assert sum(p["category"] == "rewording" or not p["diff"] for p in FAMILY_PAIRS) >= 15


@pytest.mark.parametrize("pair", PAIRS + FAMILY_PAIRS, ids=[p["id"] for p in PAIRS + FAMILY_PAIRS])
def test_pair(pair: dict, extractor: LexiconExtractor) -> None:
    base, steered = extractor.extract([pair["baseline"], pair["steered"]])
    diff = diff_entities(base, steered)
    assert sorted(diff.describe()) == sorted(pair["diff"]), diff.summary()
    assert diff.meaningful == bool(pair["diff"])
    match = match_targets(diff, pair["target"], pair["direction"])
    assert match.label == pair["label"], match.evidence
    # the evidence accounts for every diff exactly once
    counted = [e["description"] for e in match.evidence["on_target"] + match.evidence["off_target"]]
    assert sorted(counted) == sorted(pair["diff"])


def test_a_pair_against_itself_never_changes(extractor: LexiconExtractor) -> None:
    for pair in PAIRS + FAMILY_PAIRS:
        for text in (pair["baseline"], pair["steered"]):
            ents = extractor.extract_one(text)
            assert not diff_entities(ents, ents).items, text
