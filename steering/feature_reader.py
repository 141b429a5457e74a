"""Reading feature activations off the steering layer of an unsteered model.

Two jobs shared by `radsteer mine` and `radsteer activations`:

- `LayerReader` runs a right-padded batch through the model and returns the output of
  `layers[L]` (the point `SteeringHook` steers, i.e. `hidden_states[L + 1]`). It stops the
  forward pass right after that layer: later layers and the LM head cannot change it, and
  skipping them makes reading several times cheaper than a full forward.
- `FeatureReader` turns those hidden states into feature activations: the SAE encoder when
  the bank has one, or — for concept vectors, which have none — the projection onto the
  unit-normalised concept directions (a signed length along each direction).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from steering.adapters import ModelAdapter
from steering.errors import RadsteerError
from steering.feature_bank import FeatureBank


class _Stop(Exception):
    """Raised by the capture hook to end a forward pass once the steering layer has run."""


class LayerReader:
    """Output of decoder layer L for padded batches, through the unsteered model."""

    def __init__(self, adapter: ModelAdapter, layer: int) -> None:
        self.adapter = adapter
        self.layer = layer
        self.module: nn.Module = adapter.layer(layer)

    @torch.inference_mode()
    def hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        extras: Sequence[Mapping[str, Any]] | None = None,
    ) -> torch.Tensor:
        """[B, T, d] float32 hidden states at the output of `layers[L]` (on the model's device)."""
        captured: list[torch.Tensor] = []

        def hook(_m: nn.Module, _args: tuple, output: object) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            captured.append(hidden)
            raise _Stop

        device = self.adapter.device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        embeds = self.adapter.embed(input_ids, list(extras) if extras is not None else [{} for _ in input_ids])
        handle = self.module.register_forward_hook(hook)
        try:
            self.adapter.model(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False)
        except _Stop:
            pass
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RadsteerError(
                f"layer {self.layer} of {self.adapter.name} did not run in a forward pass "
                f"({len(captured)} calls); check the protocol's `layer`"
            )
        return captured[0].float()


class FeatureReader:
    """Feature activations [N, F] of hidden states [N, d] for the chosen bank rows."""

    def __init__(self, bank: FeatureBank, feature_index: Sequence[int] | None = None) -> None:
        self.bank = bank
        self.index = list(range(bank.n_features)) if feature_index is None else [int(i) for i in feature_index]
        self._idx = torch.tensor(self.index, dtype=torch.long)
        self._all = self.index == list(range(bank.n_features))
        self.kind = "sae_encoder" if bank.encoder is not None else "projection"
        if bank.encoder is None:
            rows = bank.decoder[self._idx].float()
            self._directions = (rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)).T.contiguous()  # [d, F]

    @property
    def n_features(self) -> int:
        return len(self.index)

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.float()
        if self.bank.encoder is not None:
            enc = self.bank.encoder
            if enc.W_enc.device != hidden.device:
                hidden = hidden.to(enc.W_enc.device)
            acts = enc.encode(hidden)  # top-k style encoders need every feature to encode
            return acts if self._all else acts[..., self._idx.to(acts.device)]
        if self._directions.device != hidden.device:
            self._directions = self._directions.to(hidden.device)
        return hidden @ self._directions

    def to(self, device: torch.device | str) -> FeatureReader:
        """Move the encoder (or the directions) next to the model, once."""
        enc = self.bank.encoder
        if enc is not None:
            enc.to(device)
        else:
            self._directions = self._directions.to(device)
        return self
