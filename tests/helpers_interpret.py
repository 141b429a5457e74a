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
