"""RadGraph backend: a tiny random-weight archive in the package's real format, loaded and run by
the radgraph package's own code offline; the mapping onto the Entity schema; offline errors."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from evaluation.entities import Entity
from evaluation.radgraph_mapping import (
    MODIFIER_KEYS,
    align_tokens,
    entities_from_radgraph,
    modifier_tables,
    parse_label,
)
from protocols.errors import RadsteerError

REPORTS = [
    "Small left pleural effusion. No pneumothorax.",
    "",
    "Heart size is normal, lungs clear.",
    "Normal",
    "Possible right lower lobe consolidation, likely atelectasis. Unchanged mild cardiomegaly "
    "compared with prior.",
    "Bilateral pleural effusions, moderate on the right. Pacemaker in place.",
]


# --- the mapping, on hand-written radgraph-style output ------------------------------------


def _doc() -> tuple[str, dict]:
    report = "Small left pleural effusion. No pneumothorax. Possible right lower lobe consolidation."
    text = "Small left pleural effusion . No pneumothorax . Possible right lower lobe consolidation ."
    # token index:  0     1    2       3      4 5  6            7 8        9     10    11   12
    ents = {
        "1": {"tokens": "Small", "label": "Observation::definitely present", "start_ix": 0, "end_ix": 0,
              "relations": [["modify", "4"]]},
        "2": {"tokens": "left", "label": "Anatomy::definitely present", "start_ix": 1, "end_ix": 1,
              "relations": [["modify", "3"]]},
        "3": {"tokens": "pleural", "label": "Anatomy::definitely present", "start_ix": 2, "end_ix": 2,
              "relations": []},
        "4": {"tokens": "effusion", "label": "Observation::definitely present", "start_ix": 3, "end_ix": 3,
              "relations": [["located_at", "3"]]},
        "5": {"tokens": "pneumothorax", "label": "Observation::definitely absent", "start_ix": 6, "end_ix": 6,
              "relations": []},
        "6": {"tokens": "right", "label": "Anatomy::definitely present", "start_ix": 9, "end_ix": 9,
              "relations": [["modify", "8"]]},
        "7": {"tokens": "lower", "label": "Anatomy::definitely present", "start_ix": 10, "end_ix": 10,
              "relations": [["modify", "8"]]},
        "8": {"tokens": "lobe", "label": "Anatomy::definitely present", "start_ix": 11, "end_ix": 11,
              "relations": []},
        "9": {"tokens": "consolidation", "label": "Observation::uncertain", "start_ix": 12, "end_ix": 12,
              "relations": [["located_at", "8"], ["suggestive_of", "5"]]},
    }
    return report, {"text": text, "entities": ents}


def test_mapping_of_a_known_annotation() -> None:
    report, doc = _doc()
    got = entities_from_radgraph(doc, report)
    assert got == [
        Entity("pleural", "anatomy", "present", None, {"laterality": "left"}, None, 11, 18),
        Entity("effusion", "observation", "present", None, {"severity": "small", "laterality": "left"},
               "left pleural", 19, 27),
        Entity("pneumothorax", "observation", "absent", None, {}, None, 32, 44),
        Entity("lobe", "anatomy", "present", None, {"laterality": "right"}, None, 67, 71),
        Entity("consolidation", "observation", "uncertain", None, {"laterality": "right"},
               "right lower lobe", 72, 85),
    ]
    for e in got:
        assert report[e.start : e.end] == e.text


def test_mapping_normalises_through_the_given_normaliser() -> None:
    report, doc = _doc()
    lexicon = {"pleural effusion": "pleural_effusion", "pneumothorax": "pneumothorax", "consolidation": "consolidation"}
    got = entities_from_radgraph(doc, report, normalise=lexicon.get)
    assert [(e.text, e.concept) for e in got] == [
        ("pleural", None),
        ("effusion", "pleural_effusion"),  # via its anatomy, laterality dropped: "pleural effusion"
        ("pneumothorax", "pneumothorax"),
        ("lobe", None),
        ("consolidation", "consolidation"),
    ]
    assert got[1].key() == "pleural_effusion" and got[3].key() == "lobe"


def test_assertion_of_the_head_follows_its_modifier_chain() -> None:
    report = "No large effusion; possibly increased opacity."
    doc = {
        "text": "No large effusion ; possibly increased opacity .",
        "entities": {
            "1": {"tokens": "large", "label": "Observation::definitely absent", "start_ix": 1, "end_ix": 1,
                  "relations": [["modify", "2"]]},
            "2": {"tokens": "effusion", "label": "Observation::definitely present", "start_ix": 2, "end_ix": 2,
                  "relations": []},
            "3": {"tokens": "increased", "label": "Observation::uncertain", "start_ix": 5, "end_ix": 5,
                  "relations": [["modify", "4"]]},
            "4": {"tokens": "opacity", "label": "Observation::definitely present", "start_ix": 6, "end_ix": 6,
                  "relations": [["modify", "4"], ["located_at", "99"]]},  # self-loop, dangling target
        },
    }
    got = entities_from_radgraph(doc, report)
    assert got == [
        Entity("effusion", "observation", "absent", None, {"severity": "large"}, None, 9, 17),
        # change words map to the change attribute from the vocabulary's own tables
        Entity("opacity", "observation", "uncertain", None, {"change": "increased"}, None, 38, 45),
    ]


def test_modify_cycles_keep_one_head_and_unaligned_tokens_get_no_offsets() -> None:
    report = 'Nodule "stable" in the lung.'
    doc = {  # radgraph-xl rewrites \" as ``, which is not in the report: no offsets for that token
        "text": "nodule `` stable in the lung .",
        "entities": {
            "1": {"tokens": "nodule", "label": "OBS-DP", "start_ix": 0, "end_ix": 0,
                  "relations": [["modify", "2"], ["located_at", "4"]]},
            "2": {"tokens": "``", "label": "OBS-U", "start_ix": 1, "end_ix": 1, "relations": [["modify", "1"]]},
            "3": {"tokens": "the", "label": "UNKNOWN", "start_ix": 4, "end_ix": 4, "relations": []},
            "4": {"tokens": "lung", "label": "ANAT-DP", "start_ix": 5, "end_ix": 5, "relations": []},
        },
    }
    got = entities_from_radgraph(doc, report)
    # 1 modifies 2 first, so 2 -> 1 is the dropped direction of the cycle; 2 is the head
    assert [e.text for e in got] == ["``", "lung"]
    assert (got[0].start, got[0].end, got[0].assertion, got[0].anatomy) == (-1, -1, "uncertain", None)
    assert (got[1].kind, got[1].start, got[1].end) == ("anatomy", 23, 27)


def test_mapping_with_the_lexicon_backends_normalisers() -> None:
    lexicon = pytest.importorskip("evaluation.lexicon")
    from evaluation.radgraph_backend import lexicon_normalisers

    normalise, modifier = lexicon_normalisers()
    assert normalise is not None and modifier is not None
    report, doc = _doc()
    doc["entities"]["1"]["tokens"] = "Mildly"  # canonicalised by the lexicon: "mild"
    report = "Mildly" + report[len("Small"):]
    doc["text"] = "Mildly" + doc["text"][len("Small"):]
    doc["entities"]["10"] = {"tokens": "increased", "label": "Observation::definitely present",
                             "start_ix": 8, "end_ix": 8, "relations": [["modify", "9"]]}
    doc["text"] = doc["text"].replace("Possible", "increased")
    report = report.replace("Possible", "increased")
    got = {e.text: e for e in entities_from_radgraph(doc, report, normalise=normalise, modifier=modifier)}
    assert got["effusion"].concept == "pleural_effusion" == lexicon.load_lexicon().resolve("pleural effusion")[0]
    assert got["effusion"].modifiers == {"severity": "mild", "laterality": "left"}
    assert got["consolidation"].concept == "consolidation"
    assert got["consolidation"].modifiers == {"change": "increased", "laterality": "right"}
    assert got["pneumothorax"].concept == "pneumothorax" and got["pneumothorax"].assertion == "absent"


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("Observation::definitely present", ("observation", "present")),
        ("Observation::definitely absent", ("observation", "absent")),
        ("Observation::uncertain", ("observation", "uncertain")),
        ("Observation::measurement::definitely absent", ("observation", "absent")),
        ("Anatomy::definitely present", ("anatomy", "present")),
        ("OBS-U", ("observation", "uncertain")),
        ("OBS-DA", ("observation", "absent")),
        ("ANAT-DP", ("anatomy", "present")),
        ("Other", None),
    ],
)
def test_parse_label(label: str, expected: tuple[str, str] | None) -> None:
    assert parse_label(label) == expected


# --- offline behaviour ---------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test on any download attempt or outbound connection."""

    def refuse(*args: object, **kwargs: object) -> None:
        pytest.fail(f"network/download attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", refuse)
    monkeypatch.setattr("huggingface_hub.file_download.hf_hub_download", refuse)
    if "radgraph" in sys.modules:  # patch the package's own download helper where it is bound
        monkeypatch.setattr("radgraph.utils.download_model", refuse)
        monkeypatch.setattr("radgraph.radgraph.download_model", refuse)


@pytest.mark.parametrize("model_type", ["radgraph", "radgraph-xl"])
def test_missing_archive_is_one_clear_error_and_no_download(
    tmp_path: Path, no_network: None, model_type: str
) -> None:
    from evaluation.extractors import get_extractor

    cache = tmp_path / "empty-cache"
    with pytest.raises(RadsteerError) as info:
        get_extractor(model_type, cache_dir=cache)
    message = str(info.value)
    assert "\n" not in message
    assert str(cache) in message and f"{model_type}.tar.gz" in message and "StanfordAIMI/RRG_scorers" in message
    assert not (cache / model_type).exists()  # unlike the package, leaves no empty folder behind


def test_cache_dir_comes_from_the_environment(tmp_path: Path, no_network: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from evaluation.radgraph_backend import CACHE_ENV, RadGraphExtractor, resolve_cache_dir

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "from-env"))
    assert resolve_cache_dir() == tmp_path / "from-env"
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    with pytest.raises(RadsteerError, match="from-env"):
        RadGraphExtractor("radgraph")
    monkeypatch.delenv(CACHE_ENV)
    assert resolve_cache_dir().parts[-2:][0] == "radgraph"  # the package's own default: .../radgraph/<version>


def test_importing_the_backend_loads_neither_torch_nor_radgraph() -> None:
    code = (
        "import sys, evaluation.radgraph_backend, evaluation.entities;"
        "bad = [m for m in ('torch', 'radgraph', 'transformers') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# --- archives on disk (no model load) -------------------------------------------------------


def _fake_archive(path: Path, members: dict[str, bytes]) -> Path:
    src = path.parent / f"_src_{path.name}"
    src.mkdir(parents=True)
    for name, data in members.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name in {m.split("/")[0] for m in members}:
            tar.add(src / name, arcname=name)
    return path


def test_archive_in_hub_cache_layout_is_found_and_unpacked(tmp_path: Path, no_network: None) -> None:
    from evaluation.radgraph_backend import locate_model_dir

    cache = tmp_path / "cache"
    snap = cache / "models--StanfordAIMI--RRG_scorers" / "snapshots" / "abc123"
    _fake_archive(snap / "radgraph.tar.gz", {"config.json": b"{}", "vocabulary/x.txt": b"", "weights.th": b"w"})
    model_dir = locate_model_dir("radgraph", cache)
    assert model_dir == cache / "radgraph"
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "vocabulary", "weights.th"]
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_bad_archives_and_folders_get_clear_errors(tmp_path: Path, no_network: None) -> None:
    from evaluation.radgraph_backend import check_base_model, locate_model_dir

    cache = tmp_path / "c1"
    _fake_archive(cache / "radgraph.tar.gz", {"config.json": b"{}", "vocabulary/x.txt": b""})
    with pytest.raises(RadsteerError, match=r"lacks weights\.th"):
        locate_model_dir("radgraph", cache)
    assert not (cache / "radgraph").exists()

    cache = tmp_path / "c2"
    cache.mkdir()
    (cache / "radgraph.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(RadsteerError, match="not a readable"):
        locate_model_dir("radgraph", cache)

    cache = tmp_path / "c3"
    (cache / "radgraph").mkdir(parents=True)
    (cache / "radgraph" / "config.json").write_text("{}")
    with pytest.raises(RadsteerError, match="incomplete.*vocabulary, weights.th"):
        locate_model_dir("radgraph", cache)

    (cache / "radgraph" / "config.json").write_text(
        '{"dataset_reader": {"token_indexers": {"bert": {"model_name": "nobody/not-a-cached-bert"}}},'
        ' "model": {"embedder": {"token_embedders": {"bert": {"model_name": "nobody/not-a-cached-bert"}}}}}'
    )
    with pytest.raises(RadsteerError, match="'nobody/not-a-cached-bert'.*huggingface-cli download"):
        check_base_model(cache / "radgraph")


# --- the tiny real-format archive through the package's own code ---------------------------


@pytest.fixture(scope="module", params=["radgraph", "radgraph-xl"])
def tiny_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A cache folder holding only `<model>.tar.gz`, as a user would place it."""
    from tests.helpers_radgraph import build_tiny_radgraph_archive

    model_type = request.param
    work = tmp_path_factory.mktemp(f"build-{model_type}")
    archive = build_tiny_radgraph_archive(work, model_type, seed=1)
    cache = tmp_path_factory.mktemp(f"cache-{model_type}")
    shutil.copy(archive, cache / archive.name)
    return model_type, cache


def test_tiny_archive_runs_offline_and_maps_onto_the_schema(tiny_cache: tuple[str, Path], no_network: None) -> None:
    from evaluation.extractors import get_extractor
    from tests.helpers_radgraph import NER_LABELS

    model_type, cache = tiny_cache
    extractor = get_extractor(model_type, cache_dir=cache, batch_size=4, device="cpu")  # lexicon if present
    assert extractor.name == model_type
    assert sorted(p.name for p in (cache / model_type).iterdir() if p.name != ".lock") == [
        "config.json", "vocabulary", "weights.th"
    ]

    raw = extractor.raw(REPORTS)
    result = extractor.extract(REPORTS)
    assert len(result) == len(REPORTS) and result[1] == [] and raw[1]["entities"] == {}
    assert extractor.extract(REPORTS) == result  # deterministic

    allowed = {parse_label(label) for label in NER_LABELS}
    n_entities = checked = 0
    for report, doc, entities in zip(REPORTS, raw, result, strict=True):
        labels = {(v["start_ix"], v["end_ix"]): v for v in doc["entities"].values()}
        assert {v["label"] for v in labels.values()} <= set(NER_LABELS)
        spans = align_tokens(report, doc["text"].split())
        targets_of_modify = {t for v in doc["entities"].values() for r, t in v["relations"] if r == "modify"}
        for e in entities:
            n_entities += 1
            assert (e.kind, e.assertion) in allowed | {("observation", a) for a in ("present", "absent", "uncertain")}
            assert 0 <= e.start < e.end <= len(report) and report[e.start : e.end] == e.text
            assert set(e.modifiers) <= set(MODIFIER_KEYS)
            assert e.modifiers.get("laterality", "left") in modifier_tables()["laterality"].values()
            assert e.concept is None or (isinstance(e.concept, str) and e.concept)
            assert e.anatomy is None or e.kind == "observation"
            assert Entity.from_json(e.to_json()) == e
        # an entity with no relations at all, that nothing modifies, maps one to one by its label
        for key, v in doc["entities"].items():
            if not v["relations"] and key not in targets_of_modify:
                start, end = spans[v["start_ix"]][0], spans[v["end_ix"]][1]
                (twin,) = [e for e in entities if (e.start, e.end) == (start, end)]
                assert (twin.kind, twin.assertion) == parse_label(v["label"])
                checked += 1
    assert n_entities > 0 and checked > 0
    kinds = {e.kind for entities in result for e in entities}
    assert kinds == {"observation", "anatomy"}  # seed 1 gives both, so the mapping of each is exercised


@pytest.mark.filterwarnings("ignore:Document 0 has a sentence with a single token")
def test_batched_output_equals_the_packages_own_per_report_inference(
    tiny_cache: tuple[str, Path], no_network: None
) -> None:
    """Packing a batch into one forward pass changes nothing: compare with an untouched
    radgraph.RadGraph run the package's way, one report per call."""
    import contextlib
    import io

    from radgraph import RadGraph

    from evaluation.extractors import get_extractor

    model_type, cache = tiny_cache
    extractor = get_extractor(model_type, cache_dir=cache, batch_size=3, device="cpu", normalise=None)
    with contextlib.redirect_stdout(io.StringIO()):
        package = RadGraph(model_type=model_type, model_cache_dir=str(cache), cuda=-1)
    batched = extractor.raw(REPORTS)
    for i, report in enumerate(REPORTS):
        if not report:
            continue
        own = package([report])["0"]
        assert (own["text"], own["entities"]) == (batched[i]["text"], batched[i]["entities"]), report


# --- issue 12: longitudinal and textual families through the RadGraph mapping -------------------


def _families_doc() -> tuple[str, dict]:
    """A RadGraph-XL-style annotation: change words as observations that modify their finding,
    "No interval change" as an absent "change", and recommendation / communication language."""
    report = ("Left effusion has increased. New right pneumothorax. Consolidation has resolved. "
              "No interval change. Recommend follow-up CT. Findings discussed with Dr. Smith. Unchanged.")
    text = ("Left effusion has increased . New right pneumothorax . Consolidation has resolved . "
            "No interval change . Recommend follow-up CT . Findings discussed with Dr. Smith . Unchanged .")
    obs = "Observation::definitely present"
    ents = {
        "1": {"tokens": "Left", "label": obs, "start_ix": 0, "end_ix": 0, "relations": [["modify", "2"]]},
        "2": {"tokens": "effusion", "label": obs, "start_ix": 1, "end_ix": 1, "relations": []},
        "3": {"tokens": "increased", "label": obs, "start_ix": 3, "end_ix": 3, "relations": [["modify", "2"]]},
        "4": {"tokens": "New", "label": obs, "start_ix": 5, "end_ix": 5, "relations": [["modify", "5"]]},
        "5": {"tokens": "pneumothorax", "label": obs, "start_ix": 7, "end_ix": 7, "relations": []},
        "6": {"tokens": "Consolidation", "label": obs, "start_ix": 9, "end_ix": 9, "relations": []},
        "7": {"tokens": "resolved", "label": "Observation::definitely absent", "start_ix": 11, "end_ix": 11,
              "relations": [["modify", "6"]]},
        "8": {"tokens": "interval change", "label": "Observation::definitely absent", "start_ix": 14,
              "end_ix": 15, "relations": []},
        "9": {"tokens": "follow-up CT", "label": obs, "start_ix": 18, "end_ix": 19, "relations": []},
        "10": {"tokens": "discussed", "label": obs, "start_ix": 22, "end_ix": 22, "relations": []},
        "11": {"tokens": "Unchanged", "label": obs, "start_ix": 27, "end_ix": 27, "relations": []},
    }
    return report, {"text": text, "entities": ents}


def test_change_modifiers_map_to_change_attributes_without_the_lexicon() -> None:
    report, doc = _families_doc()
    got = {e.text: e for e in entities_from_radgraph(doc, report)}
    assert got["effusion"].modifiers == {"laterality": "left", "change": "increased"}
    assert got["pneumothorax"].modifiers == {"change": "new"}
    assert (got["Consolidation"].assertion, got["Consolidation"].modifiers) == ("absent", {"change": "resolved"})
    assert set(modifier_tables()["change"].values()) == {"new", "increased", "decreased", "unchanged", "resolved"}


def test_family_language_maps_to_the_longitudinal_and_textual_concepts() -> None:
    from evaluation.diff import diff_entities
    from evaluation.radgraph_backend import lexicon_normalisers
    from evaluation.targets import match_targets

    normalise, modifier = lexicon_normalisers()
    report, doc = _families_doc()
    got = {e.text: e for e in entities_from_radgraph(doc, report, normalise=normalise, modifier=modifier)}
    assert (got["effusion"].concept, got["effusion"].modifiers["change"]) == ("pleural_effusion", "increased")
    assert got["pneumothorax"].modifiers == {"change": "new"}  # "right" is no entity in this annotation
    assert (got["interval change"].concept, got["interval change"].assertion) == ("stability", "present")
    assert got["follow-up CT"].concept == "recommendation"
    assert got["discussed"].concept is None  # one word is not a communication statement ...
    assert got["Unchanged"].concept == "stability"  # ... but a lone change word is a longitudinal one

    # and the diff / target matching take RadGraph's entities like the lexicon's
    baseline = entities_from_radgraph(*_plain("Left effusion . Consolidation ."), normalise=normalise,
                                      modifier=modifier)
    steered = list(got.values())
    match = match_targets(diff_entities(baseline, steered), "worsening", +1)
    assert match.label in ("on", "both")
    assert any(i["description"] == "change pleural_effusion unstated>increased" for i in match.evidence["on_target"])
    assert match_targets(diff_entities(baseline, steered), "follow-up recommendation", +1).on_target


def _plain(text: str) -> tuple[dict, str]:
    """A RadGraph doc with one present observation per word that is not punctuation or "Left"."""
    words = text.split()
    ents: dict[str, dict] = {}
    for i, w in enumerate(words):
        if w in ".":
            continue
        ents[str(i + 1)] = {"tokens": w, "label": "Observation::definitely present", "start_ix": i, "end_ix": i,
                            "relations": [["modify", str(i + 2)]] if w == "Left" else []}
    return {"text": text, "entities": ents}, text.replace(" .", ".")


def test_tiny_archive_maps_family_language_consistently(no_network: None, tmp_path_factory) -> None:
    """The tiny real-format archive over reports full of longitudinal and textual language: whatever
    random spans it labels, a change word that modifies a finding becomes that finding's change
    attribute, and a lone observation reads as the concept the lexicon gives its words."""
    from evaluation.extractors import get_extractor
    from evaluation.lexicon import load_lexicon
    from tests.helpers_radgraph import build_tiny_radgraph_archive

    cache = tmp_path_factory.mktemp("families-cache")
    build_tiny_radgraph_archive(cache, "radgraph-xl", seed=1)
    extractor = get_extractor("radgraph-xl", cache_dir=cache, batch_size=4, device="cpu")
    reports = ["Small left pleural effusion, unchanged compared with prior.", "New right pneumothorax.",
               "Stable cardiomegaly. No interval change.", "Possible left lower lobe consolidation, increased.",
               "Mild pulmonary edema has improved.", "The lungs are clear. Unchanged."]
    lex = load_lexicon()
    raw = extractor.raw(reports)
    checked_change = checked_lone = family = 0
    for report, doc, entities in zip(reports, raw, extractor.extract(reports), strict=True):
        by_span = {(e.start, e.end): e for e in entities}
        spans = align_tokens(report, doc["text"].split())
        for key, v in doc["entities"].items():
            if not v["label"].startswith("Observation"):
                continue
            word = v["tokens"].lower()
            targets = [t for r, t in v["relations"] if r == "modify" and t in doc["entities"] and t != key]
            change = lex.normalise_modifier("change", word)
            if change and targets and not any(r == "modify" for r, _ in doc["entities"][targets[0]]["relations"]):
                head = doc["entities"][targets[0]]
                start, end = spans[head["start_ix"]][0], spans[head["end_ix"]][1]
                if (start, end) in by_span and by_span[(start, end)].kind == "observation":
                    assert "change" in by_span[(start, end)].modifiers, (report, word)
                    checked_change += 1
            mine = (spans[v["start_ix"]][0], spans[v["end_ix"]][1])
            if not v["relations"] and mine in by_span and by_span[mine].kind == "observation":
                expected = lex.concept_for_text(report[mine[0]:mine[1]])
                if expected is not None and by_span[mine].assertion != "absent":
                    assert by_span[mine].concept == expected, (report, v)
                    checked_lone += 1
                    family += lex.concepts[expected].kind in ("longitudinal", "textual")
    print(f"checked: {checked_change} change attributes, {checked_lone} lone observations ({family} family)")
    assert checked_change + checked_lone > 0 and family > 0  # seed 1 labels some family words (not vacuous)
