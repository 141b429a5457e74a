"""Feature interpretation throughput, measured in one run (ratios, not absolute goals baked into tests).

1. `llm` explainer + scorer for 100 features against a loopback OpenAI-protocol server that
   answers after 200 ms: concurrency 16 versus concurrency 1, fresh stores (no cache), same
   requests (goal: speedup ≥ 8).
2. `lexicon` explainer + scorer over the stored contexts of 16,384 features (20 top, 10 sampled
   active and 15 non-activating windows each, cut from synthetic chest X-ray reports, as
   `radsteer mine` stores them): features interpreted and stored per second on one core, the
   store's reads and writes included (goal ≥ 50 features/s on 2 cores).

    python benchmarks/interpret.py [--features 16384] [--llm-features 100] [--delay 0.2]

Last line: `interpret_speedup=<sequential / concurrent time> lexicon_features_per_s=<n>`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import re
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.helpers_* (loopback server, synthetic features)

KEY_ENV = "RADSTEER_BENCH_INTERPRET_KEY"


def _serve(conn: Connection, delay_s: float) -> None:
    """The loopback server in its own process, as a real server would be (no shared GIL)."""
    from tests.helpers_interpret import oracle_respond
    from tests.helpers_judge import FakeOpenAIServer

    with FakeOpenAIServer(delay_s=delay_s, respond=oracle_respond) as srv:
        conn.send(srv.base_url)
        while conn.recv() == "stats":
            conn.send((srv.requests, srv.max_in_flight))


def _llm_run(base_url: str, n_features: int, concurrency: int) -> float:
    from evaluation.interpret import make_interpreter
    from evaluation.judge import JudgeConfig
    from evaluation.judge_cache import StoreJudgeCache
    from steering.store import StudyStore
    from tests.helpers_interpret import add_synthetic_feature

    words = ["pacemaker", "pneumothorax", "cardiomegaly", "atelectasis", "consolidation", "effusion"]
    with tempfile.TemporaryDirectory() as tmp, StudyStore.open(Path(tmp) / "run") as store:
        for i in range(n_features):
            add_synthetic_feature(store, f"f{i}", words[i % len(words)], n_zero=20)
        cfg = JudgeConfig(model="bench", base_url=base_url, api_key_env=None, concurrency=concurrency,
                          timeout_s=30.0, max_retries=2)
        interp = make_interpreter("llm", judge_config=cfg, cache=StoreJudgeCache(store))  # fresh store: no cache
        t0 = time.perf_counter()
        report = interp.run(store)
        seconds = time.perf_counter() - t0
        if report.errors:
            raise SystemExit(f"llm benchmark: {report.errors} features failed")
        return seconds


def bench_llm(n_features: int, concurrency: int, delay: float) -> float:
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_serve, args=(child, delay), daemon=True)
    server.start()
    try:
        base_url = parent.recv()
        times, counts = {}, {}
        for c in (1, concurrency):
            parent.send("stats")
            before = parent.recv()[0]
            times[c] = _llm_run(base_url, n_features, c)
            parent.send("stats")
            sent, in_flight = parent.recv()
            counts[c] = sent - before
            print(f"llm: {n_features} features, {counts[c]} requests at {delay * 1000:.0f} ms, concurrency {c}: "
                  f"{times[c]:.1f} s (server saw at most {in_flight} in flight); "
                  f"load average {os.getloadavg()[0]:.1f}")
    finally:
        parent.send("stop")
        server.join(timeout=10)
    assert counts[1] == counts[concurrency], counts
    return times[1] / times[concurrency]


def _synthetic_reports(n: int, seed: int) -> list[str]:
    """The realistic synthetic reports of benchmarks/evaluation.py (loaded by path: its module name
    would shadow the `evaluation` package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_evaluation", ROOT / "benchmarks" / "evaluation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.synthetic_reports(n, seed)


def _windows(n_reports: int, width: int = 5, seed: int = 0) -> list[list[str]]:
    out = []
    for text in _synthetic_reports(n_reports, seed):
        toks = [f" {t}" for t in re.findall(r"[A-Za-z0-9']+|[.,;:]", text)]
        for c in range(len(toks)):
            out.append(toks[max(0, c - width) : c + width + 1] + [str(min(c, width))])
    return out


def _build_lexicon_store(store, n_features: int, seed: int = 0) -> None:
    """Stored contexts of `n_features` features, each firing on one word of the corpus."""
    rng = random.Random(seed)
    windows = _windows(3000, seed=seed)
    by_center: dict[str, list[list[str]]] = {}
    for w in windows:
        center = int(w[-1])
        by_center.setdefault(w[center].strip().lower(), []).append(w)
    words = sorted(k for k, v in by_center.items() if len(v) >= 40 and len(k) > 3)
    rows, stats = [], []
    for j in range(n_features):
        word = words[j % len(words)]
        active = rng.sample(by_center[word], 30)
        inactive = []
        while len(inactive) < 15:
            w = rng.choice(windows)
            if all(t.strip().lower() != word for t in w[:-1]):
                inactive.append(w)
        fid = f"f{j}"
        for kind, group in (("top", active[:20]), ("quantile", active[20:]), ("zero", inactive)):
            for rank, w in enumerate(group):
                toks, center = w[:-1], int(w[-1])
                act = 0.0 if kind == "zero" else round(5.0 - rank * 0.1 if kind == "top" else rng.uniform(0.5, 4), 3)
                acts = [0.0] * len(toks)
                acts[center] = act
                rows.append({"feature_id": fid, "kind": kind, "rank": rank, "activation": act,
                             "doc_id": f"d{rng.randrange(10**9)}", "token_index": 50, "tokens": toks,
                             "activations": acts, "center": center})
        stats.append({"feature_id": fid, "corpus_hash": "bench", "n_tokens": 10**6, "frequency": rng.random() / 100,
                      "max_activation": 5.0, "quantiles": {"p25": 1.4, "p50": 2.3, "p75": 3.2}})
    _bulk_insert(store, rows)
    store.insert_ignore("feature_stats", stats)


def _bulk_insert(store, rows: list[dict]) -> None:
    """Setup only (not measured): the rows as `radsteer mine` stores them, written with sqlite3's
    executemany, which is ~10× faster than SQLAlchemy's JSON-typed inserts for 700k rows."""
    import json
    import sqlite3

    path = store.engine.url.database
    cols = ["feature_id", "kind", "rank", "activation", "doc_id", "token_index", "tokens", "activations", "center"]
    with sqlite3.connect(path) as conn:
        conn.executemany(
            f"INSERT INTO feature_contexts ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            ([r[c] if c not in ("tokens", "activations") else json.dumps(r[c]) for c in cols] for r in rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", type=int, default=16_384, help="features for the lexicon throughput")
    ap.add_argument("--llm-features", type=int, default=100)
    ap.add_argument("--delay", type=float, default=0.2, help="seconds the loopback server waits per answer")
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from evaluation.interpret import make_interpreter
    from steering.store import StudyStore

    speedup = bench_llm(args.llm_features, args.concurrency, args.delay)

    with tempfile.TemporaryDirectory() as tmp, StudyStore.open(Path(tmp) / "run") as store:
        t0 = time.perf_counter()
        _build_lexicon_store(store, args.features)
        print(f"lexicon: stored contexts of {args.features} features in {time.perf_counter() - t0:.1f} s "
              f"({store.count('feature_contexts')} rows)")
        t0, c0 = time.perf_counter(), time.process_time()
        report = make_interpreter("lexicon").run(store)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        per_s = report.interpreted / seconds
        print(f"lexicon: {report.summary()}; {report.interpreted / cpu:.0f} features per CPU-second; "
              f"load average {os.getloadavg()[0]:.1f}")
    print(f"interpret_speedup={speedup:.1f} lexicon_features_per_s={per_s:.0f}")


if __name__ == "__main__":
    main()
