"""SAE files as the real libraries write them: dictionary_learning, SAELens 6, EleutherAI sparsify.

Each format is produced by the library's own classes (live when the library is installed here,
else the committed folders that tests/fixtures/make_*.py wrote with it) and radsteer's encode and
decode must equal the library's own to float tolerance.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from protocols.cli import main
from steering.errors import RadsteerError, RadsteerWarning
from steering.feature_bank import FeatureBank
from steering.sae_loaders import load_feature_bank
from tests.helpers_steering import write_tiny_study

DATA = Path(__file__).parent / "data" / "sae_formats"
FIXTURES = Path(__file__).parent / "fixtures"
TOL = {"atol": 1e-5, "rtol": 1e-5}


def _made_by(request, library: str, script: str, committed: Path, tmp: Path) -> Path:
    """The committed folders the library wrote, or ("live", marked slow) folders it writes now."""
    if request.param == "committed":
        return committed
    if importlib.util.find_spec(library) is None:
        pytest.skip(f"{library} is not installed (scripts/test.sh installs it)")
    out = tmp / library
    subprocess.run([sys.executable, str(FIXTURES / script), str(out)], check=True, capture_output=True, text=True,
                   cwd=Path(__file__).parent.parent)
    return out


SOURCES = ["committed", pytest.param("live", marks=pytest.mark.slow)]


@pytest.fixture(scope="module", params=SOURCES)
def dl_dir(request, tmp_path_factory) -> Path:
    return _made_by(request, "dictionary_learning", "make_dictionary_learning_saes.py", DATA / "dictionary_learning",
                    tmp_path_factory.mktemp("dl"))


@pytest.fixture(scope="module", params=SOURCES)
def sparsify_dir(request, tmp_path_factory) -> Path:
    return _made_by(request, "sparsify", "make_sparsify_saes.py", DATA / "sparsify", tmp_path_factory.mktemp("sp"))


DL_CLASSES = ["AutoEncoder", "AutoEncoderNew", "GatedAutoEncoder", "JumpReluAutoEncoder", "AutoEncoderTopK",
              "BatchTopKSAE", "BatchTopKSAE_unset", "MatryoshkaBatchTopKSAE", "MatryoshkaBatchTopKSAE_unset"]


@pytest.mark.parametrize("name", DL_CLASSES)
def test_dictionary_learning_classes_encode_and_decode_as_the_library(dl_dir, name) -> None:
    ref = torch.load(dl_dir / name / "reference.pt", weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RadsteerWarning)
        bank = load_feature_bank(dl_dir / name / "ae.pt")
    acts = bank.encode(ref["x"])
    assert (ref["encode"] > 0).any() and (ref["encode"] == 0).any()  # a sparse code, not a trivial one
    torch.testing.assert_close(acts, ref["encode"], **TOL)
    torch.testing.assert_close(bank.decode(acts), ref["decode"], **TOL)
    assert bank.layer == 3 and bank.n_features == 64 and bank.d_model == 16
    # steering uses the decoder rows: row i of W_dec is what feature i adds
    torch.testing.assert_close(bank.decode(torch.eye(64)[:1]) - bank.decode(torch.zeros(1, 64)), bank.decoder[:1],
                               **TOL)


def test_unset_threshold_encodes_as_relu_and_warns_once(tmp_path) -> None:
    src = DATA / "dictionary_learning" / "MatryoshkaBatchTopKSAE_unset"
    shutil.copytree(src, tmp_path / "sae")
    with pytest.warns(RadsteerWarning, match="threshold was never set.*plain ReLU"):
        bank = load_feature_bank(tmp_path / "sae" / "ae.pt")
    assert bank.provenance["activation"] == "relu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second load of the same file stays quiet
        load_feature_bank(tmp_path / "sae" / "ae.pt")


SAELENS = ["standard", "standard_resid_pre", "topk", "topk_rescaled", "abstopk", "jumprelu", "gated"]


@pytest.mark.parametrize("name", SAELENS)
def test_saelens6_folders_encode_and_decode_as_saelens(name) -> None:
    folder = DATA / "saelens" / name
    ref = load_file(str(folder / "reference.safetensors"))
    bank = load_feature_bank(folder)
    acts = bank.encode(ref["x"])
    torch.testing.assert_close(acts, ref["encode"], **TOL)
    torch.testing.assert_close(bank.decode(ref["encode"]), ref["decode"], **TOL)
    # SAELens 6 writes the hook in metadata only; resid_post of block L is radsteer's layer L,
    # resid_pre of block 4 is the output of layer 3
    assert bank.layer == 3


def test_rescale_acts_by_decoder_norm_changes_the_encoding() -> None:
    """The field the old loader ignored: without it encode differs from SAELens'."""
    folder = DATA / "saelens" / "topk_rescaled"
    ref = load_file(str(folder / "reference.safetensors"))
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["rescale_acts_by_decoder_norm"] is True and "hook_layer" not in cfg
    bank = load_feature_bank(folder)
    bank.encoder.feature_scale = None
    assert (bank.encode(ref["x"]) - ref["encode"]).abs().max() > 1e-2


def _copy_with_cfg(tmp_path: Path, name: str, **changes) -> Path:
    out = tmp_path / name
    shutil.copytree(DATA / "saelens" / name, out)
    cfg = json.loads((out / "cfg.json").read_text())
    cfg.update(changes)
    (out / "cfg.json").write_text(json.dumps(cfg))
    return out


@pytest.mark.parametrize("changes,expected", [
    ({"architecture": "temporal"}, "architecture 'temporal' is not supported"),
    ({"architecture": "jumprelu_transcoder"}, "architecture 'jumprelu_transcoder' is not supported"),
    ({"architecture": "gated_v2"}, "architecture 'gated_v2' is not supported"),
    ({"reshape_activations": "hook_z"}, "reshape_activations='hook_z'"),
    ({"normalize_activations": "covariance_whitening"}, "normalize_activations='covariance_whitening'"),
    ({"whiten_inputs": True}, "cfg field(s) whiten_inputs not understood"),
])
def test_unsupported_saelens_fields_are_refused_by_name(tmp_path, changes, expected) -> None:
    folder = _copy_with_cfg(tmp_path, "standard", **changes)
    with pytest.raises(RadsteerError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_feature_bank(folder)


def test_saelens_layer_norm_folder_is_refused() -> None:
    with pytest.raises(RadsteerError, match="normalize_activations='layer_norm'"):
        load_feature_bank(DATA / "saelens" / "layer_norm")


def test_saelens_hook_off_the_residual_stream_has_no_layer() -> None:
    bank = load_feature_bank(DATA / "saelens" / "mlp_out")
    assert bank.layer is None and "hook_mlp_out" in bank.provenance["layer_note"]


@pytest.mark.parametrize("run,hook,layer", [("topk", "layers.3", 3), ("groupmax", "layers.5", 5)])
def test_sparsify_folders_encode_and_decode_as_sparsify(sparsify_dir, run, hook, layer) -> None:
    folder = sparsify_dir / run / hook
    ref = torch.load(folder / "reference.pt", weights_only=True)
    bank = load_feature_bank(folder)
    assert bank.provenance["format"] == "sparsify" and bank.layer == layer
    torch.testing.assert_close(bank.encode(ref["x"]), ref["encode"], **TOL)
    torch.testing.assert_close(bank.decode(ref["encode"]), ref["decode"], **TOL)


def test_sparsify_run_folder_names_its_hookpoints(sparsify_dir) -> None:
    with pytest.raises(RadsteerError, match=r"one SAE per hookpoint \(layers\.3\)"):
        load_feature_bank(sparsify_dir / "topk")
    bank = load_feature_bank(sparsify_dir / "mlp" / "layers.3.mlp")
    assert bank.layer is None and "not a residual-stream layer output" in bank.provenance["layer_note"]


def test_sparsify_transcoder_is_refused(tmp_path) -> None:
    shutil.copytree(DATA / "sparsify" / "topk" / "layers.3", tmp_path / "layers.3")
    cfg = json.loads((tmp_path / "layers.3" / "cfg.json").read_text())
    (tmp_path / "layers.3" / "cfg.json").write_text(json.dumps({**cfg, "transcode": True}))
    with pytest.raises(RadsteerError, match="transcode=true is not supported"):
        load_feature_bank(tmp_path / "layers.3")


# -- non-finite weights ------------------------------------------------------------------------

def _poison(t: torch.Tensor, value: float) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[3] = value
    return t


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_in_every_format(tmp_path, value) -> None:
    state = torch.load(DATA / "dictionary_learning" / "BatchTopKSAE" / "ae.pt", weights_only=True)
    state["decoder.weight"] = _poison(state["decoder.weight"], value)
    torch.save(state, tmp_path / "ae.pt")
    with pytest.raises(RadsteerError, match=r"non-finite weights \(NaN or inf\) in decoder.weight \(1 of 1024\)"):
        load_feature_bank(tmp_path / "ae.pt")
    for fmt, name, wfile in (("saelens", "standard", "sae_weights.safetensors"),
                             ("sparsify", "topk/layers.3", "sae.safetensors")):
        folder = tmp_path / fmt / Path(name).name
        shutil.copytree(DATA / fmt / name, folder)
        weights = load_file(str(folder / wfile))
        weights["W_dec"] = _poison(weights["W_dec"], value)
        save_file(weights, str(folder / wfile))
        with pytest.raises(RadsteerError, match=r"non-finite weights .* in W_dec"):
            load_feature_bank(folder)


def test_validate_refuses_an_sae_with_nan_weights(tmp_path, capsys) -> None:
    write_tiny_study(tmp_path, n_cases=2)
    state = torch.load(tmp_path / "ae.pt", weights_only=True)
    state["W_dec"] = _poison(state["W_dec"], float("nan"))
    torch.save(state, tmp_path / "ae.pt")
    assert main(["validate", str(tmp_path / "protocol.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "features.path" in err and "non-finite weights" in err, err


# -- writing: folders SAELens loads ------------------------------------------------------------

def test_saved_sae_reloads_with_the_same_encoding(tmp_path) -> None:
    from steering.sae_loaders import save_saelens

    for name in ("GatedAutoEncoder", "JumpReluAutoEncoder", "BatchTopKSAE", "AutoEncoder"):
        bank = load_feature_bank(DATA / "dictionary_learning" / name / "ae.pt")
        save_saelens(bank, tmp_path / name)
        cfg = json.loads((tmp_path / name / "cfg.json").read_text())
        assert cfg["dtype"] == "float32" and cfg["metadata"]["hook_name"] == "blocks.3.hook_resid_post"
        back = load_feature_bank(tmp_path / name)
        x = torch.load(DATA / "dictionary_learning" / name / "reference.pt", weights_only=True)["x"]
        torch.testing.assert_close(back.encode(x), bank.encode(x), **TOL)
        assert back.layer == 3


def test_concept_folder_holds_the_projection_encoder(tmp_path) -> None:
    from steering.sae_loaders import save_saelens

    g = torch.Generator().manual_seed(0)
    bank = FeatureBank(decoder=torch.randn(3, 16, generator=g) * 4, ids=["a", "b", "c"], source="concept", layer=2)
    save_saelens(bank, tmp_path / "vec")
    cfg = json.loads((tmp_path / "vec" / "cfg.json").read_text())
    w = load_file(str(tmp_path / "vec" / "sae_weights.safetensors"))
    assert cfg["architecture"] == "abstopk" and cfg["k"] == 3 and cfg["apply_b_dec_to_input"] is False
    assert cfg["metadata"]["hook_name"] == "blocks.2.hook_resid_post" and cfg["dtype"] == "float32"
    torch.testing.assert_close(w["W_enc"].norm(dim=0), torch.ones(3))
    assert not w["b_enc"].any() and not w["b_dec"].any()


# -- the layer: from the SAE's hook name, never a guess ----------------------------------------

def _saelens6_folder(root: Path, hook: str) -> Path:
    """A SAELens 6 cfg for the tiny study's model width (32): hook in metadata only."""
    g = torch.Generator().manual_seed(5)
    folder = root / "sae6"
    folder.mkdir()
    save_file({"W_enc": torch.randn(32, 6, generator=g), "b_enc": torch.zeros(6),
               "W_dec": torch.randn(6, 32, generator=g), "b_dec": torch.zeros(32)},
              str(folder / "sae_weights.safetensors"))
    cfg = {"d_in": 32, "d_sae": 6, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
           "normalize_activations": "none", "reshape_activations": "none", "architecture": "standard",
           "metadata": {"hook_name": hook, "sae_lens_version": "6.54.12"}}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def _generate(tmp_path: Path, sae: Path, *extra: str) -> list[str]:
    return ["generate", "--model-kind", "hf_causal_lm", "--model", str(tmp_path / "model"), "--sae", str(sae),
            "--feature", "f1", "--alpha", "2", "--max-new-tokens", "2", "--json", "--case",
            '{"prompt": "Findings:"}', *extra]


def test_generate_steers_the_layer_named_by_metadata_hook_name(tmp_path, capsys) -> None:
    write_tiny_study(tmp_path)  # a 3-layer model: the old middle-layer guess was layer 1
    sae = _saelens6_folder(tmp_path, "blocks.3.hook_resid_pre")  # = output of layer 2
    assert main(_generate(tmp_path, sae)) == 0
    assert json.loads(capsys.readouterr().out)["layer"] == 2


def test_generate_without_a_known_layer_refuses_to_guess(tmp_path, capsys) -> None:
    write_tiny_study(tmp_path)
    sae = _saelens6_folder(tmp_path, "blocks.1.hook_mlp_out")
    assert main(_generate(tmp_path, sae)) == 2
    err = capsys.readouterr().err.strip()
    assert "no steering layer known" in err and "hook_mlp_out" in err and "--layer" in err
    assert main(_generate(tmp_path, sae, "--layer", "0")) == 0
    assert json.loads(capsys.readouterr().out)["layer"] == 0


SAELENS_PYTHON = os.environ.get("RADSTEER_SAELENS_PYTHON", "")


@pytest.mark.skipif(not SAELENS_PYTHON, reason="RADSTEER_SAELENS_PYTHON (a python with sae-lens 6, which needs "
                    "transformers 5) is not set; scripts/test.sh sets it when that environment exists")
def test_saelens_itself_loads_what_radsteer_writes(tmp_path) -> None:
    """Concept vectors (projection encoder) and re-saved SAEs of each kind, loaded by SAELens 6."""
    from steering.feature_reader import FeatureReader
    from steering.sae_loaders import save_saelens

    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 16, generator=g)
    folders = []
    concept = FeatureBank(decoder=torch.randn(3, 16, generator=g) * 4, ids=["a", "b", "c"], source="concept",
                          layer=2)
    banks = {"concept": (concept, FeatureReader(concept)(x))}  # what radsteer mines with: projections
    for name in ("AutoEncoder", "GatedAutoEncoder", "JumpReluAutoEncoder", "BatchTopKSAE"):
        bank = load_feature_bank(DATA / "dictionary_learning" / name / "ae.pt")
        banks[name] = (bank, bank.encode(x))
    for name in ("topk_rescaled", "abstopk"):
        bank = load_feature_bank(DATA / "saelens" / name)
        banks[name] = (bank, bank.encode(x))
    for name, (bank, acts) in banks.items():
        save_saelens(bank, tmp_path / name)
        expected = {"x": x, "encode": acts.contiguous()}
        if bank.encoder is not None:
            expected["decode"] = bank.decode(acts).contiguous()
        save_file(expected, str(tmp_path / name / "expected.safetensors"))
        folders.append(str(tmp_path / name))
    done = subprocess.run([SAELENS_PYTHON, str(FIXTURES / "check_saelens_loads.py"), *folders],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("ok ") == len(folders), done.stdout
