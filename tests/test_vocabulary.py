"""The concept vocabulary (evaluation/vocabulary.py): the stable API other packages use, the
new longitudinal and textual families, name resolution with suggestions, and `radsteer concepts`."""

from __future__ import annotations

import json

import pytest

from evaluation import vocabulary
from evaluation.vocabulary import CATEGORIES, LexiconError, UnknownConceptError, Vocabulary
from protocols.cli import main


def test_every_concept_has_a_known_category() -> None:
    every = vocabulary.concepts()
    assert {c.category for c in every} == set(CATEGORIES)
    assert [c.id for c in vocabulary.concepts("longitudinal")] == [
        "comparison", "worsening", "improvement", "stability", "new_finding", "resolution"]
    assert [c.id for c in vocabulary.concepts("textual")] == [
        "recommendation", "communication", "technical_limitation", "measurement"]
    assert vocabulary.category("pacemaker") == "device" and vocabulary.category("lingula") == "anatomy"
    with pytest.raises(ValueError, match="unknown concept category 'organ'"):
        vocabulary.concepts("organ")


@pytest.mark.parametrize(("name", "cid"), [
    ("worsening", "worsening"), ("improvement", "improvement"), ("unchanged", "stability"),
    ("stable", "stability"), ("new finding", "new_finding"), ("resolved", "resolution"),
    ("comparison with prior", "comparison"), ("comparison to prior study", "comparison"),
    ("Comparison With Prior", "comparison"), ("recommendation", "recommendation"),
    ("follow-up recommendation", "recommendation"), ("communication of findings", "communication"),
    ("technical limitation", "technical_limitation"), ("measurement", "measurement"),
    ("new_finding", "new_finding"), ("effusions", "pleural_effusion"), ("pacemaker leads", "pacemaker"),
])
def test_plain_english_names_resolve(name: str, cid: str) -> None:
    assert vocabulary.resolve(name) == cid


def test_unknown_names_are_refused_with_the_nearest_names() -> None:
    with pytest.raises(UnknownConceptError) as info:
        vocabulary.resolve("no_such_concept")
    assert "radsteer concepts" in str(info.value)
    with pytest.raises(UnknownConceptError) as info:
        vocabulary.resolve("worsning")
    assert info.value.suggestions[0] == "worsening"
    with pytest.raises(UnknownConceptError) as info:
        vocabulary.resolve("recomendation")
    assert info.value.suggestions[0] == "recommendation"
    with pytest.raises(UnknownConceptError, match="anatomy term"):
        vocabulary.resolve("lingula")
    assert vocabulary.resolve_all(["stable", "unchanged", "effusion"]) == ["stability", "pleural_effusion"]


def test_longitudinal_concepts_name_the_change_values_they_stand_for() -> None:
    v = vocabulary.load_vocabulary()
    assert v.longitudinal_for_change("increased") == ["comparison", "worsening"]
    assert v.longitudinal_for_change("resolved") == ["comparison", "resolution"]
    assert v.longitudinal_for_change("unstated") == v.longitudinal_for_change(None) == []
    assert set(v.change_rank) == {"new", "increased", "decreased", "unchanged", "resolved"}


def test_a_malformed_change_value_is_named() -> None:
    with pytest.raises(LexiconError, match="worse.change 'bigger' is not a change value"):
        Vocabulary({"concepts": [{"id": "worse", "kind": "longitudinal", "change": ["bigger"]}]})
    with pytest.raises(LexiconError, match="x.change is only for longitudinal concepts"):
        Vocabulary({"modifiers": {"change": {"new": {"rank": 1, "words": ["new"]}}},
                    "concepts": [{"id": "x", "kind": "finding", "change": ["new"]}]})


def test_radsteer_concepts_lists_and_searches(capsys) -> None:
    assert main(["concepts", "effusion"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["pleural_effusion", "finding"]
    assert all("effusion" in line or "haemothorax" in line or "empyema" in line for line in out)
    assert main(["concepts", "--category", "longitudinal", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows][:2] == ["comparison", "worsening"] and rows[1]["change"] == ["increased"]
    assert main(["concepts", "xylophone"]) == 1
    assert "no concept matches 'xylophone'" in capsys.readouterr().out
    assert main(["concepts"]) == 0
    listed = capsys.readouterr().out
    assert "lingula" not in listed and "recommendation" in listed  # anatomy only on request
