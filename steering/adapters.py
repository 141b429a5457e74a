"""Model adapters: what the steering engine needs to know about a model, and nothing more.

An adapter turns a case (a dict of report inputs) into prompt token ids, computes any
expensive per-case inputs once (MAIRA-2: projected image features, reused by every steered row
of the case), embeds a padded batch, and decodes generated tokens. The engine does the rest
(padding, hooks, `generate`), identically for every model family.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from steering.errors import RadsteerError
from steering.hooks import find_decoder_layers

# Section order and labels of the text-only reporting prompt (MAIRA-2's sections, minus images).
TEXT_SECTIONS = (
    ("indication", "Indication"),
    ("technique", "Technique"),
    ("comparison", "Comparison"),
    ("prior_report", "Prior report"),
)
REPORT_INSTRUCTION = "Write the findings section of the chest X-ray report for this study."


def build_text_prompt(case: Mapping[str, Any]) -> str:
    """The reporting request for a text-only model; a case's own `prompt` wins if given."""
    if case.get("prompt"):
        return str(case["prompt"])
    lines = [REPORT_INSTRUCTION]
    for key, label in TEXT_SECTIONS:
        value = case.get(key)
        lines.append(f"{label}: {value if value else 'N/A'}")
    return "\n".join(lines)


class ModelAdapter:
    """Base adapter over a Hugging Face model with a decoder stack.

    Subclasses override `prompt_ids`, and for multimodal models `case_extras` and `embed`.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, *, name: str, path: str | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.path = path
        self.layers, self.layers_path = find_decoder_layers(model)

    # -- model facts ------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        cfg = self.model.config
        text_cfg = getattr(cfg, "text_config", None) or cfg
        return int(text_cfg.hidden_size)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def default_layer(self) -> int:
        """Where to steer when nobody says: the middle of the decoder stack."""
        return self.num_layers // 2

    @property
    def default_max_new_tokens(self) -> int:
        return 64

    def layer(self, index: int) -> nn.Module:
        if not -self.num_layers <= index < self.num_layers:
            raise RadsteerError(
                f"layer {index} does not exist in {self.name}: it has {self.num_layers} decoder layers "
                f"(0–{self.num_layers - 1})"
            )
        return self.layers[index]

    def layer_module_path(self, index: int) -> str:
        return f"{self.layers_path}.{index % self.num_layers}"

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        if tok.pad_token_id is not None:
            return int(tok.pad_token_id)
        return int(self.eos_token_ids[0])

    @property
    def eos_token_ids(self) -> list[int]:
        gen_cfg = getattr(self.model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None) if gen_cfg is not None else None
        if eos is None:
            eos = self.tokenizer.eos_token_id
        if eos is None:
            return []
        return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]

    def special_token_ids(self) -> set[int]:
        return {int(i) for i in getattr(self.tokenizer, "all_special_ids", [])}

    def image_token_ids(self) -> set[int]:
        return set()

    def excluded_token_ids(self, kinds: Sequence[str]) -> set[int]:
        """Token ids the position policy leaves unsteered: "special" and/or "image"."""
        out: set[int] = set()
        for kind in kinds:
            if kind == "special":
                out |= self.special_token_ids()
            elif kind == "image":
                out |= self.image_token_ids()
            else:
                raise RadsteerError(f"unknown token exclusion {kind!r}: use 'special' and/or 'image'")
        return out

    # -- per case ---------------------------------------------------------------------------
    def prompt_ids(self, case: Mapping[str, Any]) -> list[int]:
        raise NotImplementedError

    def case_extras(self, case: Mapping[str, Any]) -> dict[str, Any]:
        """Expensive per-case inputs, computed once per case and reused by all of its rows."""
        return {}

    def embed(self, input_ids: torch.Tensor, extras: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """Input embeddings [B, T, d] for a left-padded batch (`extras[b]` belongs to row b)."""
        return self.model.get_input_embeddings()(input_ids)

    def raw_text(self, token_ids: Sequence[int]) -> str:
        """Generated tokens as text, untouched (stop sequences are searched in this)."""
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def clean_text(self, text: str) -> str:
        """What a report's stored text is made of its raw text (here: trimmed)."""
        return text.strip()

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.clean_text(self.raw_text(token_ids))

    @property
    def grounds_reports(self) -> bool:
        """Whether this adapter's reports carry image boxes (`grounding`); the engine stores them."""
        return False

    def grounding(self, raw_text: str) -> list[dict[str, Any]] | None:
        """A report's phrases with their boxes (`[{"text", "boxes": [[x0, y0, x1, y1], …]}]`,
        normalised to the frontal image) from its raw text; None when the adapter does not ground."""
        return None


class HFCausalLMAdapter(ModelAdapter):
    """Any Hugging Face causal LM from a local directory; text-only cases.

    `prompt_style` "auto" uses the tokenizer's chat template when it has one, so instruction-tuned
    models see the request the way they were trained to; "chat" insists on it, "completion" sends
    the plain sections, "few_shot" the example studies of `steering.few_shot` ending in `FINDINGS:`.
    """

    prompt_style: str = "auto"

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, dtype: str = "auto", device: str = "auto", name: str | None = None,
        prompt: str = "auto",
    ) -> HFCausalLMAdapter:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").exists():
            raise RadsteerError(
                f"no Hugging Face model at {path} (config.json missing): download the model's files "
                f"(config.json, tokenizer files, *.safetensors) into that directory, e.g. with "
                f"`huggingface-cli download <repo> --local-dir {path}`"
            )
        device = resolve_device(device)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, device))
        tokenizer = AutoTokenizer.from_pretrained(path)
        adapter = cls(model.to(device), tokenizer, name=name or path.name, path=str(path))
        adapter.prompt_style = prompt
        return adapter

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def prompt_ids(self, case: Mapping[str, Any]) -> list[int]:
        style = self.prompt_style
        if style not in ("auto", "chat", "completion", "few_shot"):
            raise RadsteerError(f"unknown prompt style {style!r}: use auto, chat, completion or few_shot")
        if style == "few_shot" and not case.get("prompt"):
            from steering.few_shot import few_shot_prompt

            return [int(i) for i in self.tokenizer(few_shot_prompt(case))["input_ids"]]
        text = build_text_prompt(case)
        if style == "chat" and not self.has_chat_template:
            raise RadsteerError(f"{self.name} has no chat template: use prompt: completion or few_shot")
        if self.has_chat_template and style in ("auto", "chat"):
            ids = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
            )
            if isinstance(ids, Mapping):  # some tokenizers return a BatchEncoding
                ids = ids["input_ids"]
            return [int(i) for i in ids]
        return [int(i) for i in self.tokenizer(text)["input_ids"]]


def pad_batch(
    seqs: Sequence[Sequence[int]], pad_id: int, *, side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id rows padded to one width: (input_ids, attention_mask), both [B, T] long.

    Left padding for generation (every row continues at the end), right padding for reading
    activations (each row's positions start at 0)."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', not {side!r}")
    width = max(1, max((len(s) for s in seqs), default=0))
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, row in enumerate(seqs):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        input_ids[i, span] = torch.tensor(list(row), dtype=torch.long)
        attention_mask[i, span] = 1
    return input_ids, attention_mask


def available_devices() -> list[str]:
    """The devices this machine has, as torch names them."""
    out = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def resolve_device(device: str) -> str:
    """`auto` → the first GPU, else the CPU; any other name must exist on this machine (a
    missing `cuda:7` is one line naming the devices that do, not a traceback at load time)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise RadsteerError(f"{device!r} is not a device name; this machine has {', '.join(available_devices())}"
                            ) from None
    if dev.type == "cpu":
        return device
    n_cuda = torch.cuda.device_count()
    ok = (dev.type == "cuda" and n_cuda > 0 and (dev.index is None or dev.index < n_cuda)) or (
        dev.type != "cuda" and str(dev.type) in available_devices())
    if not ok:
        raise RadsteerError(f"device {device!r} does not exist on this machine; it has "
                            f"{', '.join(available_devices())}")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """`auto`: bf16 on a GPU and on CPUs with native bf16 matrix math (`steering.cpu`), else fp32."""
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16
        from steering.cpu import cpu_bf16_supported

        return torch.bfloat16 if device == "cpu" and cpu_bf16_supported() else torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError:
        raise RadsteerError(f"unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16") from None
