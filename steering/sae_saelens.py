"""SAELens folders (`cfg.json` + `sae_weights.safetensors`): read every inference architecture
SAELens 6 writes, encode as SAELens does, and write folders that `SAE.load_from_disk` loads.

Encode-affecting cfg fields are honoured (`apply_b_dec_to_input`, `k`,
`rescale_acts_by_decoder_norm`, the architecture's activation, `normalize_activations` values that
SAELens itself treats as the identity at inference) or refused by name (`layer_norm`,
`constant_norm_rescale`, `reshape_activations: hook_z`, transcoders, unknown fields), never
silently dropped. The layer comes from `metadata.hook_name` (SAELens 6) or the top-level
`hook_name` / `hook_layer` of older versions, via `steering.hook_points`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from steering.errors import RadsteerError
from steering.feature_bank import FeatureBank, SAEEncoder
from steering.hook_points import layer_from_hook_name, tl_hook_name
from steering.sae_files import check_finite, check_shapes, read_json, read_safetensors

SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
# architecture → radsteer activation (inference classes SAELens 6 registers that radsteer can encode)
ARCHITECTURES = {"standard": "relu", "topk": "topk", "abstopk": "abstopk", "jumprelu": "jumprelu", "gated": "gated"}
# SAELens applies no input transform at inference for these (the factor is folded in, or absent)
_IDENTITY_NORMALISATIONS = ("none", None, "expected_average_only_in")
# fields that do not change what encode/decode compute (SAELens 6 and the fields of versions 3–5)
_INERT_FIELDS = {
    "architecture", "d_in", "d_sae", "dtype", "device", "metadata", "radsteer", "apply_b_dec_to_input",
    "normalize_activations", "reshape_activations", "k", "rescale_acts_by_decoder_norm",
    "activation_fn_str", "activation_fn", "activation_fn_kwargs", "finetuning_scaling_factor",
    "model_name", "hook_name", "hook_layer", "hook_head_index", "context_size", "dataset_path",
    "dataset_trust_remote_code", "prepend_bos", "sae_lens_training_version", "sae_lens_version",
    "neuronpedia_id", "model_from_pretrained_kwargs", "seqpos_slice", "exclude_special_tokens",
    "model_class_name", "normalize_decoder", "noise_scale", "decoder_orthogonal_init",
    "decoder_heuristic_init", "init_encoder_as_decoder_transpose", "mse_loss_normalization",
    "scale_sparsity_penalty_by_decoder_norm", "l1_coefficient", "lp_norm", "l1_warm_up_steps",
    "use_ghost_grads", "jumprelu_init_threshold", "jumprelu_bandwidth", "decoder_init_norm",
    "aux_loss_coefficient", "use_sparse_activations", "topk_threshold_lr", "matryoshka_widths",
}


def load_saelens(folder: str | Path) -> FeatureBank:
    folder = Path(folder)
    cfg_path, w_path = folder / SAELENS_CFG, folder / SAELENS_WEIGHTS
    cfg = read_json(cfg_path)
    weights = read_safetensors(w_path)
    check_finite(w_path, weights)
    if "W_dec" not in weights:
        raise RadsteerError(f"{w_path} lacks keys W_dec (found: {', '.join(sorted(weights))})")
    W_dec = weights["W_dec"].float()
    if W_dec.dim() != 2:
        raise RadsteerError(f"inconsistent SAE weights in {w_path}: W_dec has shape {tuple(W_dec.shape)}")
    n, d = W_dec.shape
    for key, expected in (("d_in", d), ("d_sae", n)):
        if key in cfg and int(cfg[key]) != expected:
            raise RadsteerError(f"{cfg_path}: {key}={cfg[key]} but W_dec in {w_path} is {n}×{d}")
    b_dec = weights.get("b_dec", torch.zeros(d)).float()
    extra = cfg.get("radsteer", {}) if isinstance(cfg.get("radsteer"), dict) else {}
    encoder = None
    if "W_enc" in weights and extra.get("encoder") != "projection" and extra.get("source") != "concept":
        encoder = _encoder(cfg_path, cfg, weights, W_dec, b_dec)
    ids = [str(i) for i in extra.get("feature_ids", [f"f{i}" for i in range(n)])]
    if len(ids) != n:
        raise RadsteerError(f"{cfg_path}: radsteer.feature_ids has {len(ids)} ids for {n} vectors")
    layer, hook, note = saelens_layer(cfg)
    provenance = {"path": str(folder), "format": "saelens", **extra.get("provenance", {})}
    if hook:
        provenance.update(hook_name=hook)
    if note:
        provenance.update(layer_note=note)
    if encoder is not None:
        provenance.update(architecture=str(cfg.get("architecture", "standard")), activation=encoder.activation)
    return FeatureBank(
        decoder=W_dec.contiguous(),
        ids=ids,
        source=extra.get("source", "sae"),
        layer=layer,
        normalisation_factor=extra.get("normalisation_factor"),
        descriptions=dict(extra.get("descriptions", {})),
        target_concepts={k: list(v) for k, v in extra.get("target_concepts", {}).items()},
        encoder=encoder,
        b_dec=b_dec,
        provenance=provenance,
    )


def saelens_layer(cfg: dict[str, Any]) -> tuple[int | None, str, str]:
    """(steering layer or None, hook name, why no layer) from a SAELens cfg of any version."""
    extra = cfg.get("radsteer") if isinstance(cfg.get("radsteer"), dict) else {}
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    hook = meta.get("hook_name") or cfg.get("hook_name") or ""
    if extra.get("layer") is not None:
        return int(extra["layer"]), str(hook), ""
    if hook:
        layer, note = layer_from_hook_name(str(hook))
        return layer, str(hook), note
    if isinstance(cfg.get("hook_layer"), int):  # SAELens < 6 without a hook name: a resid_post layer
        return int(cfg["hook_layer"]), "", ""
    return None, "", "cfg.json names no hook (metadata.hook_name)"


def _encoder(cfg_path: Path, cfg: dict[str, Any], weights: dict[str, torch.Tensor], W_dec: torch.Tensor,
             b_dec: torch.Tensor) -> SAEEncoder:
    arch = str(cfg.get("architecture", "standard"))
    fn = str(cfg.get("activation_fn_str") or cfg.get("activation_fn") or "relu")  # SAELens < 6
    if arch not in ARCHITECTURES:
        raise RadsteerError(
            f"{cfg_path}: architecture {arch!r} is not supported (radsteer encodes "
            f"{', '.join(ARCHITECTURES)}); refusing rather than encoding it as another architecture"
        )
    unknown = sorted(set(cfg) - _INERT_FIELDS)
    if unknown:
        raise RadsteerError(f"{cfg_path}: cfg field(s) {', '.join(unknown)} not understood by radsteer (they may "
                            f"change how the SAE encodes); refusing rather than ignoring them")
    norm = cfg.get("normalize_activations", "none")
    if norm not in _IDENTITY_NORMALISATIONS:
        raise RadsteerError(f"{cfg_path}: normalize_activations={norm!r} is not supported (it needs each "
                            f"input's own statistics to decode); radsteer supports none, expected_average_only_in")
    if cfg.get("reshape_activations", "none") not in ("none", None):
        raise RadsteerError(f"{cfg_path}: reshape_activations={cfg['reshape_activations']!r} (attention hook_z "
                            f"SAEs) is not supported: radsteer steers the residual stream")
    if cfg.get("finetuning_scaling_factor"):
        raise RadsteerError(f"{cfg_path}: finetuning_scaling_factor=true is not supported")
    activation = ARCHITECTURES[arch]
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    if arch == "standard" and fn != "relu":
        if fn != "topk":
            raise RadsteerError(f"{cfg_path}: activation_fn {fn!r} is not supported (relu, topk)")
        activation = "topk"
    if activation in ("topk", "abstopk") and not k:
        raise RadsteerError(f"{cfg_path}: architecture {arch!r} needs k")
    n = W_dec.shape[0]
    W_enc = weights["W_enc"].float()
    b_enc = weights.get("b_enc", torch.zeros(n)).float()
    check_shapes(cfg_path.parent / SAELENS_WEIGHTS, W_enc, b_enc, W_dec, b_dec)
    needed = {"jumprelu": ("threshold",), "gated": ("b_gate", "b_mag", "r_mag")}.get(arch, ())
    missing = [key for key in needed if key not in weights]
    if missing:
        raise RadsteerError(f"{cfg_path.parent / SAELENS_WEIGHTS} lacks {', '.join(missing)} "
                            f"(needed by architecture {arch!r})")
    scale = W_dec.norm(dim=-1) if cfg.get("rescale_acts_by_decoder_norm") else None
    return SAEEncoder(
        W_enc, b_enc, b_dec, activation=activation,
        threshold=weights["threshold"].float() if arch == "jumprelu" else None,
        k=int(k) if k else None,
        subtract_b_dec=bool(cfg.get("apply_b_dec_to_input", True)),
        feature_scale=scale,
        gate={key: weights[key].float() for key in needed} if arch == "gated" else None,
    )


def save_saelens(bank: FeatureBank, folder: str | Path, *, hook_name: str = "", model_name: str = "") -> Path:
    """Write a bank as a SAELens 6 folder that `sae_lens.SAE.load_from_disk` loads.

    An SAE keeps its encoder (as the matching SAELens architecture). Concept vectors and other
    encoder-less banks get the projection encoder — `abstopk` with k = n, W_enc the unit
    directions, zero biases — so SAELens' `encode` returns exactly the projections radsteer mines.
    `hook_name` may be the Hugging Face module path of the steering point; the SAELens hook name
    (`blocks.L.hook_resid_post`) is derived from the bank's layer.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors, arch_cfg = _saelens_weights(bank)
    meta: dict[str, Any] = {}
    if bank.layer is not None:
        meta["hook_name"] = tl_hook_name(bank.layer)
    if hook_name:
        meta["hf_hook_point"] = hook_name
    if model_name or bank.provenance.get("model"):
        meta["model_name"] = model_name or str(bank.provenance.get("model"))
    cfg = {
        "architecture": arch_cfg.pop("architecture"),
        "d_in": bank.d_model,
        "d_sae": bank.n_features,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": arch_cfg.pop("apply_b_dec_to_input"),
        "normalize_activations": "none",
        "reshape_activations": "none",
        **arch_cfg,
        "metadata": meta,
        "radsteer": {
            "feature_ids": bank.ids,
            "source": bank.source,
            "layer": bank.layer,
            "normalisation_factor": bank.normalisation_factor,
            "descriptions": bank.descriptions,
            "target_concepts": bank.target_concepts,
            "encoder": "sae" if bank.encoder is not None else "projection",
            "provenance": {k: v for k, v in bank.provenance.items() if k not in ("path", "format")},
        },
    }
    _write_atomic_bytes(folder / SAELENS_WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    _write_atomic_bytes(folder / SAELENS_CFG, lambda tmp: tmp.write_text(json.dumps(cfg, indent=2) + "\n"))
    return folder


def _saelens_weights(bank: FeatureBank) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    W_dec = bank.decoder.float().contiguous()
    n, d = W_dec.shape
    enc = bank.encoder
    if enc is None:  # projection encoder: identity activation on unit directions
        unit = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        tensors = {"W_enc": unit.T.contiguous(), "b_enc": torch.zeros(n), "W_dec": W_dec, "b_dec": torch.zeros(d)}
        return tensors, {"architecture": "abstopk", "apply_b_dec_to_input": False, "k": n,
                         "rescale_acts_by_decoder_norm": False}
    b_dec = (bank.b_dec if bank.b_dec is not None else enc.b_dec).float().contiguous()
    tensors = {"W_enc": enc.W_enc.float().contiguous(), "b_enc": enc.b_enc.float().contiguous(),
               "W_dec": W_dec, "b_dec": b_dec}
    cfg: dict[str, Any] = {"apply_b_dec_to_input": bool(enc.subtract_b_dec)}
    if enc.n_active is not None and enc.n_active < n:
        raise RadsteerError("cannot save a Matryoshka SAE with inactive groups in the SAELens layout")
    if enc.feature_scale is not None:
        if enc.activation not in ("topk", "abstopk") or not torch.allclose(enc.feature_scale, W_dec.norm(dim=-1)):
            raise RadsteerError("SAELens can rescale activations only by the decoder norms of a topk SAE")
        cfg["rescale_acts_by_decoder_norm"] = True
    if enc.activation == "relu":
        cfg["architecture"] = "standard"
    elif enc.activation in ("topk", "abstopk"):
        cfg.update(architecture=enc.activation, k=int(enc.k or n))
        cfg.setdefault("rescale_acts_by_decoder_norm", False)
    elif enc.activation in ("jumprelu", "batchtopk"):  # SAELens saves BatchTopK SAEs as JumpReLU too
        thr = enc.threshold if enc.threshold is not None else torch.zeros(())
        tensors["threshold"] = (torch.ones(n) * thr.float()).contiguous()
        cfg["architecture"] = "jumprelu"
    elif enc.activation == "gated" and enc.gate is not None:
        del tensors["b_enc"]
        tensors.update({key: value.float().contiguous() for key, value in enc.gate.items()})
        cfg["architecture"] = "gated"
    else:
        raise RadsteerError(f"SAELens has no architecture for a {enc.activation!r} encoder")
    return tensors, cfg


def _write_atomic_bytes(path: Path, write) -> None:
    """Write beside the target, then rename: a crash never leaves a half-written file in place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
