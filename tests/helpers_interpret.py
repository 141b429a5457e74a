"""A mined study with answers known by construction, for the interpretation tests and benchmark.

`mined_planted_study` plants "pacemaker" and "pneumothorax" in a random-word corpus (see
tests/helpers_mining.py: feature f0 fires exactly on "pacemaker", f1 on "pneumothorax"), adds a
*random* feature — a random encoder direction whose threshold makes it fire on ~20 % of tokens,
whatever they say — and mines everything into a study store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from steering.mining import FeatureMiner, MiningSettings
from steering.store import StudyStore
from tests.helpers_mining import LAYER, PLANTED, layer_output, planted_setup

RANDOM_FEATURE = "f2"


@dataclass
class MinedStudy:
    run_dir: Path
    planted: dict[str, str]  # feature id -> planted word
    random_feature: str


def mined_planted_study(root: Path, *, n_docs: int = 90, per_word: int = 40, zero: int = 40) -> MinedStudy:
    p = planted_setup(root, n_docs=n_docs, per_word=per_word, n_random=2)
    tok = p.adapter.tokenizer
    docs = [line for line in p.corpus.read_text().splitlines() if line.strip()]
    import json

    seqs = [[int(i) for i in tok(json.loads(d)["text"])["input_ids"]] for d in docs]
    hidden = torch.cat([layer_output(p.adapter, s)[1:] for s in seqs])
    enc = p.bank.encoder
    g = torch.Generator().manual_seed(11)
    u = torch.randn(hidden.shape[1], generator=g)
    u = u / u.norm()
    proj = hidden @ u
    thr = float(torch.quantile(proj, 0.8))
    j = int(RANDOM_FEATURE[1:])
    enc.W_enc[:, j] = u * 10
    enc.b_enc[j] = -10 * thr
    miner = FeatureMiner(p.adapter, p.bank, LAYER,
                         settings=MiningSettings(top_k=20, n_quantile=16, n_zero=zero, window=3), batch_size=8)
    run_dir = root / "run"
    with StudyStore.open(run_dir) as store:
        miner.run(store, p.corpus, progress=False)
    return MinedStudy(run_dir, {f"f{i}": w for i, w in enumerate(PLANTED)}, RANDOM_FEATURE)


def write_planted_study(root: Path, *, n_docs: int = 90, per_word: int = 40):
    """The tiny on-disk study (tests/helpers_steering.py) whose SAE (ae.pt) is the planted one:
    (protocol path, Planted)."""
    from tests.helpers_steering import write_tiny_study

    protocol = write_tiny_study(root, n_cases=3, features=("f0", "f1"))
    p = planted_setup(root, n_docs=n_docs, per_word=per_word)
    enc = p.bank.encoder
    torch.save({"W_enc": enc.W_enc, "b_enc": enc.b_enc, "W_dec": p.bank.decoder, "b_dec": enc.b_dec,
                "threshold": torch.tensor(0.0), "k": torch.tensor(2), "group_sizes": torch.tensor([p.bank.n_features])},
               root / "ae.pt")
    return protocol, p


FILLER = ("there", "is", "no", "the", "heart", "size", "normal", "lungs", "clear", "with", "of", "and", "stable",
          "findings", "chest", "lower", "lobe")


def add_synthetic_feature(store: StudyStore, fid: str, word: str, *, marker: str = "", n_top: int = 20,
                          n_quantile: int = 10, n_zero: int = 30, seed: int = 0, doc_prefix: str = "") -> None:
    """Stored contexts of a feature that fires exactly on `word` (as `radsteer mine` would store them),
    without a model: active windows hold `word` at their centre, non-activating windows never do.
    `marker` (e.g. "#429once") is appended to every context, to steer the loopback server."""
    import random

    rng = random.Random(f"{seed}:{fid}")
    rows = []
    extra = [f" {marker}"] if marker else []

    def window(center_word: str | None) -> list[str]:
        left = [f" {rng.choice(FILLER)}" for _ in range(3)]
        right = [f" {rng.choice(FILLER)}" for _ in range(3)]
        mid = [f" {center_word or rng.choice(FILLER)}"]
        return left + mid + right + extra

    prefix = doc_prefix or fid
    for kind, n in (("top", n_top), ("quantile", n_quantile), ("zero", n_zero)):
        for rank in range(n):
            active = kind != "zero"
            act = round(5.0 - rank * 0.1, 3) if kind == "top" else round(rng.uniform(0.5, 4.0), 3) if active else 0.0
            toks = window(word if active else None)
            acts = [0.0] * len(toks)
            acts[3] = act
            rows.append({"feature_id": fid, "kind": kind, "rank": rank, "activation": act,
                         "doc_id": f"{prefix}-{kind}-{rank}", "token_index": 10, "tokens": toks,
                         "activations": acts, "center": 3})
    store.insert_ignore("feature_contexts", rows)
    store.upsert("feature_stats", [{"feature_id": fid, "corpus_hash": "synthetic", "n_tokens": 10_000,
                                    "frequency": (n_top + n_quantile) / 10_000, "max_activation": 5.0,
                                    "quantiles": {"n_active": n_top + n_quantile, "p25": 1.4, "p50": 2.3,
                                                  "p75": 3.2}}], key=["feature_id"])


def oracle_respond(body: dict, user: str) -> str:
    """A loopback 'LLM' that explains and scores perfectly: it reads the marked tokens, names them,
    and predicts a context active when it holds the named word."""
    import json
    import re

    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    if "interpret-explain" in system:
        words = re.findall(r"<<([^<>]+)>>", user)
        word = max(set(words), key=words.count) if words else ""
        return json.dumps({"description": f"mentions of {word}", "targets": [word, "not_a_concept"]})
    desc = re.search(r"Feature description: mentions of (\S+)", user)
    word = desc.group(1) if desc else "\x00"
    lines = re.findall(r"^\d+\. (.*)$", user.split("Contexts:", 1)[1], flags=re.M)
    return json.dumps({"active": [f" {word} " in f" {line} " for line in lines]})
