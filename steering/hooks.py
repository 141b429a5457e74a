"""The steering hook: h ← h + α·v at the output of one decoder layer, per row of a batch.

Semantics (docs/design.md, "Steering semantics"):
- *where*: the output of `layers[L]`, i.e. `hidden_states[L + 1]`;
- *what*: each batch row b adds `coefficients[b] * vectors[b]` (so one `generate` call can carry
  many features and α values, the baseline being a row with α = 0);
- *which positions*: `all`, `prompt` or `generated`, minus padding and minus any excluded token
  ids (special tokens, image tokens).

Under the KV cache every decode step is a length-1 forward. The hook therefore locates each
call's positions from the `cache_position` keyword that transformers passes to decoder layers
(falling back to counting positions itself), so a decode step is recognised as "generated"
and steered, however the call is sliced.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

PositionPolicy = Literal["all", "prompt", "generated"]
POSITION_POLICIES: tuple[str, ...] = ("all", "prompt", "generated")

# Where decoder layers live, by model family. LLaVA-style models of recent transformers keep the
# language model at `model.language_model`; older ones at `language_model.model`.
_LAYER_PATHS = (
    "model.language_model.layers",
    "language_model.model.layers",
    "model.layers",
    "transformer.h",
    "gpt_neox.layers",
    "model.decoder.layers",
)


def find_decoder_layers(model: nn.Module) -> tuple[nn.ModuleList, str]:
    """The model's decoder layers and their module path (recorded in the manifest)."""
    for path in _LAYER_PATHS:
        obj: object = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj, path
    raise ValueError(
        f"cannot find the decoder layers of {type(model).__name__}; looked for: {', '.join(_LAYER_PATHS)}"
    )


def prompt_steer_mask(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    policy: PositionPolicy,
    exclude_ids: Iterable[int] = (),
) -> torch.Tensor:
    """Which prompt positions [B, T] are steered: never padding, never excluded token ids."""
    if policy not in POSITION_POLICIES:
        raise ValueError(f"position policy must be one of {POSITION_POLICIES}, not {policy!r}")
    mask = attention_mask.bool().clone()
    if policy == "generated":
        return torch.zeros_like(mask)
    ex = list(exclude_ids)
    if ex:
        mask &= ~torch.isin(input_ids, torch.tensor(ex, device=input_ids.device))
    return mask


class SteeringHook:
    """Context manager that steers one decoder layer and always removes itself on exit.

    Args:
        layer: the decoder layer whose output is steered.
        vectors: [B, d] one steering vector per batch row.
        coefficients: [B] α per row (0 leaves the row untouched).
        prompt_mask: [B, T] prompt positions to steer (see `prompt_steer_mask`); None means
            every prompt position when the policy includes the prompt.
        policy: "all", "prompt" or "generated".
        embedding: the input-embedding module; when given, decode-step token ids are read from it
            so that excluded ids among generated tokens are not steered either.
        exclude_ids: token ids never steered (applies to generated tokens; prompt exclusions are
            already in `prompt_mask`).

    Attributes `calls` and `steered_positions` count what the hook did (tests read them).
    """

    def __init__(
        self,
        layer: nn.Module,
        vectors: torch.Tensor,
        coefficients: torch.Tensor,
        *,
        prompt_mask: torch.Tensor | None = None,
        policy: PositionPolicy = "all",
        embedding: nn.Module | None = None,
        exclude_ids: Iterable[int] = (),
    ) -> None:
        if policy not in POSITION_POLICIES:
            raise ValueError(f"position policy must be one of {POSITION_POLICIES}, not {policy!r}")
        if vectors.dim() != 2 or coefficients.dim() != 1 or vectors.shape[0] != coefficients.shape[0]:
            raise ValueError(
                f"vectors must be [B, d] and coefficients [B]; got {tuple(vectors.shape)} and "
                f"{tuple(coefficients.shape)}"
            )
        self.layer = layer
        self.policy = policy
        self.embedding = embedding
        self.exclude_ids = sorted(set(exclude_ids))
        # α·v per row, computed once: the per-call work is one masked add.
        self._delta = (coefficients.to(vectors.dtype)[:, None] * vectors)[:, None, :]  # [B, 1, d]
        self._prompt_mask = prompt_mask
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._last_ids: torch.Tensor | None = None
        self._seen = 0
        self.calls = 0
        self.steered_positions = 0

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> SteeringHook:
        self._handles.append(self.layer.register_forward_hook(self._hook, with_kwargs=True))
        if self.embedding is not None and self.exclude_ids:
            self._handles.append(self.embedding.register_forward_pre_hook(self._capture_ids))
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # -- hooks ------------------------------------------------------------------------------
    def _capture_ids(self, _module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], torch.Tensor):
            self._last_ids = args[0]

    def _start(self, length: int, kwargs: dict) -> int:
        """Absolute position of this call's first token."""
        cache_position = kwargs.get("cache_position")
        if isinstance(cache_position, torch.Tensor) and cache_position.numel() == length:
            start = int(cache_position[0])
        else:  # no cache_position: with a KV cache, calls cover consecutive positions
            start = self._seen if length == 1 or self._seen == 0 else 0
        self._seen = start + length
        return start

    def _delta_like(self, hidden: torch.Tensor) -> torch.Tensor:
        if self._delta.device != hidden.device or self._delta.dtype != hidden.dtype:
            self._delta = self._delta.to(device=hidden.device, dtype=hidden.dtype)  # once, not per step
        if self._delta.shape[0] != hidden.shape[0]:
            raise RuntimeError(f"steering bank has {self._delta.shape[0]} rows but the batch has {hidden.shape[0]}")
        return self._delta

    def _generated_mask(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """Mask of generated positions carrying excluded ids, or None when none can be excluded."""
        ids = self._last_ids
        if not self.exclude_ids or ids is None or ids.shape[-1] != hidden.shape[1]:
            return None
        return ~torch.isin(ids, torch.tensor(self.exclude_ids, device=ids.device)).to(hidden.device)

    def _hook(self, _module: nn.Module, _args: tuple, kwargs: dict, output: object) -> object:
        hidden = output[0] if isinstance(output, tuple) else output
        assert isinstance(hidden, torch.Tensor)
        self.calls += 1
        bsz, length = hidden.shape[0], hidden.shape[1]
        start = self._start(length, kwargs)
        if self._prompt_mask is not None:
            t_prompt = self._prompt_mask.shape[1]
        else:  # no prompt mask: the first call is the prompt
            t_prompt = length if self.calls == 1 else 0
        delta = self._delta_like(hidden)

        if start >= t_prompt:  # decode step(s) under the KV cache: the fast path
            if self.policy == "prompt":
                return output
            keep = self._generated_mask(hidden)
            if keep is None:
                self.steered_positions += bsz * length
                steered = hidden + delta
            else:
                self.steered_positions += int(keep.sum())
                steered = hidden + delta * keep[..., None].to(hidden.dtype)
        else:  # the prompt pass (or a full recompute without cache): positions may be mixed
            pos = torch.arange(start, start + length)
            in_prompt = pos < t_prompt
            mask = torch.zeros(bsz, length, dtype=torch.bool, device=hidden.device)
            if self.policy in ("all", "prompt"):
                idx = pos[in_prompt]
                sel = in_prompt.to(hidden.device)
                mask[:, sel] = self._prompt_mask[:, idx].to(hidden.device) if self._prompt_mask is not None else True
            gen = ~in_prompt
            if gen.any() and self.policy in ("all", "generated"):
                sel = gen.to(hidden.device)
                keep = self._generated_mask(hidden)
                mask[:, sel] = True if keep is None else keep[:, sel]
            n = int(mask.sum())
            if n == 0:
                return output
            self.steered_positions += n
            steered = hidden + delta * mask[..., None].to(hidden.dtype)
        if isinstance(output, tuple):
            return (steered, *output[1:])
        return steered
