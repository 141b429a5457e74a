"""Loaders for feature banks on disk, with errors that say which file and what is wrong.

Formats:
- `dictionary_learning`: an `ae.pt` state dict as released in `microsoft/maira-2-sae`
  (`W_enc` [d, n], `b_enc`, `W_dec` [n, d], `b_dec`, `threshold`, `k`, `group_sizes`), or the
  plain ReLU AutoEncoder layout (`encoder.weight`, `encoder.bias`, `decoder.weight`, `bias`);
  an optional `config.json` beside it gives the layer. Always `torch.load(weights_only=True)`.
- `saelens`: a folder with `cfg.json` + `sae_weights.safetensors`. radsteer's concept vectors
  use this layout too, with their ids, descriptions and target concepts under cfg "radsteer".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from steering.errors import RadsteerError
from steering.feature_bank import FeatureBank, SAEEncoder

SAEFormat = Literal["auto", "dictionary_learning", "saelens"]
SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
_DL_KEYS = ("W_enc", "b_enc", "W_dec", "b_dec")
_DL_RELU_KEYS = ("encoder.weight", "encoder.bias", "decoder.weight", "bias")
DOWNLOAD_HINT = (
    "download the SAE (for MAIRA-2: `huggingface-cli download microsoft/maira-2-sae --local-dir DIR`) "
    "and point the protocol's `features.sae.path` at its ae.pt"
)


def load_feature_bank(
    path: str | Path,
    fmt: SAEFormat = "auto",
    *,
    normalisation_factor: float | None = None,
    layer: int | None = None,
) -> FeatureBank:
    """Load a feature bank, detecting the format from the path when `fmt` is "auto"."""
    p = Path(path)
    if not p.exists():
        raise RadsteerError(f"SAE not found at {p}: {DOWNLOAD_HINT}")
    if fmt == "auto":
        fmt = "saelens" if p.is_dir() and (p / SAELENS_CFG).exists() else "dictionary_learning"
    if fmt == "saelens":
        bank = load_saelens(p)
    elif fmt == "dictionary_learning":
        bank = load_dictionary_learning(p / "ae.pt" if p.is_dir() else p)
    else:
        raise RadsteerError(f"unknown SAE format {fmt!r}: use dictionary_learning or saelens")
    if normalisation_factor is not None:
        bank.normalisation_factor = float(normalisation_factor)
        if bank.encoder is not None:
            bank.encoder.input_scale = 1.0 / float(normalisation_factor)
    if layer is not None:
        bank.layer = layer
    return bank


def _torch_load(path: Path) -> Any:
    if not path.exists():
        raise RadsteerError(f"SAE file not found: {path}: {DOWNLOAD_HINT}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and EOF errors all mean the same to the user
        raise RadsteerError(
            f"cannot read SAE file {path}: it is corrupt or truncated ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no details'}); download it again"
        ) from exc


def load_dictionary_learning(path: str | Path) -> FeatureBank:
    path = Path(path)
    state = _torch_load(path)
    if not isinstance(state, dict):
        raise RadsteerError(f"{path} is not an SAE state dict (found {type(state).__name__})")
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if all(k in state for k in _DL_KEYS):
        W_enc, b_enc, W_dec, b_dec = (state[k].float() for k in _DL_KEYS)
        has_threshold = "threshold" in state and float(state["threshold"].float().max()) >= 0
        activation = "batchtopk" if has_threshold else ("topk" if "k" in state else "relu")
    elif all(k in state for k in _DL_RELU_KEYS):
        W_enc = state["encoder.weight"].float().T
        b_enc = state["encoder.bias"].float()
        W_dec = state["decoder.weight"].float().T
        b_dec = state["bias"].float()
        activation = "relu"
    else:
        missing = [k for k in _DL_KEYS if k not in state]
        raise RadsteerError(
            f"SAE file {path} lacks keys {', '.join(missing)} (a dictionary_learning ae.pt holds "
            f"{', '.join(_DL_KEYS)}; found: {', '.join(sorted(state)) or 'nothing'})"
        )
    _check_shapes(path, W_enc, b_enc, W_dec, b_dec)
    threshold = state["threshold"].float() if activation == "batchtopk" else None
    k = int(state["k"]) if "k" in state else None
    config = _read_json(path.parent / "config.json") if (path.parent / "config.json").exists() else {}
    trainer = config.get("trainer", {}) if isinstance(config, dict) else {}
    encoder = SAEEncoder(W_enc, b_enc, b_dec, activation=activation, threshold=threshold, k=k)
    n = W_dec.shape[0]
    return FeatureBank(
        decoder=W_dec.contiguous(),
        ids=[f"f{i}" for i in range(n)],
        source="sae",
        layer=trainer.get("layer"),
        encoder=encoder,
        b_dec=b_dec,
        provenance={
            "path": str(path), "format": "dictionary_learning", "activation": activation, "k": k,
            "group_sizes": [int(g) for g in state["group_sizes"].tolist()] if "group_sizes" in state else None,
        },
    )


def load_saelens(folder: str | Path) -> FeatureBank:
    folder = Path(folder)
    cfg_path, w_path = folder / SAELENS_CFG, folder / SAELENS_WEIGHTS
    cfg = _read_json(cfg_path)
    if not w_path.exists():
        raise RadsteerError(f"SAELens folder {folder} has no {SAELENS_WEIGHTS}")
    try:
        weights = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RadsteerError(
            f"cannot read {w_path}: it is corrupt or truncated ({exc}); download or build it again"
        ) from exc
    missing = [k for k in ("W_dec",) if k not in weights]
    if missing:
        raise RadsteerError(f"{w_path} lacks keys {', '.join(missing)} (found: {', '.join(sorted(weights))})")
    W_dec = weights["W_dec"].float()
    n, d = W_dec.shape
    for key, expected in (("d_in", d), ("d_sae", n)):
        if key in cfg and int(cfg[key]) != expected:
            raise RadsteerError(f"{cfg_path}: {key}={cfg[key]} but W_dec in {w_path} is {n}×{d}")
    b_dec = weights.get("b_dec", torch.zeros(d)).float()
    encoder = None
    if "W_enc" in weights:
        W_enc = weights["W_enc"].float()
        b_enc = weights.get("b_enc", torch.zeros(n)).float()
        _check_shapes(w_path, W_enc, b_enc, W_dec, b_dec)
        arch = str(cfg.get("architecture", "standard")).lower()
        activation = {"standard": "relu", "jumprelu": "jumprelu", "topk": "topk", "batchtopk": "batchtopk"}.get(
            arch, "relu"
        )
        encoder = SAEEncoder(
            W_enc, b_enc, b_dec, activation=activation, threshold=weights.get("threshold"),
            k=cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k"),
            subtract_b_dec=bool(cfg.get("apply_b_dec_to_input", True)),
        )
    extra = cfg.get("radsteer", {})
    ids = [str(i) for i in extra.get("feature_ids", [f"f{i}" for i in range(n)])]
    if len(ids) != n:
        raise RadsteerError(f"{cfg_path}: radsteer.feature_ids has {len(ids)} ids for {n} vectors")
    return FeatureBank(
        decoder=W_dec.contiguous(),
        ids=ids,
        source=extra.get("source", "sae"),
        layer=extra.get("layer", cfg.get("hook_layer")),
        normalisation_factor=extra.get("normalisation_factor"),
        descriptions=dict(extra.get("descriptions", {})),
        target_concepts={k: list(v) for k, v in extra.get("target_concepts", {}).items()},
        encoder=encoder,
        b_dec=b_dec,
        provenance={"path": str(folder), "format": "saelens", **extra.get("provenance", {})},
    )


def save_saelens(bank: FeatureBank, folder: str | Path, *, hook_name: str = "") -> Path:
    """Write a bank in the SAELens layout (used for radsteer's concept vectors)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"W_dec": bank.decoder.float().contiguous()}
    if bank.b_dec is not None:
        tensors["b_dec"] = bank.b_dec.float().contiguous()
    if bank.encoder is not None:
        tensors.update(W_enc=bank.encoder.W_enc.contiguous(), b_enc=bank.encoder.b_enc.contiguous())
    save_file(tensors, str(folder / SAELENS_WEIGHTS))
    cfg = {
        "d_in": bank.d_model,
        "d_sae": bank.n_features,
        "architecture": "standard",
        "hook_name": hook_name,
        "hook_layer": bank.layer,
        "apply_b_dec_to_input": False,
        "radsteer": {
            "feature_ids": bank.ids,
            "source": bank.source,
            "layer": bank.layer,
            "normalisation_factor": bank.normalisation_factor,
            "descriptions": bank.descriptions,
            "target_concepts": bank.target_concepts,
            "provenance": {k: v for k, v in bank.provenance.items() if k not in ("path", "format")},
        },
    }
    (folder / SAELENS_CFG).write_text(json.dumps(cfg, indent=2) + "\n")
    return folder


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise RadsteerError(f"missing file {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RadsteerError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RadsteerError(f"{path} must hold a JSON object")
    return data


def _check_shapes(path: Path, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor) -> None:
    n, d = W_dec.shape if W_dec.dim() == 2 else (None, None)
    problems = []
    if W_dec.dim() != 2:
        problems.append(f"W_dec has shape {tuple(W_dec.shape)}, expected [n_features, d]")
    else:
        if tuple(W_enc.shape) != (d, n):
            problems.append(f"W_enc is {tuple(W_enc.shape)}, expected ({d}, {n})")
        if tuple(b_enc.shape) != (n,):
            problems.append(f"b_enc is {tuple(b_enc.shape)}, expected ({n},)")
        if tuple(b_dec.shape) != (d,):
            problems.append(f"b_dec is {tuple(b_dec.shape)}, expected ({d},)")
    if problems:
        raise RadsteerError(f"inconsistent SAE weights in {path}: " + "; ".join(problems))
