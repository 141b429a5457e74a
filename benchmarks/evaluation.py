"""Evaluation throughput, measured in one run (ratios, not absolute goals baked into tests).

1. The `lexicon` extractor on one core over realistic synthetic chest X-ray reports
   (goal ≥ 200 reports/s).
2. 100 LLM-judge calls against a loopback OpenAI-protocol server that answers after 200 ms,
   concurrency 1 vs concurrency 16, distinct prompts and no cache (goal: speedup ≥ 8).
3. The longitudinal pairs of tests/data/family_pairs.yaml labelled by the lexicon entity diff:
   how many come out with the hand-written diff and label.

    python benchmarks/evaluation.py

Last line: `lexicon_reports_per_s=<n> judge_speedup=<sequential / concurrent time>
longitudinal_pairs_right=<K>/<N>`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.helpers_judge (the loopback server)

_FINDINGS = [
    "There is a {sev} {side} pleural effusion.", "No pleural effusion.", "Possible {side} basilar consolidation.",
    "No pneumothorax.", "A {sev} {side} apical pneumothorax is present.", "The heart is {sev}ly enlarged.",
    "Heart size is normal.", "Cardiomegaly is unchanged compared with the prior study.",
    "{side_cap} lower lobe atelectasis.", "Mild pulmonary edema has increased since the prior radiograph.",
    "No focal consolidation to suggest pneumonia.", "A {n} mm nodule projects over the {side} upper lobe.",
    "Emphysematous changes are again seen.", "Healed {side} rib fractures.", "Small hiatal hernia.",
    "Findings may represent early pneumonia.", "No acute osseous abnormality.",
    "The mediastinal contours are within normal limits.", "The lungs are otherwise clear.",
    "No interval change.", "Recommend follow-up chest CT in {n} months.", "The {side} pleural effusion has resolved.",
    "Findings were discussed with Dr. Smith by telephone.", "Low lung volumes limit evaluation of the bases.",
]
_DEVICES = [
    "An endotracheal tube terminates {n} cm above the carina.", "A nasogastric tube courses below the diaphragm.",
    "A {side} chest tube is in place.", "A {side} PICC line terminates in the lower SVC.",
    "A left-sided pacemaker with leads in the right atrium and ventricle.", "Median sternotomy wires are intact.",
    "A right internal jugular central venous catheter ends at the cavoatrial junction.",
]


def synthetic_reports(n: int, seed: int = 0) -> list[str]:
    """Reports of 4–9 sentences: findings with laterality/severity, negations, hedges, devices."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        sentences = rng.sample(_FINDINGS, rng.randint(3, 7)) + rng.sample(_DEVICES, rng.randint(0, 2))
        rng.shuffle(sentences)
        side = rng.choice(["left", "right", "bilateral"])
        fill = dict(sev=rng.choice(["small", "moderate", "large", "mild", "trace"]), side=side,
                    side_cap=side.capitalize(), n=rng.randint(3, 12))
        body = " ".join(s.format(**fill) for s in sentences)
        out.append(f"FINDINGS: {body} IMPRESSION: {sentences[0].format(**fill)}")
    return out


def bench_lexicon(n_reports: int, batch: int) -> float:
    from evaluation.extractors import get_extractor

    if hasattr(os, "sched_setaffinity"):  # one core, as the goal says
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    extractor = get_extractor("lexicon")
    reports = synthetic_reports(n_reports)
    extractor.extract(reports[:batch])  # warm-up: loading the lexicon / pipeline is not throughput
    t0, c0 = time.perf_counter(), time.process_time()
    n_entities = 0
    for i in range(0, len(reports), batch):
        n_entities += sum(len(e) for e in extractor.extract(reports[i : i + batch]))
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    # the rate is per CPU second of this (single-threaded) process: on a shared machine the wall
    # clock also counts the time other processes held the core; both are printed
    rate = len(reports) / cpu
    print(f"lexicon: {len(reports)} reports, {n_entities} entities in {cpu:.2f} CPU s ({dt:.2f} s wall, "
          f"{len(reports) / dt:.0f} reports/s by the wall clock) on one core → {rate:.0f} reports/s")
    return rate


def _serve(conn: Connection, delay_s: float) -> None:
    """The loopback server in its own process, as a real server would be (no shared GIL)."""
    from tests.helpers_judge import FakeOpenAIServer

    with FakeOpenAIServer(delay_s=delay_s) as srv:
        conn.send(srv.base_url)
        while conn.recv() == "stats":
            conn.send(srv.max_in_flight)


def bench_judge(n: int, delay_s: float, concurrency: int) -> float:
    from evaluation.judge import JudgeConfig, LLMJudge
    from evaluation.judge_prompt import JudgeItem

    items = [JudgeItem(key=i, baseline="No pleural effusion.", steered=f"Small pleural effusion ({i}). #on",
                       direction=1, targets=["pleural_effusion"], description="pleural effusion")
             for i in range(n)]  # distinct prompts; no cache is passed
    times = {}
    parent, child = multiprocessing.get_context("fork").Pipe()
    server = multiprocessing.get_context("fork").Process(target=_serve, args=(child, delay_s), daemon=True)
    server.start()
    try:
        base_url = parent.recv()
        for c in (1, concurrency):
            judge = LLMJudge(JudgeConfig(model="bench", base_url=base_url, api_key_env=None, concurrency=c))
            t0 = time.perf_counter()
            results = judge.judge_many(items)
            times[c] = time.perf_counter() - t0
            assert all(r.label == "on" for r in results), [r.error for r in results if r.error][:3]
            parent.send("stats")
            print(f"judge: {n} calls, {delay_s * 1000:.0f} ms each, concurrency {c}: {times[c]:.2f} s "
                  f"(server saw at most {parent.recv()} in flight)")
    finally:
        parent.send("stop")
        server.join(timeout=10)
    return times[1] / times[concurrency]


def longitudinal_pairs_right() -> tuple[int, int]:
    """(right, total) over the longitudinal family pairs: diff descriptions and label both as written."""
    import yaml

    from evaluation.diff import diff_entities
    from evaluation.lexicon import LexiconExtractor
    from evaluation.targets import match_targets

    pairs = [p for p in yaml.safe_load((ROOT / "tests" / "data" / "family_pairs.yaml").read_text(encoding="utf-8"))
             if p["category"] == "longitudinal"]
    x = LexiconExtractor()
    right = 0
    for p in pairs:
        base, steered = x.extract([p["baseline"], p["steered"]])
        diff = diff_entities(base, steered)
        ok = sorted(diff.describe()) == sorted(p["diff"]) and match_targets(diff, p["target"], p["direction"]).label == p["label"]
        right += ok
        if not ok:
            print(f"longitudinal pair {p['id']}: got {diff.describe()}")
    print(f"longitudinal pairs: {right}/{len(pairs)} right (diff and label)")
    return right, len(pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--judgments", type=int, default=100)
    ap.add_argument("--delay", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    speedup = bench_judge(args.judgments, args.delay, args.concurrency)
    rate = bench_lexicon(args.reports, args.batch)
    right, total = longitudinal_pairs_right()
    print(f"lexicon_reports_per_s={rate:.0f} judge_speedup={speedup:.1f} longitudinal_pairs_right={right}/{total}")


if __name__ == "__main__":
    main()
