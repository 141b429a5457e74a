"""Reading SAE files safely: JSON configs, safetensors, pickles (weights only), finiteness and shapes.

Shared by every SAE format reader, so each error names its file the same way.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from steering.errors import RadsteerError

DOWNLOAD_HINT = (
    "download the SAE (for MAIRA-2: `huggingface-cli download microsoft/maira-2-sae --local-dir DIR`) "
    "and point the protocol's `features.sae.path` at its ae.pt"
)


def read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise RadsteerError(f"missing file {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RadsteerError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RadsteerError(f"{path} must hold a JSON object")
    return data


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise RadsteerError(f"SAE folder {path.parent} has no {path.name}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RadsteerError(
            f"cannot read {path}: it is corrupt or truncated ({exc}); download or build it again"
        ) from exc


def torch_load(path: Path) -> Any:
    """`torch.load(weights_only=True)`, with one-line errors and none of torch's advice to load
    unsafely: a pickle that needs code to rebuild is refused, never retried."""
    if not path.exists():
        raise RadsteerError(f"SAE file not found: {path}: {DOWNLOAD_HINT}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol and weights_only notices
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — pickle, zip and EOF errors each get one line
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported global" in text or "unsupported" in text.lower():
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" ({found.group(1)})" if found else ""
            raise RadsteerError(
                f"SAE file {path} contains pickled code objects{what} and was refused for safety: radsteer "
                f"reads only tensors; ask for a plain state dict or a safetensors copy"
            ) from None
        first = text.splitlines()[0] if text else "no details"
        raise RadsteerError(
            f"cannot read SAE file {path}: it is corrupt or truncated ({type(exc).__name__}: {first}); "
            f"download it again"
        ) from None


def check_finite(path: Path, tensors: dict[str, Any]) -> None:
    """NaN or inf weights steer to empty reports: refuse them at load time, naming the tensors."""
    bad = []
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            n = int((~torch.isfinite(value)).sum())
            if n:
                bad.append(f"{name} ({n} of {value.numel()})")
    if bad:
        raise RadsteerError(f"SAE file {path} holds non-finite weights (NaN or inf) in {', '.join(bad)}; "
                            f"refusing it: the file is corrupt or training diverged")


def check_shapes(path: Path, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor,
                 b_dec: torch.Tensor) -> None:
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
