"""A tiny on-disk study: a random Llama model directory, a dictionary_learning SAE, cases, protocol."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from tests.tiny_models import WORDS, make_tiny_llama


def write_tiny_study(
    root: Path,
    *,
    n_cases: int = 4,
    features: tuple[str, ...] = ("f0", "f2"),
    alphas: tuple[float, ...] = (-1.0, 1.0),
    max_new_tokens: int = 8,
    batch_size: int = 4,
    name: str = "tiny",
    d_sae: int = 6,
    sections: dict | None = None,
) -> Path:
    """`sections`: further top-level protocol sections (evaluation, execution, ...)."""
    model_dir = root / "model"
    if not model_dir.exists():
        make_tiny_llama(model_dir, seed=5)
    g = torch.Generator().manual_seed(1)
    d = 32
    torch.save({"W_enc": torch.randn(d, d_sae, generator=g), "b_enc": torch.zeros(d_sae),
                "W_dec": torch.randn(d_sae, d, generator=g), "b_dec": torch.zeros(d),
                "threshold": torch.tensor(0.1), "k": torch.tensor(2), "group_sizes": torch.tensor([d_sae])},
               root / "ae.pt")
    with open(root / "cases.jsonl", "w") as fh:
        for i in range(n_cases):
            words = " ".join(WORDS[(i * 3) % 40 : (i * 3) % 40 + 3 + i % 5])
            fh.write(json.dumps({"case_id": f"case{i:03d}", "prompt": words}) + "\n")
    protocol = {
        "name": name,
        "model": {"kind": "hf_causal_lm", "path": "model", "dtype": "float32", "device": "cpu"},
        "features": {"source": "sae", "path": "ae.pt",
                     "items": [{"id": f, "description": f"feature {f}", "targets": ["pleural_effusion"]}
                               for f in features]},
        "layer": 1,
        "alphas": list(alphas),
        "generation": {"max_new_tokens": max_new_tokens, "batch_size": batch_size},
        "cases": {"path": "cases.jsonl"},
        **(sections or {}),
    }
    path = root / "protocol.yaml"
    path.write_text(yaml.safe_dump(protocol, sort_keys=False))
    return path


def lexicon_and_judge(base_url: str) -> dict:
    """A protocol's `evaluation:` section: the lexicon extractor and a judge at `base_url` (no key)."""
    return {"extractor": "lexicon", "judge": {"model": "fake-judge", "base_url": base_url, "api_key_env": None}}
