"""Feature banks: the steering vectors (SAE decoder rows or concept vectors) and their encoder.

A small SAE class in the spirit of SAELens: weights in the SAELens orientation
(`W_enc` [d, n], `W_dec` [n, d]), an activation function, and the facts needed to steer with
it (layer, vector space, normalisation factor, descriptions, target concepts, provenance).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from steering.errors import RadsteerError

VectorSpace = Literal["residual", "sae_input"]
Activation = Literal["batchtopk", "topk", "abstopk", "groupmax", "jumprelu", "gated", "relu"]


@dataclass
class SAEEncoder:
    """Reads feature activations from residual-stream vectors, as the SAE's own library does.

    - `relu`: plain ReLU (dictionary_learning AutoEncoder, SAELens standard; a BatchTopK SAE
      whose global threshold was never set, as dictionary_learning encodes it);
    - `batchtopk`: ReLU, then the global `threshold` (dictionary_learning BatchTopKSAE and
      MatryoshkaBatchTopKSAE at inference, `use_threshold=True`);
    - `jumprelu`: ReLU, kept where the pre-activation exceeds its per-feature `threshold`;
    - `topk`: per-token top-k of the ReLU (SAELens topk, EleutherAI sparsify);
    - `abstopk`: per-token top-k by magnitude, sign kept (SAELens abstopk; with k = n it is the
      identity, which radsteer's concept-vector encoder uses);
    - `groupmax`: the maximum of each of k equal groups (sparsify `activation: groupmax`);
    - `gated`: Heaviside gate on `pre + b_gate`, magnitude `relu(pre·exp(r_mag) + b_mag)`
      (dictionary_learning GatedAutoEncoder, SAELens gated); `b_enc` is zero there.
    `input_scale` maps residual vectors into the SAE's input space (x / normalisation factor);
    `feature_scale` multiplies pre-activations before the activation (SAELens
    `rescale_acts_by_decoder_norm`: the decoder-row norms), and decoding divides by it again;
    `n_active` zeroes features past it (a Matryoshka SAE with fewer active groups).
    """

    W_enc: torch.Tensor  # [d, n]
    b_enc: torch.Tensor  # [n]
    b_dec: torch.Tensor  # [d]
    activation: Activation = "relu"
    threshold: torch.Tensor | None = None  # scalar (batchtopk) or [n] (jumprelu)
    k: int | None = None
    subtract_b_dec: bool = True
    input_scale: float = 1.0
    feature_scale: torch.Tensor | None = None  # [n]
    gate: dict[str, torch.Tensor] | None = None  # gated: b_gate, b_mag, r_mag
    n_active: int | None = None

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.W_enc.dtype) * self.input_scale
        if self.subtract_b_dec:
            x = x - self.b_dec
        pre = x @ self.W_enc + self.b_enc
        if self.feature_scale is not None:
            pre = pre * self.feature_scale
        return pre

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        acts = self._activate(self.pre_activations(x))
        if self.n_active is not None and self.n_active < acts.shape[-1]:
            acts[..., self.n_active:] = 0
        return acts

    def _activate(self, pre: torch.Tensor) -> torch.Tensor:
        if self.activation == "relu":
            return torch.relu(pre)
        if self.activation == "jumprelu":
            thr = self.threshold if self.threshold is not None else torch.zeros(())
            return torch.relu(pre) * (pre > thr)
        if self.activation == "batchtopk":
            acts = torch.relu(pre)
            if self.threshold is None:
                raise RadsteerError("a BatchTopK SAE needs its global `threshold` to encode at inference")
            return acts * (acts > self.threshold)
        if self.activation in ("topk", "abstopk"):
            k = min(int(self.k or pre.shape[-1]), pre.shape[-1])
            if self.activation == "abstopk":
                idx = pre.abs().topk(k, dim=-1).indices
                return torch.zeros_like(pre).scatter(-1, idx, pre.gather(-1, idx))
            acts = torch.relu(pre)
            top = acts.topk(k, dim=-1)
            return torch.zeros_like(acts).scatter(-1, top.indices, top.values)
        if self.activation == "groupmax":
            k = int(self.k or 1)
            acts = torch.relu(pre)
            values, idx = acts.unflatten(-1, (k, -1)).max(dim=-1)
            offsets = torch.arange(0, acts.shape[-1], acts.shape[-1] // k, device=acts.device)
            return torch.zeros_like(acts).scatter(-1, idx + offsets, values)
        if self.activation == "gated":
            if self.gate is None:
                raise RadsteerError("a gated SAE needs b_gate, b_mag and r_mag to encode")
            gate = (pre + self.gate["b_gate"] > 0).to(pre.dtype)
            return gate * torch.relu(pre * self.gate["r_mag"].exp() + self.gate["b_mag"])
        raise RadsteerError(f"unknown SAE activation {self.activation!r}")

    def to(self, device: torch.device | str) -> SAEEncoder:
        """Move every tensor of the encoder (in place) and return it."""
        for name in ("W_enc", "b_enc", "b_dec", "threshold", "feature_scale"):
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        if self.gate is not None:
            self.gate = {k: v.to(device) for k, v in self.gate.items()}
        return self


@dataclass
class FeatureBank:
    """Steering directions [n, d] with their ids, descriptions and provenance."""

    decoder: torch.Tensor  # [n, d], float32, CPU
    ids: list[str]
    source: Literal["sae", "concept"] = "sae"
    layer: int | None = None
    normalisation_factor: float | None = None  # SAE-input scale (22.34 for MAIRA-2's SAE)
    descriptions: dict[str, str] = field(default_factory=dict)
    target_concepts: dict[str, list[str]] = field(default_factory=dict)
    encoder: SAEEncoder | None = None
    b_dec: torch.Tensor | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.decoder.dim() != 2 or self.decoder.shape[0] != len(self.ids):
            raise RadsteerError(
                f"feature bank has {len(self.ids)} ids but a decoder of shape {tuple(self.decoder.shape)}"
            )
        self._index = {fid: i for i, fid in enumerate(self.ids)}

    @property
    def n_features(self) -> int:
        return int(self.decoder.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.decoder.shape[1])

    def index(self, feature_id: str | int) -> int:
        """Bank row of a feature; SAE features may be named 1599, "1599" or "f1599"."""
        key = str(feature_id)
        if key in self._index:
            return self._index[key]
        alt = f"f{key}" if not key.startswith("f") else key[1:]
        if alt in self._index:
            return self._index[alt]
        where = self.provenance.get("path", "the feature bank")
        raise RadsteerError(
            f"unknown feature id {feature_id!r} in {where} ({self.n_features} features: "
            f"{', '.join(self.ids[:5])}{', …' if self.n_features > 5 else ''})"
        )

    def canonical_id(self, feature_id: str | int) -> str:
        return self.ids[self.index(feature_id)]

    def vectors(
        self, feature_ids: Sequence[str | int], *, space: VectorSpace = "residual", unit_norm: bool = False
    ) -> torch.Tensor:
        """Steering vectors [len(ids), d] in the requested space.

        `residual`: the decoder rows as stored. `sae_input`: multiplied by the normalisation
        factor, for SAEs trained on normalised activations whose factor was not folded in.
        `unit_norm` rescales each vector to length 1 (then α is a length in that space).
        """
        rows = self.decoder[[self.index(f) for f in feature_ids]].clone()
        if space == "sae_input":
            if self.normalisation_factor is None:
                raise RadsteerError(
                    "vector space 'sae_input' needs the SAE's activation normalisation factor "
                    "(set `normalisation_factor` in the protocol, e.g. 22.34 for MAIRA-2's SAE)"
                )
            rows = rows * float(self.normalisation_factor)
        elif space != "residual":
            raise RadsteerError(f"unknown vector space {space!r}: use 'residual' or 'sae_input'")
        if unit_norm:
            rows = rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return rows

    def norms(self) -> torch.Tensor:
        return self.decoder.norm(dim=-1)

    def check_width(self, hidden_size: int, model_name: str = "the model") -> None:
        """Fail clearly when the bank cannot steer this model."""
        if self.d_model != hidden_size:
            where = self.provenance.get("path", "the feature bank")
            raise RadsteerError(
                f"SAE width does not match the model: {where} has d_in={self.d_model} but "
                f"{model_name} has hidden size {hidden_size}"
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            raise RadsteerError(f"the {self.source} bank at {self.provenance.get('path', '?')} has no encoder")
        return self.encoder.encode(x)

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """Reconstruction in the SAE's input space: acts @ W_dec + b_dec."""
        acts = acts.to(self.decoder.dtype)
        if self.encoder is not None and self.encoder.feature_scale is not None:
            acts = acts / self.encoder.feature_scale.to(acts.device)
        out = acts @ self.decoder
        return out + self.b_dec if self.b_dec is not None else out
