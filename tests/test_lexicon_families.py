"""The cue parser on the new families (issue 12): statements, resolution, hedged forms, and the
scope rules that keep statements apart from findings."""

from __future__ import annotations

import pytest

from evaluation.lexicon import LexiconExtractor, load_lexicon


@pytest.fixture(scope="module")
def x() -> LexiconExtractor:
    return LexiconExtractor()


def read(x: LexiconExtractor, text: str) -> dict[str, tuple[str, dict[str, str]]]:
    return {e.concept or e.text: (e.assertion, e.modifiers) for e in x.extract_one(text) if e.kind == "observation"}


def test_every_uncertain_form_reads_as_its_concept_uncertain(x: LexiconExtractor) -> None:
    lex = load_lexicon()
    forms = [(c.id, f) for c in lex.concepts.values() for f in c.uncertain_forms]
    assert len(forms) >= 20
    wrong = [(cid, f) for cid, f in forms
             if [(e.concept, e.assertion) for e in x.extract_one(f) if e.kind == "observation"] != [(cid, "uncertain")]]
    assert not wrong


@pytest.mark.parametrize(("text", "expected"), [
    ("No interval change.", {"stability": "present"}),
    ("No new findings.", {"new_finding": "absent"}),
    ("Interval worsening.", {"worsening": "present"}),
    ("Compared with the prior study, the heart is enlarged.", {"comparison": "present", "cardiomegaly": "present"}),
    ("No prior studies available for comparison.", {"comparison": "absent"}),
    ("No follow-up imaging is needed.", {"recommendation": "absent"}),
    ("No pneumothorax, recommend follow-up CT.", {"pneumothorax": "absent", "recommendation": "present"}),
    ("Findings discussed with Dr. Jones by telephone.", {"communication": "present"}),
    ("Possibly rotated.", {"technical_limitation": "uncertain"}),
    ("A 1.5 cm nodule.", {"measurement": "present", "nodule": "present"}),
    ("The line is unchanged in position.", {}),
    ("The line is unchanged.", {}),  # about a look-alike, not a stability statement
])
def test_statements(x: LexiconExtractor, text: str, expected: dict[str, str]) -> None:
    assert {k: v[0] for k, v in read(x, text).items()} == expected


def test_statements_never_take_a_findings_modifiers(x: LexiconExtractor) -> None:
    got = read(x, "Small left pleural effusion. Recommend follow-up left lateral view.")
    assert got["pleural_effusion"] == ("present", {"laterality": "left", "severity": "small"})
    assert got["recommendation"] == ("present", {})


def test_resolution_is_absence_with_the_change_resolved(x: LexiconExtractor) -> None:
    assert read(x, "The left pleural effusion has resolved.")["pleural_effusion"] == (
        "absent", {"change": "resolved", "laterality": "left"})
    assert read(x, "Interval resolution of the right lower lobe consolidation.")["consolidation"][1]["change"] == "resolved"
    assert read(x, "No pleural effusion.")["pleural_effusion"] == ("absent", {})  # plain negation: no change


def test_a_severity_word_inside_a_phrase_and_a_hedged_form_share_a_prefix(x: LexiconExtractor) -> None:
    assert read(x, "The cardiac silhouette is mildly enlarged.")["cardiomegaly"] == ("present", {"severity": "mild"})
    assert read(x, "The cardiac silhouette is mildly prominent.")["cardiomegaly"][0] == "uncertain"
