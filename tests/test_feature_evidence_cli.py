"""`radsteer mine` and `radsteer activations` end to end on a tiny on-disk study."""

from __future__ import annotations

import json

import torch

from protocols.cli import main
from steering.adapters import HFCausalLMAdapter
from steering.sae_loaders import load_feature_bank
from steering.store import BASELINE_FEATURE, StudyStore
from tests.helpers_mining import LAYER, planted_setup
from tests.helpers_steering import write_tiny_study


def _planted_study(tmp_path):
    """The tiny study (same random Llama as the planted setup) with the planted SAE as its ae.pt."""
    protocol = write_tiny_study(tmp_path, n_cases=3, features=("f0", "f1"))
    p = planted_setup(tmp_path)
    enc = p.bank.encoder
    torch.save({"W_enc": enc.W_enc, "b_enc": enc.b_enc, "W_dec": p.bank.decoder, "b_dec": enc.b_dec,
                "threshold": torch.tensor(0.0), "k": torch.tensor(2), "group_sizes": torch.tensor([p.bank.n_features])},
               tmp_path / "ae.pt")
    return protocol, p


def test_mine_stores_the_planted_contexts_and_resumes(tmp_path, capsys) -> None:
    protocol, p = _planted_study(tmp_path)
    runs = tmp_path / "runs"
    args = ["mine", str(protocol), "--corpus", str(p.corpus), "--runs-dir", str(runs), "--top-k", "5",
            "--batch-size", "4", "--no-progress"]
    assert main(args) == 0
    assert "30 documents mined" in capsys.readouterr().out
    run = runs / "tiny"
    with StudyStore.open(run) as store:
        top = store.dataframe("feature_contexts")
        top = top[top.kind == "top"]
        for fid in ("f0", "f1"):
            got = {(r.doc_id, r.token_index) for r in top[top.feature_id == fid].itertuples()}
            assert got == p.places[fid]
        assert store.count("feature_stats") == p.bank.n_features  # every feature of the bank by default
        assert store.count("mining_progress") == 30
    meta = json.loads((run / "mining.json").read_text())
    assert meta["layer_module"] == "model.layers.1" and meta["reader"] == "sae_encoder"
    assert (run / "protocol.yaml").exists()
    assert main(args) == 0  # a finished run: nothing is mined twice
    out = capsys.readouterr().out
    assert "0 documents mined" in out and "30 already mined before" in out


def test_mine_only_the_study_features(tmp_path) -> None:
    protocol, p = _planted_study(tmp_path)
    assert main(["mine", str(protocol), "--corpus", str(p.corpus), "--runs-dir", str(tmp_path / "runs"),
                 "--features", "study", "--no-progress"]) == 0
    with StudyStore.open(tmp_path / "runs" / "tiny") as store:
        assert {r["feature_id"] for r in store.rows("feature_stats")} == {"f0", "f1"}


def test_mine_errors_are_one_line(tmp_path, capsys) -> None:
    protocol = write_tiny_study(tmp_path, n_cases=1)
    assert main(["mine", str(protocol), "--corpus", str(tmp_path / "missing.jsonl")]) == 2
    assert "--corpus" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "no effusion"}\n{"id": "a", "text": "effusion"}\n')
    assert main(["mine", str(protocol), "--corpus", str(bad), "--runs-dir", str(tmp_path / "runs"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: duplicate id 'a'" in err and len(err.strip().splitlines()) == 1


def test_activations_reads_steered_and_baseline_texts_back(tmp_path, capsys) -> None:
    protocol = write_tiny_study(tmp_path, n_cases=3)
    runs = tmp_path / "runs"
    assert main(["sweep", str(protocol), "--runs-dir", str(runs), "--no-progress"]) == 0
    run = runs / "tiny"
    assert main(["activations", str(run), "--batch-size", "3", "--no-progress"]) == 0
    assert "12 steered reports checked" in capsys.readouterr().out
    with StudyStore.open(run) as store:
        checks = {r["generation_id"]: r for r in store.rows("activation_checks")}
        gens = {g["id"]: g for g in store.rows("generations")}
        cases = {c["case_id"]: c["inputs"] for c in store.rows("cases")}
    assert len(checks) == 12
    assert any(r["steered_max"] > 0 for r in checks.values())  # the comparison below is not 0 == 0
    # Recompute a few rows independently: a plain forward with output_hidden_states.
    adapter = HFCausalLMAdapter.from_pretrained(tmp_path / "model", dtype="float32", device="cpu")
    bank = load_feature_bank(tmp_path / "ae.pt")
    tok = adapter.tokenizer

    def read(case_id: str, text: str, fid: str) -> tuple[float, float]:
        prompt = adapter.prompt_ids(cases[case_id])
        ids = prompt + tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            hidden = adapter.model(torch.tensor([ids]), output_hidden_states=True).hidden_states[LAYER + 1][0]
        acts = bank.encode(hidden[len(prompt) :])[:, bank.index(fid)]
        return float(acts.mean()), float(acts.max())

    for gid, row in list(checks.items())[:4]:
        g = gens[gid]
        base = next(b for b in gens.values() if b["case_id"] == g["case_id"] and b["feature_id"] == BASELINE_FEATURE)
        assert row["feature_id"] == g["feature_id"] != BASELINE_FEATURE
        s_mean, s_max = read(g["case_id"], g["text"], g["feature_id"])
        b_mean, b_max = read(g["case_id"], base["text"], g["feature_id"])
        assert abs(row["steered_activation"] - s_mean) < 1e-5 and abs(row["steered_max"] - s_max) < 1e-5
        assert abs(row["baseline_activation"] - b_mean) < 1e-5 and abs(row["baseline_max"] - b_max) < 1e-5
    assert main(["activations", str(run), "--no-progress"]) == 0  # resumable: nothing twice
    assert "0 steered reports checked; 12 already checked before" in capsys.readouterr().out


def test_activations_needs_a_run_directory(tmp_path, capsys) -> None:
    assert main(["activations", str(tmp_path / "nowhere")]) == 2
    assert "is not a study run directory" in capsys.readouterr().err
