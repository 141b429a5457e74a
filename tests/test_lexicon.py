"""Unit tests of the lexicon data, the lexicon extractor (cue scopes, modifiers), the entity
diff, target matching and concept resolution."""

from __future__ import annotations

import subprocess
import sys

import pytest

from evaluation.diff import EntityDiff, diff_entities, diff_reports, summarise
from evaluation.entities import Entity
from evaluation.extractors import get_extractor
from evaluation.lexicon import (
    Lexicon,
    LexiconError,
    LexiconExtractor,
    UnknownConceptError,
    expand_phrase,
    load_lexicon,
    resolve_concepts,
)
from evaluation.targets import match_targets, parse_direction
from steering.errors import RadsteerError


@pytest.fixture(scope="module")
def lex() -> Lexicon:
    return load_lexicon()


@pytest.fixture(scope="module")
def x(lex: Lexicon) -> LexiconExtractor:
    return LexiconExtractor(lex)


def obs(x: LexiconExtractor, text: str) -> dict[str, tuple[str, dict[str, str]]]:
    """concept -> (assertion, modifiers) of the observations of one text."""
    return {e.concept or e.text: (e.assertion, e.modifiers) for e in x.extract_one(text) if e.kind == "observation"}


# ------------------------------------------------------------------ the data

def test_every_synonym_reads_as_its_own_concept(lex: Lexicon, x: LexiconExtractor) -> None:
    wrong = []
    for c in lex.concepts.values():
        for phrase in c.synonyms:
            if [e.concept for e in x.extract_one(phrase)] != [c.id]:
                wrong.append((c.id, phrase))
        for phrase in c.absent_forms:
            if [(e.concept, e.assertion) for e in x.extract_one(phrase)] != [(c.id, "absent")]:
                wrong.append((c.id, phrase))
    assert not wrong


def test_look_alikes_stay_look_alikes(lex: Lexicon, x: LexiconExtractor) -> None:
    checked = 0
    for c in lex.concepts.values():
        for phrase in c.look_alikes:
            assert c.id not in [e.concept for e in x.extract_one(phrase)], (c.id, phrase)
            checked += 1
    assert checked >= 30
    assert obs(x, "The line is unchanged.") == {}
    assert obs(x, "Chest radiograph.") == {}
    assert obs(x, "Mass effect on the trachea.") == {}
    assert set(obs(x, "Chest tube in place.")) == {"chest_tube"}


def test_the_issue_vocabulary_is_there(lex: Lexicon) -> None:
    for name in ["pacemaker", "ICD", "AICD", "cardiac device", "ET tube", "endotracheal tube", "ETT", "NG tube",
                 "nasogastric", "enteric tube", "feeding tube", "chest tube", "central venous catheter", "CVC",
                 "IJ line", "subclavian line", "PICC", "sternotomy wires", "median sternotomy",
                 "pleural effusion", "pneumothorax", "cardiomegaly", "enlarged cardiac silhouette", "consolidation",
                 "atelectasis", "pulmonary oedema", "pulmonary edema", "vascular congestion", "pneumonia",
                 "nodule", "mass", "fracture", "hiatal hernia", "emphysema", "opacity", "interstitial markings",
                 "hyperinflation", "scoliosis", "haemothorax", "hemothorax"]:
        assert resolve_concepts(name, lex), name
    assert resolve_concepts(["pulmonary oedema", "edema", "Pulmonary Edema"], lex) == ["pulmonary_edema"]
    assert resolve_concepts("ICD", lex) != resolve_concepts("pacemaker", lex)
    assert lex.related("pacemaker", "cardiac_device") and not lex.related("pacemaker", "icd")


def test_phrase_expansion() -> None:
    assert expand_phrase("(heart|cardiac silhouette) (is|) enlarged") == [
        "heart is enlarged", "heart enlarged", "cardiac silhouette is enlarged", "cardiac silhouette enlarged"]


def test_conflicting_phrases_are_refused() -> None:
    data = {"concepts": [{"id": "a", "kind": "finding", "synonyms": ["thing"]},
                         {"id": "b", "kind": "finding", "synonyms": ["thing"]}]}
    with pytest.raises(LexiconError, match="'thing' is both obs a and obs b"):
        Lexicon(data)


def test_malformed_lexicon_entries_are_named() -> None:
    with pytest.raises(LexiconError, match=r"cues.negation_pre: False is not a phrase \(quote it"):
        Lexicon({"cues": {"negation_pre": [False]}})  # what YAML makes of an unquoted `no`
    with pytest.raises(LexiconError, match="concepts\\[0\\] needs an id and a kind"):
        Lexicon({"concepts": [{"id": "x", "kind": "organ"}]})
    with pytest.raises(LexiconError, match="parent 'nope' is not a concept"):
        Lexicon({"concepts": [{"id": "x", "kind": "finding", "synonyms": ["x"], "parent": "nope"}]})
    with pytest.raises(LexiconError, match="look-alike 'big x' is still read as x"):
        Lexicon({"concepts": [{"id": "x", "kind": "finding", "synonyms": ["big x"], "not": ["big x"]}]})


def test_lexicon_file_errors(tmp_path) -> None:
    with pytest.raises(LexiconError, match="lexicon file not found"):
        load_lexicon(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("concepts: [unclosed\n")
    with pytest.raises(LexiconError, match="is not valid YAML"):
        load_lexicon(bad)


# ------------------------------------------------------------------ negation scope

def test_negation_covers_a_coordinated_list(x: LexiconExtractor) -> None:
    got = obs(x, "No focal consolidation, pleural effusion, or pneumothorax.")
    assert {k: v[0] for k, v in got.items()} == {"consolidation": "absent", "pleural_effusion": "absent",
                                                 "pneumothorax": "absent"}
    assert obs(x, "No pneumothorax or effusion.")["pleural_effusion"][0] == "absent"
    assert obs(x, "Neither effusion nor pneumothorax.")["pneumothorax"][0] == "absent"


@pytest.mark.parametrize("text", [
    "No pneumothorax but a small left pleural effusion.",
    "No pneumothorax; however, small left pleural effusion.",
    "No pneumothorax. Small left pleural effusion.",
    "No pneumothorax; small left pleural effusion.",
    "No pneumothorax, small left pleural effusion.",
    "No pneumothorax and small left pleural effusion.",
    "No pneumothorax, there is a small left pleural effusion.",
    "No pneumothorax, pleural effusion is present on the left.",
])
def test_negation_scope_ends(x: LexiconExtractor, text: str) -> None:
    got = obs(x, text)
    assert got["pneumothorax"][0] == "absent"
    assert got["pleural_effusion"][0] == "present", text


def test_negation_scope_ends_before_a_verb_phrase_finding(x: LexiconExtractor) -> None:
    got = obs(x, "No effusion, heart is enlarged.")
    assert got["pleural_effusion"][0] == "absent" and got["cardiomegaly"][0] == "present"


@pytest.mark.parametrize(("text", "concept"), [
    ("The left pleural effusion has resolved.", "pleural_effusion"),
    ("Pneumothorax is not seen.", "pneumothorax"),
    ("The endotracheal tube has been removed.", "endotracheal_tube"),
    ("Interval resolution of the right lower lobe consolidation.", "consolidation"),
    ("Without evidence of pneumonia.", "pneumonia"),
    ("The patient has been extubated.", "endotracheal_tube"),
    ("Normal heart size.", "cardiomegaly"),
    ("The heart is not enlarged.", "cardiomegaly"),
])
def test_absent(x: LexiconExtractor, text: str, concept: str) -> None:
    assert obs(x, text)[concept][0] == "absent"


def test_pseudo_negation_is_a_change_not_a_negation(x: LexiconExtractor) -> None:
    assert obs(x, "No change in the moderate right pleural effusion.")["pleural_effusion"] == (
        "present", {"change": "unchanged", "laterality": "right", "severity": "moderate"})
    assert obs(x, "No significant interval change in cardiomegaly.")["cardiomegaly"][0] == "present"


# ------------------------------------------------------------------ uncertainty

@pytest.mark.parametrize("text", [
    "Possible left lower lobe pneumonia.",
    "Findings may represent pneumonia.",
    "Cannot exclude pneumonia.",
    "Pneumonia cannot be excluded.",
    "Pneumonia is not excluded.",
    "Suspicious for pneumonia.",
    "Questionable pneumonia.",
    "Likely pneumonia.",
    "Pneumonia?",
    "?pneumonia in the left lower zone",
    "Atelectasis versus pneumonia.",
    "Can\u2019t exclude pneumonia.",
])
def test_uncertain(x: LexiconExtractor, text: str) -> None:
    assert obs(x, text)["pneumonia"][0] == "uncertain"


def test_uncertainty_scope_ends_at_a_sentence_and_a_comma(x: LexiconExtractor) -> None:
    got = obs(x, "Possible pneumonia. Small pleural effusion.")
    assert got["pneumonia"][0] == "uncertain" and got["pleural_effusion"][0] == "present"
    got = obs(x, "Left basilar opacity, likely atelectasis.")
    assert got["opacity"][0] == "present" and got["atelectasis"][0] == "uncertain"


def test_the_nearest_cue_wins(x: LexiconExtractor) -> None:
    assert obs(x, "No definite pneumothorax.")["pneumothorax"][0] == "absent"
    assert obs(x, "Possible effusion has resolved.")["pleural_effusion"][0] == "absent"


# ------------------------------------------------------------------ modifiers and anatomy

def test_modifiers_attach_within_their_clause(x: LexiconExtractor) -> None:
    got = obs(x, "Small left pleural effusion and moderate right pneumothorax.")
    assert got["pleural_effusion"][1] == {"laterality": "left", "severity": "small"}
    assert got["pneumothorax"][1] == {"laterality": "right", "severity": "moderate"}
    got = obs(x, "Pleural effusion on the right, large.")
    assert got["pleural_effusion"][1] == {"laterality": "right", "severity": "large"}
    assert obs(x, "Left-sided pneumothorax.")["pneumothorax"][1] == {"laterality": "left"}
    assert obs(x, "Bibasilar atelectasis.")["atelectasis"][1] == {"laterality": "bilateral"}
    assert obs(x, "Consolidation in the lingula.")["consolidation"][1] == {"laterality": "left"}
    assert obs(x, "The cardiac silhouette is severely enlarged.")["cardiomegaly"][1] == {"severity": "severe"}
    assert obs(x, "Elevation of the right hemidiaphragm.")["elevated_hemidiaphragm"][1] == {"laterality": "right"}
    assert obs(x, "Effusion, increased since the prior study.")["pleural_effusion"][1] == {"change": "increased"}


def test_anatomy_entities_and_the_observation_site(x: LexiconExtractor) -> None:
    ents = x.extract_one("Opacity in the right lower lobe.")
    anat = [e for e in ents if e.kind == "anatomy"]
    assert [(e.concept, e.assertion, e.modifiers) for e in anat] == [("lower_lobe", "present", {"laterality": "right"})]
    (o,) = [e for e in ents if e.kind == "observation"]
    assert (o.concept, o.anatomy, o.modifiers) == ("opacity", "lower_lobe", {"laterality": "right"})


def test_offsets_point_into_the_original_text(x: LexiconExtractor) -> None:
    text = "IMPRESSION:\n  Small LEFT Pleural Effusion.  Possible  R.L.L. pneumonia?"
    for e in x.extract_one(text):
        assert text[e.start:e.end] == e.text
    assert obs(x, text)["pleural_effusion"] == ("present", {"laterality": "left", "severity": "small"})


def test_edge_inputs(x: LexiconExtractor) -> None:
    assert x.extract([]) == []
    assert x.extract(["", "   ", "...", "1.5"]) == [[], [], [], []]
    assert [(e.text, e.concept) for e in x.extract_one("1.5 cm")] == [("1.5 cm", "measurement")]  # textual concept
    assert x.extract_one("Nodule measuring 1.5 cm. No effusion.")[0].concept == "nodule"


def test_registry_and_batches(x: LexiconExtractor) -> None:
    ex = get_extractor("lexicon")
    assert ex.name == "lexicon"
    texts = ["No effusion.", "Small left effusion.", "Possible pneumonia."]
    assert ex.extract(texts) == [x.extract_one(t) for t in texts]


def test_evaluation_modules_do_not_import_torch() -> None:
    code = ("import sys, evaluation.lexicon, evaluation.diff, evaluation.targets, evaluation.labelling; "
            "from evaluation.lexicon import LexiconExtractor; LexiconExtractor().extract(['No effusion.']); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ resolve_concepts

def test_resolve_concepts(lex: Lexicon) -> None:
    assert resolve_concepts("pleural_effusion") == ["pleural_effusion"]
    assert resolve_concepts("Pleural Effusion") == ["pleural_effusion"]
    assert resolve_concepts(["effusions", "pleural fluid", "PTX"]) == ["pleural_effusion", "pneumothorax"]
    assert resolve_concepts(["pacemaker leads", "pacer"]) == ["pacemaker"]
    assert resolve_concepts("nasogastric tube") == resolve_concepts("feeding tube") == ["enteric_tube"]


def test_unknown_concept_lists_close_matches() -> None:
    with pytest.raises(UnknownConceptError) as info:
        resolve_concepts("pleural efusion")
    assert isinstance(info.value, RadsteerError)
    assert info.value.suggestions[0] == "pleural_effusion"
    assert "did you mean: pleural_effusion" in str(info.value)
    with pytest.raises(UnknownConceptError, match="is an anatomy term"):
        resolve_concepts("lower lobe")
    with pytest.raises(UnknownConceptError, match="not a non-empty string"):
        resolve_concepts([""])
    with pytest.raises(UnknownConceptError) as info:
        resolve_concepts("xylophone")
    assert info.value.suggestions == [] and "did you mean" not in str(info.value)


# ------------------------------------------------------------------ diff and targets

def test_diff_json_round_trip_and_summary() -> None:
    d = diff_reports("Small left pleural effusion.", "Large bilateral pleural effusions. New pacemaker.")
    assert sorted(d.describe()) == ["added pacemaker present", "laterality pleural_effusion left>bilateral",
                                    "severity pleural_effusion small>large"]
    assert d.summary().startswith("3 change(s) (1 added, 2 modifier changed): ")
    back = EntityDiff.from_json(d.to_json())
    assert back.describe() == d.describe() and back.items == d.items
    assert not diff_reports("No effusion.", "No pleural effusion.")
    assert diff_reports("No effusion.", "No pleural effusion.").summary() == "no clinically meaningful change"


def test_diff_of_other_backends_entities_normalises_text(lex: Lexicon) -> None:
    """RadGraph-style entities: no concept ids, free-text modifiers, non-finding words."""
    base = [Entity("effusion", "observation", "present", None, {"laterality": "left", "severity": "Small"}),
            Entity("clear", "observation", "present"), Entity("lungs", "anatomy")]
    steered = [Entity("pleural effusions", "observation", "present", None, {"laterality": "left-sided",
                                                                               "severity": "mild"}),
               Entity("normal", "observation", "present"), Entity("widget", "observation", "present")]
    d = diff_entities(base, steered, lex)
    assert d.describe() == ["added widget present"]
    assert diff_entities(base, steered, lex, ignore_unnormalised=True).describe() == []
    states = summarise(base, lex)
    assert list(states) == ["pleural_effusion"] and states["pleural_effusion"].severity == "small"


def test_targets_descendants_and_directions(lex: Lexicon) -> None:
    d = diff_reports("Lungs are clear.", "Left chest wall pacemaker.")
    assert match_targets(d, "cardiac device", +1).label == "on"
    assert match_targets(d, "cardiac device", -1).label == "off"
    assert match_targets(d, "icd", +1).label == "off"  # a sibling is not the target
    m = match_targets(diff_reports("Small left effusion.", "Large right effusion."), "effusion", "+1")
    assert m.label == "on"  # the side switch accompanies an on-target severity increase
    assert [(e["description"], e["reason"]) for e in m.evidence["on_target"]] == [
        ("laterality pleural_effusion left>right", "accompanies an on-target change of the same concept"),
        ("severity pleural_effusion small>large", "target concept moved toward presence (steering direction +1)")]
    assert m.evidence["off_target"] == []
    sideways = match_targets(diff_reports("Small left effusion.", "Small right effusion."), "effusion", +1)
    assert sideways.label == "off"
    assert sideways.evidence["off_target"][0]["reason"] == (
        "target concept changed without moving in the steering direction")
    assert m.to_json()["evidence"]["targets"] == ["pleural_effusion"]


@pytest.mark.parametrize("bad", [0, 2, "up", True, None, 0.5])
def test_direction_must_be_plus_or_minus_one(bad) -> None:
    with pytest.raises(RadsteerError, match="direction must be \\+1 or -1"):
        parse_direction(bad)


def test_direction_spellings() -> None:
    assert [parse_direction(v) for v in (1, -1, "+1", "-1", "+", "-", 1.0)] == [1, -1, 1, -1, 1, -1, 1]
