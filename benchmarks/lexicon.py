"""Throughput of the lexicon backend and of entity-diff labelling, on one core, in one run.

    python benchmarks/lexicon.py [--reports 2000]

1. extraction alone over synthetic chest X-ray reports (the same generator as
   benchmarks/evaluation.py), goal >= 200 reports/s;
2. `label_pairs` end to end (validation, de-duplicated extraction, diff, target matching) over
   baseline/steered pairs where every steered report is distinct and baselines are shared
   four ways, as in a sweep.
Last line: `lexicon_reports_per_s=<n> label_pairs_per_s=<n>`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reports", type=int, default=2000)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    try:
        import torch  # not needed here; only so that no stray thread pool competes if it is loaded

        torch.set_num_threads(1)
    except ImportError:
        pass
    from benchmarks.evaluation import synthetic_reports
    from evaluation.labelling import label_pairs
    from evaluation.lexicon import LexiconExtractor, load_lexicon

    t0 = time.perf_counter()
    load_lexicon()
    print(f"lexicon compiled in {time.perf_counter() - t0:.3f} s")
    reports = synthetic_reports(args.reports, seed=1)
    ex = LexiconExtractor()
    ex.extract(reports[:50])
    t0 = time.perf_counter()
    n_ent = sum(len(e) for e in ex.extract(reports))
    dt = time.perf_counter() - t0
    rate = len(reports) / dt
    print(f"extract: {len(reports)} reports, {n_ent} entities in {dt:.2f} s -> {rate:.0f} reports/s")

    n_pairs = len(reports)
    bases = synthetic_reports(n_pairs // 4 + 1, seed=2)
    rows = [{"id": i, "baseline": bases[i // 4], "steered": reports[i], "target": "pleural effusion",
             "direction": 1 if i % 2 else -1} for i in range(n_pairs)]
    t0 = time.perf_counter()
    out = label_pairs(rows, ex)
    dt = time.perf_counter() - t0
    prate = n_pairs / dt
    labels = {k: sum(r["label"] == k for r in out) for k in ("on", "off", "both", "none")}
    print(f"label_pairs: {n_pairs} pairs in {dt:.2f} s -> {prate:.0f} pairs/s; labels {labels}")
    print(f"lexicon_reports_per_s={rate:.0f} label_pairs_per_s={prate:.0f}")


if __name__ == "__main__":
    main()
