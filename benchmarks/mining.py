"""Peak memory of `FeatureMiner` at 10× the corpus versus 1×: streaming must not grow with it.

Builds a small random Llama (saved to a temporary directory) and a BatchTopK SAE with a
realistic number of features (16,384 by default), writes a 1× and a 10× corpus of synthetic
reports, and mines each in a fresh subprocess that reports its own peak RSS
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`), so neither run inherits the other's memory.
Both runs mine everything the real command does: the three context kinds, the histograms,
checkpoints in SQLite and the final tables.

    python benchmarks/mining.py                 # last line: rss_ratio_10x=<peak 10× / peak 1×>
    python benchmarks/mining.py --docs 100 --features 4096   # a quicker look

Goal: rss_ratio_10x ≤ 1.25.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def build_assets(work: Path, n_features: int, hidden: int, docs: int, seed: int = 0) -> dict[str, Path]:
    import torch

    from tests.tiny_models import WORDS, make_tiny_llama

    make_tiny_llama(work / "model", seed=seed, layers=4, hidden=hidden)
    g = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(n_features, hidden, generator=g)
    W_dec /= W_dec.norm(dim=-1, keepdim=True)
    torch.save({"W_enc": W_dec.T.contiguous() * 4.0, "b_enc": torch.zeros(n_features), "W_dec": W_dec,
                "b_dec": torch.zeros(hidden), "threshold": torch.tensor(0.15), "k": torch.tensor(32),
                "group_sizes": torch.tensor([n_features])}, work / "ae.pt")
    rng = random.Random(seed)
    words = [w for w in WORDS if w not in (".", ",", ":")]

    def report() -> str:
        sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) + " ." for _ in range(rng.randint(2, 6))]
        return " ".join(sentences)

    paths = {}
    for name, n in (("1x", docs), ("10x", 10 * docs)):
        path = work / f"corpus_{name}.jsonl"
        with open(path, "w") as fh:
            for i in range(n):
                fh.write(json.dumps({"id": f"r{i:06d}", "text": report()}) + "\n")
        paths[name] = path
    return paths


def child(work: Path, corpus: Path, batch_size: int) -> None:
    """One mining run in this (fresh) process; prints a JSON line with its peak RSS."""
    import torch

    torch.set_num_threads(1)
    from steering.adapters import HFCausalLMAdapter
    from steering.mining import FeatureMiner
    from steering.sae_loaders import load_feature_bank
    from steering.store import StudyStore

    adapter = HFCausalLMAdapter.from_pretrained(work / "model", dtype="float32", device="cpu")
    bank = load_feature_bank(work / "ae.pt")
    loaded = peak_rss_mb()
    miner = FeatureMiner(adapter, bank, 2, batch_size=batch_size)
    start = time.perf_counter()
    with StudyStore.open(work / f"run_{corpus.stem}") as store:
        report = miner.run(store, corpus, progress=False)
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "rss_after_load_mb": loaded, "docs": report.docs_mined,
                      "tokens": report.tokens_mined, "contexts": report.contexts_stored,
                      "checkpoints": report.checkpoints, "seconds": time.perf_counter() - start}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=300, help="reports in the 1× corpus (default 300)")
    ap.add_argument("--features", type=int, default=16384, help="SAE features (default 16384)")
    ap.add_argument("--hidden", type=int, default=128, help="model width (default 128)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--child", nargs=2, metavar=("WORK", "CORPUS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.batch_size)
        return
    import torch

    torch.set_num_threads(1)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="radsteer-mining-bench-") as tmp:
        work = Path(tmp)
        corpora = build_assets(work, args.features, args.hidden, args.docs)
        results = {}
        for name in ("1x", "10x"):
            out = subprocess.run([sys.executable, __file__, "--child", str(work), str(corpora[name]),
                                  "--batch-size", str(args.batch_size)],
                                 env=env, check=True, capture_output=True, text=True)
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[name]
            print(f"{name:>3}: {r['docs']} reports, {r['tokens']} tokens, {args.features} features, "
                  f"{r['checkpoints']} checkpoints, {r['contexts']} contexts stored; "
                  f"RSS after model+SAE load {r['rss_after_load_mb']:.0f} MB, peak {r['peak_rss_mb']:.0f} MB; "
                  f"{r['seconds']:.1f} s", flush=True)
    one, ten = results["1x"], results["10x"]
    growth = (ten["peak_rss_mb"] - ten["rss_after_load_mb"]) / max(one["peak_rss_mb"] - one["rss_after_load_mb"], 1e-9)
    print(f"mining working set (peak − after load) at 10× / 1×: {growth:.3f}")
    print(f"rss_ratio_10x={ten['peak_rss_mb'] / one['peak_rss_mb']:.3f}")


if __name__ == "__main__":
    main()
