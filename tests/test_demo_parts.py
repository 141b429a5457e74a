"""Pieces of the offline demo that need no model: its corpora, report shape, the report's
interpretation table, and installing the demo without overwriting a user's files."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from evaluation.report_shape import is_report_shaped, report_shaped_count
from evaluation.synthetic import report_corpus_bytes, write_report_corpus
from steering.errors import RadsteerError


def test_report_corpus_is_deterministic_and_in_the_prompt_layout(tmp_path) -> None:
    a = report_corpus_bytes(50, seed=3)
    assert a == report_corpus_bytes(50, seed=3) and a != report_corpus_bytes(50, seed=4)
    rows = [json.loads(line) for line in a.decode().splitlines()]
    assert len(rows) == 50 and len({r["id"] for r in rows}) == 50
    assert all(r["text"].startswith("INDICATION: ") and "\nFINDINGS: " in r["text"] for r in rows)
    assert sum(bool(r["concepts"]) for r in rows) > 25  # most reports assert a finding or device
    concepts = {c for r in rows for c in r["concepts"]}
    assert {"pleural_effusion", "pneumothorax", "cardiomegaly", "pacemaker"} <= concepts
    path = write_report_corpus(tmp_path / "c.jsonl", 50, seed=3)
    assert path.read_bytes() == a and not (tmp_path / "c.jsonl.tmp").exists()
    with pytest.raises(ValueError):
        report_corpus_bytes(0)


def test_the_corpus_asserts_what_it_says() -> None:
    from evaluation.lexicon import LexiconExtractor

    ex = LexiconExtractor()
    rows = [json.loads(line) for line in report_corpus_bytes(80, seed=0).decode().splitlines()]
    hits = total = 0
    for r in rows:
        present = {e.concept for e in ex.extract_one(r["text"]) if e.assertion == "present"}
        for c in r["concepts"]:
            total += 1
            hits += c in present
    assert total > 40 and hits / total >= 0.9  # the lexicon reads the planted findings back


@pytest.mark.parametrize("text, shaped", [
    ("No pleural effusion. No pneumothorax. The heart size is normal.", True),
    ("There is a small right pleural effusion.", True),
    ("The findings section of the chest X-ray report contains: 1. **Indication** cough", False),
    ("1. Heart size normal.\n2. No effusion.", False),
    ("- No pneumothorax.", False),
    ("## Findings\nLungs clear.", False),
    ("No other symptoms.", False),
    ("", False),
])
def test_report_shape(text, shaped) -> None:
    assert is_report_shaped(text) is shaped


def test_report_shaped_count() -> None:
    assert report_shaped_count(["Lungs are clear.", "**Bold** answer", "Heart size is normal."]) == (2, 3)


def test_install_demo_writes_protocols_and_corpora_and_keeps_user_edits(tmp_path) -> None:
    from protocols.commands.demo import FEATURES_PROTOCOL, MINING_CORPUS, TRAIN_CORPUS, install_demo

    proto = install_demo(tmp_path)
    for rel in (FEATURES_PROTOCOL, TRAIN_CORPUS, MINING_CORPUS, "data/demo_cases.jsonl"):
        assert (tmp_path / rel).is_file()
    install_demo(tmp_path)  # idempotent
    corpus = tmp_path / TRAIN_CORPUS
    corpus.write_text(corpus.read_text() + '{"id": "mine", "text": "my own report"}\n')
    with pytest.raises(RadsteerError, match="will not overwrite"):
        install_demo(tmp_path)
    assert corpus.read_text().endswith('"my own report"}\n') and proto.exists()


def test_select_one_feature_per_target(tmp_path) -> None:
    from protocols.schema import FeatureSelect
    from protocols.selection import select_features

    csv = tmp_path / "interpretations.csv"
    pd.DataFrame({
        "feature_id": ["f1", "f2", "f3", "f4", "f5"],
        "description": ["a", "b", "c", "d", "e"],
        "targets": ["pacemaker", "pacemaker", "nodule;measurement", "measurement;nodule", "pneumothorax"],
        "explainer": "lexicon", "f1": [1.0, 0.99, 0.95, 0.97, 0.8],
    }).to_csv(csv, index=False)
    spec = FeatureSelect(interpretations=str(csv), min_f1=0.75, max_features=6, concepts=["finding", "device"])
    assert [r["id"] for r in select_features(csv, spec, where="t")] == ["f1", "f2", "f4", "f3", "f5"]
    spec = spec.model_copy(update={"one_per_target": True})
    assert [r["id"] for r in select_features(csv, spec, where="t")] == ["f1", "f4", "f5"]
    spec = spec.model_copy(update={"max_features": 2})
    assert [r["id"] for r in select_features(csv, spec, where="t")] == ["f1", "f4"]


def test_a_run_dirs_frozen_protocol_selects_from_the_original_protocols_interpretations(tmp_path) -> None:
    """`radsteer run` re-reads runs/<study>/protocol.yaml (evaluate's execution settings): its relative
    `features.select.interpretations` is the original protocol's, not the run directory's."""
    import json

    from protocols.config import run_dir_protocol

    proto = install_demo_with_interpretations(tmp_path)
    run_dir = tmp_path / "runs" / "demo"
    run_dir.mkdir(parents=True)
    (run_dir / "protocol.yaml").write_bytes(proto.read_bytes())
    (run_dir / "manifest.json").write_text(json.dumps({"protocol_path": str(proto)}))
    protocol, base = run_dir_protocol(run_dir)
    assert base == tmp_path and [i.id for i in protocol.features.items] == ["f1"]
    (run_dir / "manifest.json").write_text("{}")  # no original recorded: relative to the run directory
    with pytest.raises(RadsteerError, match="interpretations.csv not found"):
        run_dir_protocol(run_dir)


def install_demo_with_interpretations(out):
    from protocols.commands.demo import install_demo

    proto = install_demo(out)
    csv = out / "runs" / "demo-features" / "stats" / "interpretations.csv"
    csv.parent.mkdir(parents=True)
    pd.DataFrame({"feature_id": ["f1", "f2"], "description": ["pacemaker", "x"], "targets": ["pacemaker", ""],
                  "explainer": "lexicon", "f1": [0.9, 0.2]}).to_csv(csv, index=False)
    return proto
