"""Model adapters by protocol kind: `demo`, `hf_causal_lm`, `maira2`."""

from __future__ import annotations

from steering.adapters import HFCausalLMAdapter, ModelAdapter
from steering.errors import RadsteerError

MODEL_KINDS = ("demo", "hf_causal_lm", "maira2")


def load_adapter(kind: str, path: str | None = None, *, dtype: str = "auto", device: str = "auto",
                 prompt: str = "auto", image_features: str = "feature_maps", grounded: bool = False) -> ModelAdapter:
    from steering.adapters import resolve_device

    resolve_device(device)  # a device this machine lacks: one line before anything loads
    if kind == "demo":
        from steering.demo_model import load_demo_adapter

        return load_demo_adapter(device="cpu" if device == "auto" else device, dtype=dtype, prompt=prompt)
    if kind == "hf_causal_lm":
        if not path:
            raise RadsteerError("model kind hf_causal_lm needs a path to a local model directory")
        return HFCausalLMAdapter.from_pretrained(path, dtype=dtype, device=device, prompt=prompt)
    if kind == "maira2":
        if not path:
            raise RadsteerError("model kind maira2 needs the path of a local microsoft/maira-2 snapshot")
        from steering.maira2.adapter import Maira2Adapter

        return Maira2Adapter.from_pretrained(path, dtype=dtype, device=device, image_features=image_features,
                                             grounded=grounded)
    raise RadsteerError(f"unknown model kind {kind!r}: use one of {', '.join(MODEL_KINDS)}")
