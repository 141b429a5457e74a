"""EleutherAI sparsify SAEs: one folder per hookpoint holding `cfg.json` + `sae.safetensors`
(as written by `SparseCoder.save_to_disk`, and read by delphi).

Weights: `encoder.weight` [n, d], `encoder.bias` [n], `W_dec` [n, d], `b_dec` [d]. Encoding is
sparsify's: `relu((x - b_dec) @ encoder.weight.T + encoder.bias)`, then top-k per token
(`activation: topk`) or the maximum of each of k groups (`groupmax`). The hookpoint is the folder
name (`layers.8` = the output of decoder layer 8). Transcoders and skip connections change what
decoding means, so they are refused by name.
"""

from __future__ import annotations

from pathlib import Path

from steering.errors import RadsteerError
from steering.feature_bank import FeatureBank, SAEEncoder
from steering.hook_points import layer_from_hook_name
from steering.sae_files import check_finite, check_shapes, read_json, read_safetensors

SPARSIFY_CFG = "cfg.json"
SPARSIFY_WEIGHTS = "sae.safetensors"
_KEYS = ("encoder.weight", "encoder.bias", "W_dec", "b_dec")


def is_sparsify_folder(path: Path) -> bool:
    return path.is_dir() and (path / SPARSIFY_CFG).exists() and (path / SPARSIFY_WEIGHTS).exists()


def load_sparsify(folder: str | Path) -> FeatureBank:
    folder = Path(folder)
    cfg_path, w_path = folder / SPARSIFY_CFG, folder / SPARSIFY_WEIGHTS
    cfg = read_json(cfg_path)
    for flag, what in (("transcode", "a transcoder predicts another module's output"),
                       ("skip_connection", "its skip connection adds W_skip·x to every reconstruction")):
        if cfg.get(flag):
            raise RadsteerError(f"{cfg_path}: {flag}=true is not supported ({what}); radsteer reads SAEs on the "
                                f"residual stream")
    activation = str(cfg.get("activation", "topk"))
    if activation not in ("topk", "groupmax"):
        raise RadsteerError(f"{cfg_path}: activation {activation!r} is not supported (topk, groupmax)")
    weights = read_safetensors(w_path)
    check_finite(w_path, weights)
    missing = [k for k in _KEYS if k not in weights]
    if missing:
        raise RadsteerError(f"{w_path} lacks keys {', '.join(missing)} (found: {', '.join(sorted(weights))})")
    W_enc = weights["encoder.weight"].float().T.contiguous()
    b_enc, W_dec, b_dec = (weights[k].float() for k in ("encoder.bias", "W_dec", "b_dec"))
    check_shapes(w_path, W_enc, b_enc, W_dec, b_dec)
    n, d = W_dec.shape
    if "d_in" in cfg and int(cfg["d_in"]) != d:
        raise RadsteerError(f"{cfg_path}: d_in={cfg['d_in']} but W_dec in {w_path} is {n}×{d}")
    k = int(cfg.get("k", 32))
    if activation == "groupmax" and n % k:
        raise RadsteerError(f"{cfg_path}: groupmax needs the {n} latents to split into k={k} equal groups")
    layer, note = layer_from_hook_name(folder.name)
    provenance = {"path": str(folder), "format": "sparsify", "activation": activation, "k": k,
                  "hook_name": folder.name}
    if note:
        provenance["layer_note"] = note + " (sparsify names the hookpoint by its folder)"
    encoder = SAEEncoder(W_enc, b_enc, b_dec, activation=activation, k=k, subtract_b_dec=True)
    return FeatureBank(decoder=W_dec.contiguous(), ids=[f"f{i}" for i in range(n)], source="sae", layer=layer,
                       encoder=encoder, b_dec=b_dec, provenance=provenance)


def hookpoint_folders(root: Path) -> list[Path]:
    """The per-hookpoint SAE folders of a sparsify run directory."""
    return sorted(p for p in root.iterdir() if is_sparsify_folder(p)) if root.is_dir() else []
