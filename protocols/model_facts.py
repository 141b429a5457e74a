"""A model's hidden size and layer count from its configuration alone — never its weights.

`radsteer validate` uses these to check a protocol's layer and SAE width in a second, even for a
7B model: config.json for a Hugging Face snapshot (text_config first, for LLaVA-style models such
as MAIRA-2), the converted cache's config.json or else the GGUF header for the demo model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steering.errors import RadsteerError


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    num_layers: int
    source: str  # the file the facts were read from


def _first(cfg: dict[str, Any], *keys: str) -> int | None:
    for k in keys:
        if isinstance(cfg.get(k), int):
            return int(cfg[k])
    return None


def shape_from_config(path: Path) -> ModelShape:
    file = path / "config.json" if path.is_dir() else path
    if not file.exists():
        raise RadsteerError(
            f"no model at {path} (config.json missing): download the model's files into that directory, "
            f"e.g. `huggingface-cli download <repo> --local-dir {path}`"
        )
    try:
        raw = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RadsteerError(f"cannot read {file}: {exc}") from None
    if not isinstance(raw, dict):
        raise RadsteerError(f"{file} must hold a JSON object")
    cfg = raw.get("text_config") if isinstance(raw.get("text_config"), dict) else raw
    hidden = _first(cfg, "hidden_size", "n_embd", "d_model")
    layers = _first(cfg, "num_hidden_layers", "n_layer", "num_layers")
    if hidden is None or layers is None:
        raise RadsteerError(f"{file} names no hidden_size / num_hidden_layers: is it a decoder model's config?")
    return ModelShape(hidden, layers, str(file))


def demo_shape() -> ModelShape:
    from steering.demo_model import cache_dir, gguf_path

    converted = cache_dir() / "smollm2-135m-instruct" / "config.json"
    if converted.exists():
        return shape_from_config(converted)
    from gguf import GGUFReader

    src = gguf_path()
    fields = GGUFReader(src).fields

    def value(key: str) -> int:
        f = fields[key]
        return int(f.parts[f.data[0]][0])

    return ModelShape(value("llama.embedding_length"), value("llama.block_count"), str(src))


def model_shape(kind: str, path: Path | None) -> ModelShape:
    if kind == "demo":
        return demo_shape()
    if path is None:
        raise RadsteerError(f"model kind {kind} needs a path")
    return shape_from_config(path)
