"""Load a local `microsoft/maira-2` snapshot onto radsteer's native MAIRA-2 modules.

The official checkpoint keeps the 4.51-era LLaVA layout (`language_model.model.*`,
`language_model.lm_head.*`, `vision_tower.*`, `multi_modal_projector.layers.*`). We build the
model with empty (meta) parameters, check that the checkpoint's key set maps one-to-one onto the
model's parameters *before* reading any tensor, then read the shards lazily one tensor at a time
(`safe_open`), casting each to the requested dtype and device as it arrives, so peak memory stays
near the size of the model in that dtype. Every key is accounted for: a missing or unexpected key
is an error that names it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from steering.adapters import resolve_device, resolve_dtype
from steering.errors import RadsteerError
from steering.maira2.config import Maira2Config, load_config
from steering.maira2.modeling import Maira2ForConditionalGeneration

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

# Official key prefix → radsteer module prefix (transformers ≥ 4.52 LLaVA layout). Order matters:
# `language_model.model.` must be tried before any shorter `language_model.` prefix.
KEY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
    ("vision_tower.", "model.vision_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
)

DOWNLOAD_HINT = (
    "microsoft/maira-2 is gated on Hugging Face: accept its licence at https://huggingface.co/microsoft/maira-2, "
    "log in (`huggingface-cli login`), then run `huggingface-cli download microsoft/maira-2 --local-dir {path}` "
    "and pass that directory"
)


def missing_snapshot_error(path: Path, what: str) -> RadsteerError:
    return RadsteerError(f"no MAIRA-2 snapshot at {path} ({what}). " + DOWNLOAD_HINT.format(path=path))


def official_to_module_key(key: str) -> str | None:
    """The radsteer parameter name for an official checkpoint key (None: not an official key)."""
    for src, dst in KEY_PREFIXES:
        if key.startswith(src):
            return dst + key[len(src) :]
    return None


def checkpoint_files(snapshot: Path) -> dict[str, Path]:
    """Official key → the safetensors file holding it (sharded index, or one file)."""
    index = snapshot / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise RadsteerError(f"{index} is not a safetensors index (needs a 'weight_map' object): {exc}") from None
        files = {key: snapshot / name for key, name in weight_map.items()}
        for shard in sorted(set(files.values())):
            if not shard.is_file():
                raise RadsteerError(
                    f"shard {shard.name} listed in {index} is missing from {snapshot}: the download is incomplete; "
                    f"run `huggingface-cli download microsoft/maira-2 --local-dir {snapshot}` again"
                )
        return files
    single = snapshot / SINGLE_FILE
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as f:
            return {key: single for key in f.keys()}
    raise missing_snapshot_error(snapshot, f"neither {INDEX_FILE} nor {SINGLE_FILE} found")


def _describe(keys: Iterable[str], limit: int = 5) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")


def check_keys(checkpoint_keys: Iterable[str], model: nn.Module) -> dict[str, str]:
    """Official key → parameter name, or a RadsteerError naming missing/unexpected keys."""
    params = {name for name, _ in model.named_parameters()}
    mapping: dict[str, str] = {}
    unexpected: list[str] = []
    for key in checkpoint_keys:
        target = official_to_module_key(key)
        if target is None or target not in params:
            unexpected.append(key)
        else:
            mapping[key] = target
    if unexpected:
        raise RadsteerError(
            f"unexpected key(s) in the MAIRA-2 checkpoint: {_describe(unexpected)} — the snapshot does not match "
            "its config.json (is it microsoft/maira-2?)"
        )
    inverse = {dst: src for src, dst in KEY_PREFIXES}
    missing = sorted(params - set(mapping.values()))
    if missing:
        def official(name: str) -> str:
            for dst, src in inverse.items():
                if name.startswith(dst):
                    return src + name[len(dst) :]
            return name

        raise RadsteerError(
            f"missing key(s) in the MAIRA-2 checkpoint: {_describe(official(m) for m in missing)} — "
            "the snapshot is incomplete or does not match its config.json"
        )
    return mapping


def _set_parameter(model: nn.Module, name: str, value: torch.Tensor) -> None:
    module_path, _, attr = name.rpartition(".")
    module = model.get_submodule(module_path)
    module._parameters[attr] = nn.Parameter(value, requires_grad=False)


def build_empty_model(config: Maira2Config) -> Maira2ForConditionalGeneration:
    """The model with parameters on the meta device (no memory, no random init); buffers are real."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return Maira2ForConditionalGeneration(config)


def load_weights(
    model: nn.Module, snapshot: Path, *, dtype: torch.dtype, device: str | torch.device
) -> dict[str, int]:
    """Fill every parameter of `model` from the snapshot's shards; returns counts for the manifest."""
    from safetensors import safe_open

    files = checkpoint_files(snapshot)
    mapping = check_keys(files.keys(), model)
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
    by_shard: dict[Path, list[str]] = {}
    for key, shard in files.items():
        by_shard.setdefault(shard, []).append(key)
    for shard in sorted(by_shard):
        with safe_open(str(shard), framework="pt", device="cpu") as f:
            present = set(f.keys())
            for key in sorted(by_shard[shard]):
                if key not in present:
                    raise RadsteerError(f"key {key} is listed in {INDEX_FILE} but not stored in {shard.name}")
                tensor = f.get_tensor(key)
                target = mapping[key]
                if tuple(tensor.shape) != expected[target]:
                    raise RadsteerError(
                        f"key {key} in {shard.name} has shape {tuple(tensor.shape)}, but config.json implies "
                        f"{expected[target]}"
                    )
                _set_parameter(model, target, tensor.to(device=device, dtype=dtype))
    for module in model.modules():  # non-persistent buffers (rotary frequencies) keep their fp32 values
        for bname, buf in list(module._buffers.items()):
            if buf is not None:
                module._buffers[bname] = buf.to(device)
    return {"tensors": len(mapping), "shards": len(by_shard)}


def load_tokenizer(snapshot: Path):
    """The snapshot's Llama tokenizer (tokenizer.json; tokenizer.model needs `sentencepiece`)."""
    from transformers import LlamaTokenizerFast

    if not (snapshot / "tokenizer.json").is_file() and not (snapshot / "tokenizer.model").is_file():
        raise missing_snapshot_error(snapshot, "no tokenizer.json or tokenizer.model")
    try:
        return LlamaTokenizerFast.from_pretrained(str(snapshot))
    except (ImportError, ValueError) as exc:
        raise RadsteerError(
            f"cannot load the tokenizer in {snapshot}: {exc}. Without tokenizer.json the Llama tokenizer is "
            "converted from tokenizer.model, which needs `pip install sentencepiece protobuf`"
        ) from None


def load_generation_config(snapshot: Path, config: Maira2Config):
    from transformers import GenerationConfig

    if (snapshot / "generation_config.json").is_file():
        return GenerationConfig.from_pretrained(str(snapshot))
    return GenerationConfig.from_model_config(config)


def load_model(
    snapshot: str | Path, *, dtype: str = "auto", device: str = "auto"
) -> tuple[Maira2ForConditionalGeneration, dict[str, object]]:
    """Model (eval mode, no gradients) + load facts, from a local snapshot directory."""
    snapshot = Path(snapshot)
    if not snapshot.is_dir():
        raise missing_snapshot_error(snapshot, "directory does not exist")
    if not (snapshot / "config.json").is_file():
        raise missing_snapshot_error(snapshot, "config.json missing")
    config = load_config(snapshot)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    model = build_empty_model(config)
    facts = load_weights(model, snapshot, dtype=torch_dtype, device=device)
    model.generation_config = load_generation_config(snapshot, config)
    model.eval()
    return model, {**facts, "dtype": str(torch_dtype).removeprefix("torch."), "device": device}
