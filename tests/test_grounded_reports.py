"""Grounded MAIRA-2 reports: every phrase's boxes are parsed from the generated tokens, stored per
generation (`generations.grounding`) beside the plain text the evaluators read, and survive a
real `radsteer sweep` in which steering moves a box while the plain text stays the same.

The sweep test runs a tiny MAIRA-2 snapshot whose weights are set by hand so that greedy decoding
writes one fixed grounded report (each decoder layer's output projections zeroed: the residual
stream is the current token's embedding, a one-hot; `lm_head` maps each one-hot to the next token of
the report), and one SAE feature whose decoder row tips a single coordinate token to another bin.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from protocols.cli import main
from steering.engine import GenerationSettings, PlannedRow, SteeringEngine, SteeringSpec
from steering.maira2.adapter import Maira2Adapter
from steering.maira2.grounding import grounding_records, parse_grounded
from steering.store import StudyStore
from tests import maira2_fixture as fx

maira2_snapshot = fx.maira2_snapshot  # pytest fixture

REPORT = "<obj>Left lower opacity<box><x10><y55><x40><y90></box></obj>"
BASE_BOX = [0.105, 0.555, 0.405, 0.905]
MOVED_BOX = [0.105, 0.205, 0.405, 0.905]  # <y55> → <y20> under the feature's push
STEER_DIM = 31  # the one-hot dimension the feature pushes along (no token of the report uses it)


# -- parsing: what a model may write ---------------------------------------------------------
def test_boxes_outside_the_image_or_reversed_are_repaired_or_dropped() -> None:
    text = ("Heart is normal. <obj>Opacity<box><x10><y150><x40><y90></box><box><x60><y50><x30><y20></box>"
            "<box><x1><y2></box></obj><obj></obj> tail <x5>")
    assert parse_grounded(text) == [
        ("Heart is normal.", None),  # written outside any <obj>: kept as a phrase without boxes
        ("Opacity", [(0.305, 0.205, 0.605, 0.505)]),  # <y150> is no bin: dropped; corners ordered
        ("tail", None),
    ]
    records = grounding_records(text)
    assert records[1] == {"text": "Opacity", "boxes": [[0.305, 0.205, 0.605, 0.505]]}
    assert all(0 <= v <= 1 for r in records for b in r["boxes"] for v in b)
    assert grounding_records("") == [] and grounding_records("No effusion.") == [{"text": "No effusion.", "boxes": []}]
    hostile = grounding_records('<obj><script>alert(1)</script> "x"<box><x0><y0><x99><y99></box>')  # cut off
    assert hostile == [{"text": '<script>alert(1)</script> "x"', "boxes": [[0.005, 0.005, 0.995, 0.995]]}]


# -- decode → store ----------------------------------------------------------------------------
def test_engine_stores_each_rows_phrases_and_boxes(maira2_snapshot, tmp_path) -> None:
    adapter = Maira2Adapter.from_pretrained(maira2_snapshot.path, dtype="float32", device="cpu", grounded=True)
    assert adapter.grounds_reports
    tok = adapter.tokenizer
    text = REPORT + "<obj>No <b>effusion</b>.</obj>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    engine = SteeringEngine(adapter, spec=SteeringSpec(layer=1), settings=GenerationSettings(max_new_tokens=8))
    base = engine._result(PlannedRow("c1", "", 0.0), ids + [tok.eos_token_id, 0, 0], [tok.eos_token_id], 0.1)
    assert base.finish_reason == "eos" and base.text == "Left lower opacity No <b>effusion</b>."
    assert base.grounding == [{"text": "Left lower opacity", "boxes": [BASE_BOX]},
                              {"text": "No <b>effusion</b>.", "boxes": []}]
    # a stop sequence cuts text and boxes at the same place
    stopper = SteeringEngine(adapter, spec=SteeringSpec(layer=1),
                             settings=GenerationSettings(max_new_tokens=8, stop=("<y90>",)))
    cut = stopper._result(PlannedRow("c1", "f0", 2.0), ids, [tok.eos_token_id], 0.1, stop_at=len(ids))
    assert cut.finish_reason == "stop" and cut.grounding == [{"text": "Left lower opacity", "boxes": []}]

    store = StudyStore.open(tmp_path / "run")
    store.add_cases([{"case_id": "c1", "inputs": {}, "split": "test"}])
    plain = Maira2Adapter.from_pretrained(maira2_snapshot.path, dtype="float32", device="cpu")
    assert not plain.grounds_reports and plain.grounding(text) is None
    ungrounded = SteeringEngine(plain, spec=SteeringSpec(layer=1))._result(
        PlannedRow("c1", "f1", 1.0), ids, [tok.eos_token_id], 0.1)
    assert ungrounded.grounding is None and "grounding" not in ungrounded.store_row("h")
    store.add_generations([r.store_row("h") for r in (base, cut, ungrounded)])
    rows = {r["feature_id"]: r for r in store.rows("generations")}
    assert rows[""]["text"] == base.text and rows[""]["grounding"] == base.grounding
    assert rows["f1"]["grounding"] is None
    assert store.generation_groundings([r["id"] for r in rows.values()]) == {
        rows[""]["id"]: base.grounding, rows["f0"]["id"]: cut.grounding}
    # what the annotation app shows for a steered item: both sides (a side generated ungrounded is absent)
    from annotation_ui.queues import QueueConfig
    from annotation_ui.service import AnnotationService, ItemView

    store.add_cases([{"case_id": "c1", "inputs": {"frontal": "/nonexistent/pa.png"}, "split": "test"}])
    svc = AnnotationService(store, "change", QueueConfig(), ["local"])
    for feature, expected in (("f0", {"baseline": base.grounding, "steered": cut.grounding}),
                              ("f1", {"baseline": base.grounding})):
        view = ItemView("change", "", 0, 1, 0)
        svc.fill(view, str(rows[feature]["id"]))
        assert view.grounding == expected
    store.close()


# -- a real sweep: steering moves a box ------------------------------------------------------------
@pytest.fixture(scope="module")
def chain_snapshot(tmp_path_factory) -> fx.TinySnapshot:
    snap = fx.write_snapshot(tmp_path_factory.mktemp("maira2-chain") / "maira-2")
    adapter = Maira2Adapter.from_pretrained(snap.path, dtype="float32", device="cpu", grounded=True)
    tok = adapter.tokenizer
    cases = [json.loads(line) for line in snap.cases_file.read_text().splitlines()]
    last = {adapter.prompt_ids(snap.study(**{k: v for k, v in c.items() if k != "split"}))[-1] for c in cases}
    assert len(last) == 1
    chain = [*last, *tok(REPORT, add_special_tokens=False)["input_ids"], tok.eos_token_id]
    assert len(set(chain)) == len(chain) and len(chain) < STEER_DIM
    state = fx.official_state_dict(snap.config)
    d, big = snap.config["hidden_size"], 10.0
    lm = "language_model."
    for i in range(snap.config["text_config"]["num_hidden_layers"]):
        state[f"{lm}model.layers.{i}.self_attn.o_proj.weight"].zero_()
        state[f"{lm}model.layers.{i}.mlp.down_proj.weight"].zero_()
    state[f"{lm}model.norm.weight"].fill_(1.0)
    emb, head = state[f"{lm}model.embed_tokens.weight"], torch.zeros_like(state[f"{lm}lm_head.weight"])
    eye = torch.eye(d)
    for k, token in enumerate(chain[:-1]):
        emb[token] = eye[k]
        head[chain[k + 1]] = big * eye[k]
    y55, y20 = tok.convert_tokens_to_ids("<y55>"), tok.convert_tokens_to_ids("<y20>")
    at = chain.index(y55) - 1  # the step after <x10>
    emb[y20] = emb[y55]  # the report goes on the same way after either bin
    head[y20] = 0.6 * big * (eye[at] + eye[STEER_DIM])  # wins only when the feature pushes along STEER_DIM
    state[f"{lm}lm_head.weight"] = head
    fx.write_weights(snap.path, state)
    return snap


def _protocol(tmp_path: Path, snap: fx.TinySnapshot, name: str, grounded: bool) -> Path:
    d = snap.config["hidden_size"]
    w_dec = torch.zeros(2, d)
    w_dec[0, STEER_DIM] = 1.0
    w_dec[1, STEER_DIM - 1] = 1.0
    torch.save({"W_enc": w_dec.T.clone(), "b_enc": torch.zeros(2), "W_dec": w_dec, "b_dec": torch.zeros(d)},
               tmp_path / "ae.pt")
    protocol = {
        "name": name, "model": {"kind": "maira2", "path": str(snap.path), "dtype": "float32", "device": "cpu",
                                "grounded": grounded},
        "features": {"source": "sae", "path": "ae.pt", "items": [{"id": "f0", "targets": ["pleural_effusion"]}]},
        "layer": 1, "alphas": [1.0], "generation": {"max_new_tokens": 30, "batch_size": 2},
        "cases": {"path": str(snap.cases_file)},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(protocol, sort_keys=False))
    return path


def test_sweep_stores_grounded_reports_and_steering_moves_a_box(chain_snapshot, tmp_path, capsys) -> None:
    runs = tmp_path / "runs"
    assert main(["sweep", str(_protocol(tmp_path, chain_snapshot, "g", True)), "--runs-dir", str(runs),
                 "--no-progress"]) == 0
    manifest = json.loads((runs / "g" / "manifest.json").read_text())
    assert manifest["model"]["grounded"] is True and manifest["model"]["name"] == "maira-2-grounded"
    with StudyStore.open(runs / "g") as store:
        rows = store.rows("generations")
    assert len(rows) == 4  # 2 cases × (baseline, f0 at α = 1)
    for r in rows:
        assert r["text"] == "Left lower opacity" and r["finish_reason"] == "eos"  # the evaluators' plain text
        box = MOVED_BOX if r["feature_id"] == "f0" else BASE_BOX
        assert r["grounding"] == [{"text": "Left lower opacity", "boxes": [box]}], r
    # the later steps read the plain text; the stored boxes do not get in their way
    assert main(["evaluate", str(runs / "g"), "--no-judge"]) == 0
    assert main(["stats", str(runs / "g")]) == 0
    assert main(["report", str(runs / "g")]) == 0

    # the same study without grounding: the same plain text, no boxes, another settings hash
    assert main(["sweep", str(_protocol(tmp_path, chain_snapshot, "plain", False)), "--runs-dir", str(runs),
                 "--no-progress"]) == 0
    plain = json.loads((runs / "plain" / "manifest.json").read_text())
    assert plain["model"]["grounded"] is False and plain["settings_hash"] != manifest["settings_hash"]
    with StudyStore.open(runs / "plain") as store:
        rows = store.rows("generations")
    assert {r["text"] for r in rows} == {"Left lower opacity"} and all(r["grounding"] is None for r in rows)


def test_grounded_is_a_maira2_option(tmp_path, capsys) -> None:
    protocol = {"name": "x", "model": {"kind": "hf_causal_lm", "path": "m", "grounded": True},
                "features": {"source": "sae", "path": "ae.pt", "items": [{"id": "f0"}]}, "alphas": [1.0],
                "cases": {"path": "c.jsonl"}}
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(protocol))
    assert main(["validate", str(path)]) == 2
    assert "model.grounded applies to MAIRA-2 only" in capsys.readouterr().err


@pytest.mark.postgres
def test_grounding_round_trips_on_postgres(pg_url, tmp_path) -> None:
    grounding = grounding_records(REPORT + '<obj>Ünïcode "quotes" <b>\\n</obj>')
    with StudyStore.open(tmp_path / "run", pg_url) as store:
        store.add_cases([{"case_id": "c1", "inputs": {}, "split": "test"}])
        common = dict(case_id="c1", settings_hash="h", n_tokens=3, finish_reason="eos", seconds=0.1)
        store.add_generations([dict(common, feature_id="", alpha=0.0, text="a", grounding=grounding),
                               dict(common, feature_id="f0", alpha=1.0, text="b")])
        ids = {r["feature_id"]: r["id"] for r in store.rows("generations")}
        assert store.generation_groundings(list(ids.values())) == {ids[""]: grounding}


def test_radsteer_generate_prints_the_boxes(chain_snapshot, tmp_path, capsys) -> None:
    _protocol(tmp_path, chain_snapshot, "unused", True)  # writes ae.pt
    case = dict(chain_snapshot.study(), case_id="c1")
    argv = ["generate", "--model-kind", "maira2", "--model", str(chain_snapshot.path), "--grounded",
            "--sae", str(tmp_path / "ae.pt"), "--feature", "f0", "--alpha", "1", "--layer", "1",
            "--case", json.dumps(case), "--max-new-tokens", "30"]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["baseline"] == "Left lower opacity" == out["steered"][0]["text"]
    assert out["baseline_grounding"] == [{"text": "Left lower opacity", "boxes": [BASE_BOX]}]
    assert out["steered"][0]["grounding"] == [{"text": "Left lower opacity", "boxes": [MOVED_BOX]}]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "boxes (baseline):\n  baseline: Left lower opacity  [0.105, 0.555, 0.405, 0.905]" in text
    assert "boxes (α = +1):\n  α = +1: Left lower opacity  [0.105, 0.205, 0.405, 0.905]" in text
    assert main(["generate", "--model-kind", "demo", "--grounded", "--case", "{}"]) == 2
    assert "--grounded applies to MAIRA-2 only" in capsys.readouterr().err
