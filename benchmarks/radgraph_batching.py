"""RadGraph backend: packed batches (many reports as sentences of one DyGIE document, one forward
pass) vs the radgraph package's own loop (one report per forward pass), measured in one run on
the tiny random-weight archive the tests use. Real RadGraph is a BERT-base encoder, so the
ratio here mostly measures per-call overhead; it is a floor check, not a claim about GPU speed.

Last line: `radgraph_packed_speedup=<package loop time / packed time> reports=<n>`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.helpers_radgraph (the tiny archive builder)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from evaluation.radgraph_backend import RadGraphExtractor  # noqa: E402
from tests.helpers_radgraph import build_tiny_radgraph_archive  # noqa: E402

SENTENCES = [
    "Small left pleural effusion.",
    "No pneumothorax.",
    "Heart size is normal, lungs clear.",
    "Possible right lower lobe consolidation, likely atelectasis.",
    "Unchanged mild cardiomegaly compared with prior.",
    "Bilateral pleural effusions, moderate on the right.",
    "Pacemaker in place, lines and tubes stable.",
]


def _reports(n: int) -> list[str]:
    return [" ".join(SENTENCES[(i + k) % len(SENTENCES)] for k in range(1 + i % 4)) for i in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="radgraph-bench-"))
    try:
        archive = build_tiny_radgraph_archive(work / "build", "radgraph", seed=1)
        (work / "cache").mkdir()
        shutil.copy(archive, work / "cache" / archive.name)
        extractor = RadGraphExtractor("radgraph", work / "cache", batch_size=args.batch_size, device="cpu")
        texts = _reports(args.reports)
        extractor.raw(texts[:8])  # warm-up

        start = time.perf_counter()
        packed = extractor.raw(texts)
        t_packed = time.perf_counter() - start

        start = time.perf_counter()
        with torch.inference_mode(), contextlib.redirect_stdout(io.StringIO()):
            own = extractor._radgraph(texts)  # the package's loop: one report per forward
        t_loop = time.perf_counter() - start

        same = all(own[str(i)]["entities"] == packed[i]["entities"] for i in range(len(texts)))
        print(f"package loop {t_loop:.2f}s, packed (batch {args.batch_size}) {t_packed:.2f}s, identical={same}")
        print(f"radgraph_packed_speedup={t_loop / t_packed:.2f} reports={len(texts)}")
        return 0 if same else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
