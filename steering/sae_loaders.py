"""Loaders for feature banks on disk, with errors that say which file and what is wrong.

Formats (detected from the path unless named):
- `dictionary_learning`: an `ae.pt` state dict of any saprmarks/dictionary_learning class —
  AutoEncoder, AutoEncoderNew, GatedAutoEncoder, JumpReluAutoEncoder, AutoEncoderTopK,
  BatchTopKSAE, MatryoshkaBatchTopKSAE (the layout of `microsoft/maira-2-sae`) — encoded as that
  class encodes; an optional `config.json` beside it gives the layer and the class.
  Always `torch.load(weights_only=True)`.
- `saelens`: a folder with `cfg.json` + `sae_weights.safetensors` (steering/sae_saelens.py).
  radsteer's concept vectors use this layout too, with their ids, descriptions and target
  concepts under cfg "radsteer".
- `sparsify`: an EleutherAI sparsify hookpoint folder, `cfg.json` + `sae.safetensors`
  (steering/sae_sparsify.py).
Every loader refuses non-finite weights and records the SAE's own layer (or why it has none).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Literal

import torch

from steering.errors import RadsteerError, RadsteerWarning
from steering.feature_bank import FeatureBank, SAEEncoder
from steering.sae_files import DOWNLOAD_HINT, check_finite, check_shapes, read_json, torch_load
from steering.sae_saelens import SAELENS_CFG, SAELENS_WEIGHTS, load_saelens, save_saelens
from steering.sae_sparsify import SPARSIFY_WEIGHTS, hookpoint_folders, load_sparsify

__all__ = ["SAELENS_CFG", "SAELENS_WEIGHTS", "SAEFormat", "load_dictionary_learning", "load_feature_bank",
           "load_saelens", "load_sparsify", "save_saelens"]

SAEFormat = Literal["auto", "dictionary_learning", "saelens", "sparsify"]
_DL_KEYS = ("W_enc", "b_enc", "W_dec", "b_dec")
_DL_RELU_KEYS = ("encoder.weight", "encoder.bias", "decoder.weight", "bias")
_DL_TOPK_KEYS = ("encoder.weight", "encoder.bias", "decoder.weight", "b_dec")
_DL_GATED_KEYS = ("encoder.weight", "decoder.weight", "decoder_bias", "r_mag", "gate_bias", "mag_bias")
_DL_NEW_KEYS = ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias")
_WARNED_THRESHOLD: set[str] = set()


def load_feature_bank(
    path: str | Path,
    fmt: SAEFormat = "auto",
    *,
    normalisation_factor: float | None = None,
    layer: int | None = None,
) -> FeatureBank:
    """Load a feature bank, detecting the format from the path when `fmt` is "auto".

    `layer` (the protocol's or `--layer`) is where radsteer will steer; when the SAE names its
    own layer and it differs, a warning says so (steering a layer the SAE was not trained on is
    allowed, never silent). `bank.provenance["sae_layer"]` keeps the SAE's own layer.
    """
    p = Path(path)
    if not p.exists():
        raise RadsteerError(f"SAE not found at {p}: {DOWNLOAD_HINT}")
    if fmt == "auto":
        fmt = detect_format(p)
    if fmt == "saelens":
        bank = load_saelens(p)
    elif fmt == "sparsify":
        bank = load_sparsify(p)
    elif fmt == "dictionary_learning":
        bank = load_dictionary_learning(p / "ae.pt" if p.is_dir() else p)
    else:
        raise RadsteerError(f"unknown SAE format {fmt!r}: use dictionary_learning, saelens or sparsify")
    if normalisation_factor is not None:
        bank.normalisation_factor = float(normalisation_factor)
        if bank.encoder is not None:
            bank.encoder.input_scale = 1.0 / float(normalisation_factor)
    bank.provenance["sae_layer"] = bank.layer
    if layer is not None:
        if bank.layer is not None and bank.layer != layer and bank.source == "sae":
            hook = bank.provenance.get("hook_name")
            warnings.warn(f"{p}: the SAE was trained at layer {bank.layer}{f' ({hook})' if hook else ''} but "
                          f"layer {layer} will be steered", RadsteerWarning, stacklevel=2)
        bank.layer = layer
    return bank


def detect_format(p: Path) -> str:
    """The format of a path; a folder that holds several SAEs or none gets an error naming them."""
    if not p.is_dir():
        return "dictionary_learning"
    if (p / SAELENS_CFG).exists():
        has_sparsify = (p / SPARSIFY_WEIGHTS).exists() and not (p / SAELENS_WEIGHTS).exists()
        return "sparsify" if has_sparsify else "saelens"
    if (p / "ae.pt").exists():
        return "dictionary_learning"
    subs = hookpoint_folders(p) or sorted(d for d in p.iterdir() if (d / SAELENS_CFG).exists())
    if subs:
        names = ", ".join(d.name for d in subs[:6]) + (", …" if len(subs) > 6 else "")
        raise RadsteerError(f"{p} holds one SAE per hookpoint ({names}): point at one of them, e.g. {subs[0]}")
    raise RadsteerError(
        f"{p} holds no SAE: expected cfg.json + {SAELENS_WEIGHTS} (SAELens), cfg.json + {SPARSIFY_WEIGHTS} "
        f"(EleutherAI sparsify) or ae.pt (dictionary_learning)"
    )


def load_dictionary_learning(path: str | Path) -> FeatureBank:
    """An `ae.pt` of any saprmarks/dictionary_learning class, encoded as that class encodes."""
    path = Path(path)
    state = torch_load(path)
    if not isinstance(state, dict):
        raise RadsteerError(f"{path} is not an SAE state dict (found {type(state).__name__})")
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    config = read_json(path.parent / "config.json") if (path.parent / "config.json").exists() else {}
    trainer = config.get("trainer", {}) if isinstance(config.get("trainer"), dict) else {}
    dict_class = str(trainer.get("dict_class", ""))
    check_finite(path, state)
    layout = dl_layout(path, state, dict_class)
    W_enc, b_enc, W_dec, b_dec, enc_kwargs = layout.pop("W_enc"), layout.pop("b_enc"), layout.pop("W_dec"), \
        layout.pop("b_dec"), layout
    check_shapes(path, W_enc, b_enc, W_dec, b_dec)
    encoder = SAEEncoder(W_enc, b_enc, b_dec, **enc_kwargs)
    n = W_dec.shape[0]
    return FeatureBank(
        decoder=W_dec.contiguous(),
        ids=[f"f{i}" for i in range(n)],
        source="sae",
        layer=_dl_layer(path, trainer),
        encoder=encoder,
        b_dec=b_dec,
        provenance={
            "path": str(path), "format": "dictionary_learning", "activation": encoder.activation, "k": encoder.k,
            "dict_class": dict_class or None,
            "group_sizes": [int(g) for g in state["group_sizes"].tolist()] if "group_sizes" in state else None,
        },
    )


def dl_layout(path: Path, state: dict[str, Any], dict_class: str = "") -> dict[str, Any]:
    """Map a dictionary_learning state dict onto SAEEncoder arguments (SAELens orientation)."""
    f = {k: v.float() for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    k = int(state["k"]) if "k" in state else None
    if all(key in state for key in _DL_KEYS):  # Matryoshka, JumpReLU (and the MAIRA-2 release)
        out: dict[str, Any] = dict(W_enc=f["W_enc"], b_enc=f["b_enc"], W_dec=f["W_dec"], b_dec=f["b_dec"], k=k)
        thr = f.get("threshold")
        if thr is not None and thr.dim() == 1 and k is None:  # JumpReluAutoEncoder: per-feature thresholds
            out.update(activation="jumprelu", threshold=thr, subtract_b_dec=False)
        elif thr is not None:
            out.update(_threshold_activation(path, thr))
        else:
            out["activation"] = "topk" if k is not None else "relu"
        if "group_sizes" in state:
            out["n_active"] = int(state["group_sizes"].sum())
        return out
    if all(key in state for key in _DL_TOPK_KEYS):  # BatchTopKSAE, AutoEncoderTopK (nn.Linear layout)
        out = dict(W_enc=f["encoder.weight"].T, b_enc=f["encoder.bias"], W_dec=f["decoder.weight"].T,
                   b_dec=f["b_dec"], k=k)
        if dict_class == "AutoEncoderTopK" or "threshold" not in f:
            out["activation"] = "topk"  # AutoEncoderTopK.encode defaults to use_threshold=False
        else:
            out.update(_threshold_activation(path, f["threshold"]))
        return out
    if all(key in state for key in _DL_GATED_KEYS):  # GatedAutoEncoder
        W_enc = f["encoder.weight"].T
        return dict(W_enc=W_enc, b_enc=torch.zeros(W_enc.shape[1]), W_dec=f["decoder.weight"].T,
                    b_dec=f["decoder_bias"], activation="gated",
                    gate={"b_gate": f["gate_bias"], "b_mag": f["mag_bias"], "r_mag": f["r_mag"]})
    if all(key in state for key in _DL_RELU_KEYS):  # AutoEncoder
        return dict(W_enc=f["encoder.weight"].T, b_enc=f["encoder.bias"], W_dec=f["decoder.weight"].T,
                    b_dec=f["bias"], activation="relu")
    if all(key in state for key in _DL_NEW_KEYS):  # AutoEncoderNew: no input centring, decoder bias
        return dict(W_enc=f["encoder.weight"].T, b_enc=f["encoder.bias"], W_dec=f["decoder.weight"].T,
                    b_dec=f["decoder.bias"], activation="relu", subtract_b_dec=False)
    missing = [key for key in _DL_KEYS if key not in state]
    raise RadsteerError(
        f"SAE file {path} lacks keys {', '.join(missing)} (a dictionary_learning ae.pt holds "
        f"{', '.join(_DL_KEYS)}, or the nn.Linear layout of AutoEncoder, GatedAutoEncoder or BatchTopKSAE; "
        f"found: {', '.join(sorted(state)) or 'nothing'})"
    )


def _threshold_activation(path: Path, threshold: torch.Tensor) -> dict[str, Any]:
    """BatchTopK at inference: the global threshold; −1 means it was never set, and then the
    library encodes as plain ReLU (`acts * (acts > -1)`), so radsteer does too, and says so once."""
    if float(threshold.max()) >= 0:
        return {"activation": "batchtopk", "threshold": threshold}
    key = str(path.resolve())
    if key not in _WARNED_THRESHOLD:
        _WARNED_THRESHOLD.add(key)
        warnings.warn(
            f"{path}: the BatchTopK threshold was never set in training (threshold = -1); encoding as plain "
            f"ReLU, as dictionary_learning does, so activations are not sparse",
            RadsteerWarning, stacklevel=3,
        )
    return {"activation": "relu"}


def _dl_layer(path: Path, trainer: dict[str, Any]) -> int | None:
    """The layer from dictionary_learning's config.json; a submodule off the residual stream is refused."""
    sub = trainer.get("submodule_name")
    if isinstance(sub, str) and re.search(r"(mlp|attn|attention)", sub, re.I):
        raise RadsteerError(
            f"{path.parent / 'config.json'}: trainer.submodule_name {sub!r} is not the residual stream; "
            f"radsteer steers decoder-layer outputs"
        )
    layer = trainer.get("layer")
    return int(layer) if isinstance(layer, int) and not isinstance(layer, bool) else None


