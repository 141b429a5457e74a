"""Corpora and feature banks for the mining tests, with answers known by construction.

`planted_setup` writes a corpus of random reports in which a few chosen words ("pacemaker",
"pneumothorax") occur only at recorded (document, position) places, and builds an SAE whose
feature j reads the direction of planted word j at the steering layer: its encoder column is
the unit mean of that word's hidden states (`hidden_states[L + 1]` of a plain forward pass,
independent of the miner's hook) and its bias puts the threshold halfway between the highest
projection of any other token and the lowest of the planted word — so exactly the planted
tokens fire. The fixture asserts that margin, so the construction cannot silently fail.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from steering.adapters import HFCausalLMAdapter
from steering.feature_bank import FeatureBank, SAEEncoder
from tests.tiny_models import WORDS, make_tiny_llama

PLANTED = ("pacemaker", "pneumothorax")
LAYER = 1
SCALE = 100.0  # encoder gain, so planted activations are O(1)


def tiny_adapter(seed: int = 5) -> HFCausalLMAdapter:
    model, tok = make_tiny_llama(seed=seed)
    return HFCausalLMAdapter(model, tok, name=f"tiny-llama-{seed}", path=None)


def write_corpus(path: Path, docs: list[list[str]], prefix: str = "doc") -> list[str]:
    ids = [f"{prefix}{i:03d}" for i in range(len(docs))]
    with open(path, "w") as fh:
        for doc_id, words in zip(ids, docs):
            fh.write(json.dumps({"id": doc_id, "text": " ".join(words)}) + "\n")
    return ids


def random_docs(n: int, seed: int = 0, exclude: tuple[str, ...] = (), lengths: tuple[int, int] = (3, 24)) -> list[list[str]]:
    rng = random.Random(seed)
    pool = [w for w in WORDS if w not in exclude]
    return [[rng.choice(pool) for _ in range(rng.randint(*lengths))] for _ in range(n)]


@dataclass
class Planted:
    adapter: HFCausalLMAdapter
    bank: FeatureBank
    corpus: Path
    places: dict[str, set[tuple[str, int]]]  # feature id -> {(doc_id, token_index)}
    n_tokens: int  # tokens the miner should count (every position but the first)


@torch.inference_mode()
def layer_output(adapter: HFCausalLMAdapter, ids: list[int], layer: int = LAYER) -> torch.Tensor:
    """Hidden states after `layers[layer]` for one unpadded sequence, via output_hidden_states."""
    out = adapter.model(torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[layer + 1][0].float()


def planted_setup(root: Path, *, n_docs: int = 30, per_word: int = 3, n_random: int = 4, seed: int = 0) -> Planted:
    adapter = tiny_adapter()
    tok = adapter.tokenizer
    rng = random.Random(seed)
    docs = random_docs(n_docs, seed, exclude=PLANTED, lengths=(4, 20))
    doc_ids = [f"doc{i:03d}" for i in range(n_docs)]
    places: dict[str, set[tuple[str, int]]] = {}
    used: set[tuple[int, int]] = set()
    for j, word in enumerate(PLANTED):
        places[f"f{j}"] = set()
        for d in rng.sample(range(n_docs), per_word):
            p = rng.randint(1, len(docs[d]) - 1)
            while (d, p) in used:
                p = rng.randint(1, len(docs[d]) - 1)
            used.add((d, p))
            docs[d][p] = word
            places[f"f{j}"].add((doc_ids[d], p))  # one token per word, no BOS: token index = word index
    corpus = root / "planted.jsonl"
    write_corpus(corpus, docs)
    seqs = [[int(i) for i in tok(" ".join(d))["input_ids"]] for d in docs]
    assert all(len(s) == len(d) for s, d in zip(seqs, docs)), "one token per word expected"
    hidden = [layer_output(adapter, s) for s in seqs]
    d_model = adapter.hidden_size
    n_features = len(PLANTED) + n_random
    g = torch.Generator().manual_seed(seed)
    W_enc = torch.randn(d_model, n_features, generator=g) * 0.01
    b_enc = torch.full((n_features,), -1.0)  # random features: (almost) never active
    for j, word in enumerate(PLANTED):
        wid = tok.convert_tokens_to_ids(word)
        on = torch.stack([h[p] for s, h in zip(seqs, hidden) for p in range(1, len(s)) if s[p] == wid])
        off = torch.cat([h[1:][torch.tensor(s[1:]) != wid] for s, h in zip(seqs, hidden)])
        u = on.mean(0)
        u = u / u.norm()
        low, high = float((on @ u).min()), float((off @ u).max())
        assert low > high, f"planted word {word!r} is not separable at layer {LAYER} ({low} <= {high})"
        W_enc[:, j] = u * SCALE
        b_enc[j] = -SCALE * (low + high) / 2
    encoder = SAEEncoder(W_enc, b_enc, torch.zeros(d_model), activation="relu")
    bank = FeatureBank(decoder=W_enc.T.contiguous().clone(), ids=[f"f{i}" for i in range(n_features)],
                       source="sae", layer=LAYER, encoder=encoder, b_dec=torch.zeros(d_model),
                       provenance={"path": "planted", "sha256": "planted"})
    return Planted(adapter, bank, corpus, places, n_tokens=sum(len(s) - 1 for s in seqs))


def random_bank(d_model: int, n_features: int, seed: int = 0, *, encoder: bool = True) -> FeatureBank:
    """A random ReLU SAE (encoder=True) or random concept vectors (encoder=False)."""
    g = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(n_features, d_model, generator=g)
    enc = None
    if encoder:
        enc = SAEEncoder(torch.randn(d_model, n_features, generator=g), torch.randn(n_features, generator=g) * 0.1,
                         torch.zeros(d_model), activation="relu")
    return FeatureBank(decoder=W_dec, ids=[f"f{i}" for i in range(n_features)],
                       source="sae" if encoder else "concept", layer=LAYER, encoder=enc,
                       provenance={"path": f"random-{seed}", "sha256": f"random-{seed}-{encoder}"})
