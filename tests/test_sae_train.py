"""`radsteer sae train`: a TopK SAE trained by EleutherAI's sparsify on a tiny random model."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("sparsify", reason="SAE training needs eai-sparsify: pip install 'radsteer[sae]'")

from protocols.cli import main  # noqa: E402
from steering.adapters import HFCausalLMAdapter  # noqa: E402
from steering.errors import RadsteerError  # noqa: E402
from steering.feature_reader import LayerReader  # noqa: E402
from steering.sae_loaders import load_feature_bank  # noqa: E402
from steering.sae_training import SAETrainSettings, cut_after_layer, train_sae  # noqa: E402
from steering.store.manifest import sha256_file  # noqa: E402
from tests.helpers_mining import random_docs, write_corpus  # noqa: E402
from tests.tiny_models import make_tiny_llama  # noqa: E402

SETTINGS = SAETrainSettings(layer=1, expansion_factor=4, k=4, seq_len=16, batch_size=4, epochs=2)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "model"
    make_tiny_llama(path, seed=4)
    return path


@pytest.fixture(scope="module")
def adapter(model_dir):
    return HFCausalLMAdapter.from_pretrained(model_dir, dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "reports.jsonl"
    write_corpus(path, random_docs(120, seed=1))
    return path


@pytest.fixture(scope="module")
def trained(adapter, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("saes") / "sae"
    return train_sae(adapter, corpus, out, SETTINGS, progress=False), out


def test_trained_folder_is_sparsify_layout_with_provenance(trained, corpus, adapter) -> None:
    import sparsify

    result, out = trained
    assert result.path == out / "layers.1" and not result.reused
    assert sorted(p.name for p in out.iterdir()) == ["layers.1"]  # the trainer's work files are gone
    assert sorted(p.name for p in result.path.iterdir()) == ["cfg.json", "radsteer.json", "sae.safetensors"]
    meta = json.loads((result.path / "radsteer.json").read_text())
    assert meta["trainer"] == "eai-sparsify" and meta["trainer_version"] == sparsify.__version__
    assert meta["corpus_sha256"] == sha256_file(corpus)
    assert meta["layer"] == 1 and meta["layer_module"] == "model.layers.1" and meta["num_latents"] == 128
    assert meta["n_tokens"] > 0 and 0 <= meta["fvu_heldout"] < 1.0  # it learnt something
    # sparsify's own loader reads it, and so does radsteer's (layer from the hookpoint folder name)
    coder = sparsify.SparseCoder.load_from_disk(result.path)
    bank = load_feature_bank(result.path)
    assert bank.layer == 1 and bank.n_features == 128 and bank.d_model == adapter.hidden_size
    x = torch.randn(5, adapter.hidden_size)
    ours = bank.encode(x)
    theirs = coder.encode(x)
    dense = torch.zeros(5, 128).scatter(-1, theirs.top_indices, theirs.top_acts)
    torch.testing.assert_close(ours, dense, rtol=1e-4, atol=1e-5)
    assert ((ours > 0).sum(-1) <= 4).all()


def test_model_is_whole_again_and_matmul_precision_restored(trained, adapter) -> None:
    assert len(adapter.layers) == adapter.model.config.num_hidden_layers == 3
    assert torch.get_float32_matmul_precision() == "highest"


def test_cut_model_reads_the_same_activations(adapter) -> None:
    ids = torch.tensor([[1, 5, 9, 12, 7]])
    full = LayerReader(adapter, 1).hidden(ids, torch.ones_like(ids))
    seen = []
    handle = adapter.layer(1).register_forward_hook(lambda _m, _a, out: seen.append(out[0] if isinstance(out, tuple) else out))
    with cut_after_layer(adapter, 1) as base, torch.inference_mode():
        assert len(base.layers) == 2
        base(ids)
    handle.remove()
    torch.testing.assert_close(seen[0].float(), full)
    assert len(adapter.layers) == 3


def test_same_corpus_and_settings_reuse_the_sae(trained, adapter, corpus) -> None:
    result, out = trained
    before = (result.path / "sae.safetensors").stat().st_mtime_ns
    again = train_sae(adapter, corpus, out, SETTINGS, progress=False)
    assert again.reused and (result.path / "sae.safetensors").stat().st_mtime_ns == before


def test_other_settings_need_force_and_replace_atomically(adapter, corpus, tmp_path) -> None:
    out = tmp_path / "sae"
    first = train_sae(adapter, corpus, out, SETTINGS, progress=False)
    other = SAETrainSettings(layer=1, expansion_factor=2, k=4, seq_len=16, batch_size=4)
    with pytest.raises(RadsteerError, match="--force"):
        train_sae(adapter, corpus, out, other, progress=False)
    assert json.loads((first.path / "radsteer.json").read_text())["num_latents"] == 128  # untouched
    second = train_sae(adapter, corpus, out, other, force=True, progress=False)
    assert second.meta["num_latents"] == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae"]  # no stage/old folders left behind


def test_a_foreign_folder_is_never_touched(adapter, corpus, tmp_path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my work")
    for force in (False, True):
        with pytest.raises(RadsteerError, match="left untouched"):
            train_sae(adapter, corpus, out, SETTINGS, force=force, progress=False)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "my work"


def test_too_small_corpus_and_bad_layer_are_clear(adapter, tmp_path) -> None:
    small = tmp_path / "small.jsonl"
    write_corpus(small, [["no", "effusion"]])
    with pytest.raises(RadsteerError, match="too small|fewer than one batch"):
        train_sae(adapter, small, tmp_path / "o", SETTINGS, progress=False)
    with pytest.raises(RadsteerError, match="3 decoder layers"):
        train_sae(adapter, small, tmp_path / "o", SAETrainSettings(layer=7), progress=False)
    assert not (tmp_path / "o").exists()


def test_cli_trains_and_reports_errors_in_one_line(model_dir, corpus, tmp_path, capsys) -> None:
    args = ["sae", "train", "--model-kind", "hf_causal_lm", "--model", str(model_dir), "--corpus", str(corpus),
            "--layer", "2", "--out", str(tmp_path / "s"), "--expansion-factor", "2", "-k", "2", "--seq-len", "16",
            "--batch-size", "4", "--no-progress"]
    assert main(args) == 0
    assert "radsteer sae: SAE 64 latents (k=2) at model.layers.2" in capsys.readouterr().out
    assert load_feature_bank(tmp_path / "s" / "layers.2").layer == 2
    assert main([*args[:7], str(tmp_path / "missing.jsonl"), *args[8:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.jsonl" in err[0] and "file not found" in err[0]
    assert main(["sae", "train", "--corpus", str(corpus), "--layer", "1", "--out", str(tmp_path / "x"),
                 "--model-kind", "hf_causal_lm"]) == 2
    assert "needs --model" in capsys.readouterr().err
