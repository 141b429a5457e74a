"""Concept vectors: steering directions from contrasting example sentences (difference of means).

For a model without an SAE (the bundled demo model, any Hugging Face decoder) radsteer builds one
vector per concept from sentences that assert it ("There is a small left pleural effusion.") and
sentences that do not ("No pleural effusion.", "The lungs are clear."):

    v = mean_s∈pos( mean_t h_L(s)_t ) − mean_s∈neg( mean_t h_L(s)_t )

where h_L is the output of decoder layer L — the very point `SteeringHook` steers — each sentence is
averaged over its own tokens (padding masked out; its first token left out, because position 0
is an attention sink whose hidden state is an outlier that would otherwise dominate every
difference), then sentences are averaged.

Scale (`scale="median_norm"`, the default): v is unit-normalised and multiplied by the median
per-token residual norm at layer L over all example tokens, leaving out each sentence's first token
(position 0 is an attention sink whose norm is an outlier in most decoders). So α is measured in
"typical residual norms": α = 1 adds a vector as long as an ordinary token's hidden state, α = 0.25
a quarter of one, and the same α grid means the same thing for every concept and layer.
`scale="raw"` keeps the plain difference of means (its length differs between concepts).

The result is a `FeatureBank` (source "concept") that `save_saelens` writes in the SAELens layout
with the ids, descriptions, target concepts, layer and provenance (model, scale, sentence hashes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from steering.adapters import ModelAdapter, pad_batch
from steering.errors import RadsteerError
from steering.feature_bank import FeatureBank
from steering.feature_reader import LayerReader
from steering.store import stable_hash

ConceptScale = Literal["median_norm", "raw"]
METHOD = "difference_of_means"


@dataclass(frozen=True)
class Concept:
    """One concept's examples; `targets` are the lexicon concepts an on-target change must touch."""

    id: str
    positive: Sequence[str]
    negative: Sequence[str]
    description: str = ""
    targets: Sequence[str] = field(default_factory=tuple)


def sentence_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def concepts_fingerprint(concepts: Sequence[Concept], *, layer: int, scale: str) -> str:
    """What decides the vectors besides the model (recorded separately as `model`); stored in
    the provenance so that vectors built from other sentences, layer or scale are recognised."""
    return stable_hash({
        "method": METHOD, "layer": int(layer), "scale": scale,
        "concepts": [{"id": c.id, "positive": [sentence_hash(s) for s in c.positive],
                      "negative": [sentence_hash(s) for s in c.negative]} for c in concepts],
    })[:16]


@torch.inference_mode()
def sentence_activations(
    adapter: ModelAdapter, sentences: Sequence[str], layer: int, *, batch_size: int = 16
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Per sentence: the mean of layer L's output over its tokens except the first [n, d]
    (float32, CPU), and those tokens' norms (for the scale).

    Batched with right padding; padded positions are masked out of every mean, so a sentence's
    vector does not depend on which batch it was in.
    """
    if batch_size < 1:
        raise RadsteerError(f"batch size must be at least 1, not {batch_size}")
    tok = adapter.tokenizer
    reader = LayerReader(adapter, layer)
    means: list[torch.Tensor] = []
    norms: list[torch.Tensor] = []
    for start in range(0, len(sentences), batch_size):
        chunk = [str(s) for s in sentences[start : start + batch_size]]
        ids = [tok(s, add_special_tokens=True)["input_ids"] for s in chunk]
        if any(len(i) == 0 for i in ids):
            raise RadsteerError("an example sentence is empty after tokenisation; remove it from the protocol")
        input_ids, mask = pad_batch(ids, adapter.pad_token_id)
        hidden = reader.hidden(input_ids, mask).cpu()
        for b, row in enumerate(ids):
            # Position 0 is an attention sink with an outlier norm: leave it out of the mean
            # (unless it is the only token), or it would dominate every difference.
            tail = hidden[b, 1 : len(row)] if len(row) > 1 else hidden[b, : len(row)]
            means.append(tail.mean(0))
            norms.append(tail.norm(dim=-1))
    return torch.stack(means), norms


def build_concept_vectors(
    adapter: ModelAdapter,
    concepts: Sequence[Concept],
    layer: int,
    *,
    scale: ConceptScale = "median_norm",
    batch_size: int = 16,
) -> FeatureBank:
    """One difference-of-means vector per concept at the output of `layers[layer]`."""
    if not concepts:
        raise RadsteerError("no concepts to build vectors from: list them under features.concepts")
    if scale not in ("median_norm", "raw"):
        raise RadsteerError(f"unknown concept-vector scale {scale!r}: use median_norm or raw")
    ids = [c.id for c in concepts]
    if len(set(ids)) != len(ids):
        raise RadsteerError(f"concept ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    # Every distinct sentence runs once, however many concepts use it (negatives are often shared).
    sentences = list(dict.fromkeys(s for c in concepts for s in (*c.positive, *c.negative)))
    index = {s: i for i, s in enumerate(sentences)}
    acts, norms = sentence_activations(adapter, sentences, layer, batch_size=batch_size)
    typical = float(torch.cat(norms).median())
    rows, raw_norms = [], {}
    for c in concepts:
        if not c.positive or not c.negative:
            raise RadsteerError(f"concept {c.id!r} needs at least one positive and one negative sentence")
        diff = acts[[index[s] for s in c.positive]].mean(0) - acts[[index[s] for s in c.negative]].mean(0)
        length = float(diff.norm())
        if not length > 0:
            raise RadsteerError(f"concept {c.id!r}: its positive and negative sentences give the same mean "
                                f"activation; write sentences that differ in the concept")
        raw_norms[c.id] = length
        rows.append(diff / length * typical if scale == "median_norm" else diff)
    provenance: dict[str, Any] = {
        "method": METHOD,
        "model": adapter.name,
        "layer": int(layer),
        "layer_module": adapter.layer_module_path(layer),
        "scale": scale,
        "median_token_norm": typical,
        "raw_difference_norms": raw_norms,
        "fingerprint": concepts_fingerprint(concepts, layer=layer, scale=scale),
        "sentences": {c.id: {"positive": [sentence_hash(s) for s in c.positive],
                             "negative": [sentence_hash(s) for s in c.negative]} for c in concepts},
    }
    return FeatureBank(
        decoder=torch.stack(rows).float().contiguous(),
        ids=ids,
        source="concept",
        layer=int(layer),
        descriptions={c.id: c.description or c.id.replace("_", " ") for c in concepts},
        target_concepts={c.id: list(c.targets) for c in concepts},
        provenance=provenance,
    )
