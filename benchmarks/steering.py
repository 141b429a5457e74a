"""Steering cost on the demo model (CPU, one thread, 64 new tokens), both sides in one run.

- steer_overhead: time of a steered `generate` / a plain one (same prompt, exactly 64 tokens),
  the median of back-to-back pairs' ratios.
- sweep_speedup: 8 α values on one case, one α per `generate` call (how the SAELens tutorials and
  Neuronpedia steer) / all 8 rows in one batched call of the radsteer engine.
- bf16_speedup: bfloat16 vs float32 tokens/s of the demo model on the same 16 demo prompts (few-shot,
  exactly 32 new tokens), back to back, median of paired ratios — on CPUs with native bf16 matrix math
  (`steering.cpu`); `n/a` elsewhere, where `dtype: auto` stays float32 (`--force-bf16` measures it anyway).

    python benchmarks/steering.py [--repeats 9] [--force-bf16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

# This file is named like the `steering` package; keep its folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

torch.set_num_threads(1)

from steering.demo_model import load_demo_adapter  # noqa: E402
from steering.engine import GenerationSettings, SteeringEngine, SteeringSpec, plan_rows  # noqa: E402
from steering.feature_bank import FeatureBank  # noqa: E402
from steering.hooks import SteeringHook  # noqa: E402

CASE = {"indication": "Shortness of breath, fever", "technique": "PA and lateral chest radiograph",
        "comparison": "Chest radiograph from two days earlier"}
ALPHAS = [-8.0, -4.0, -2.0, -1.0, 1.0, 2.0, 4.0, 8.0]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--force-bf16", action="store_true", help="measure bf16 even without native bf16 support")
    args = parser.parse_args()

    adapter = load_demo_adapter()
    model, n = adapter.model, args.new_tokens
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(1, adapter.hidden_size, generator=g)
    bank = FeatureBank(decoder=direction / direction.norm(), ids=["d"])
    layer = 15
    ids = torch.tensor([adapter.prompt_ids(CASE)])
    mask = torch.ones_like(ids)
    kw = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=adapter.pad_token_id)

    def plain() -> None:
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, **kw)

    def steered() -> None:
        with torch.inference_mode(), SteeringHook(adapter.layer(layer), bank.decoder, torch.tensor([4.0])):
            model.generate(input_ids=ids, attention_mask=mask, **kw)

    plain()  # warm-up
    plain_t, steer_t = [], []
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both sides alike
        plain_t.append(timed(plain))
        steer_t.append(timed(steered))
    # Median of the ratios of back-to-back pairs: slow drifts in machine load cancel within a pair.
    overhead = statistics.median(s / p for s, p in zip(steer_t, plain_t))
    print(f"plain generate   ({n} tokens): median {statistics.median(plain_t):.3f} s, min {min(plain_t):.3f} s")
    print(f"steered generate ({n} tokens): median {statistics.median(steer_t):.3f} s, min {min(steer_t):.3f} s")
    print(f"  paired ratios: {', '.join(f'{s / p:.3f}' for s, p in zip(steer_t, plain_t))}")
    # The hook's own cost per decode step, timed directly: far below the noise of whole runs.
    hook = SteeringHook(adapter.layer(layer), bank.decoder, torch.tensor([4.0]),
                        prompt_mask=torch.ones_like(ids, dtype=torch.bool))
    x, kwargs = torch.randn(1, 1, adapter.hidden_size), {"cache_position": torch.tensor([ids.shape[1] + 1])}
    calls = 5000
    hook_s = timed(lambda: [hook._hook(None, (x,), kwargs, x) for _ in range(calls)]) / calls
    step_s = statistics.median(plain_t) / n
    print(f"  hook cost per decode step: {hook_s * 1e6:.1f} µs = {100 * hook_s / step_s:.3f} % of a "
          f"{step_s * 1e3:.1f} ms step")

    settings = GenerationSettings(max_new_tokens=n)
    spec = SteeringSpec(layer=layer)
    one_at_a_time = SteeringEngine(adapter, bank, spec=spec, settings=settings, batch_size=1)
    batched = SteeringEngine(adapter, bank, spec=spec, settings=settings, batch_size=len(ALPHAS))
    rows = [r for r in plan_rows(["c"], ["d"], ALPHAS) if not r.is_baseline]
    cases = {"c": CASE}
    seq_t, bat_t = [], []
    for _ in range(max(2, args.repeats // 2)):
        seq_t.append(timed(lambda: [one_at_a_time.generate(cases, [r]) for r in rows]))
        bat_t.append(timed(lambda: batched.generate(cases, rows)))
    a = {r.row.key(): r.token_ids for r in batched.generate(cases, rows)}
    b = {r.row.key(): r.token_ids for r in one_at_a_time.generate(cases, rows)}
    assert a == b, "batched rows must equal one-row runs"
    speedup = statistics.median(s / b for s, b in zip(seq_t, bat_t))
    print(f"{len(ALPHAS)} α one per call: median {statistics.median(seq_t):.2f} s; "
          f"batched (one call): median {statistics.median(bat_t):.2f} s")
    padding = demo_padding_fraction(adapter)
    bf16 = bf16_speedup(args.repeats, force=args.force_bf16)
    print(f"steer_overhead={overhead:.3f} sweep_speedup={speedup:.2f} padding_fraction={padding:.3f} "
          f"bf16_speedup={bf16}")


def _demo_study():
    """The demo's cases, prompt style and sweep shape. demo.yaml selects its features from an
    interpretation run, so its settings are read as YAML and its cases through demo_features.yaml."""
    import yaml

    from protocols.study import Study

    here = Path(__file__).resolve().parents[1] / "protocols"
    demo = yaml.safe_load((here / "demo.yaml").read_text())
    study = Study.from_protocol(here / "demo_features.yaml", limit=demo["cases"].get("limit"))
    return study, demo


def bf16_speedup(repeats: int, *, force: bool = False) -> str:
    from steering.cpu import cpu_bf16_supported, cpu_info

    print(f"CPU: {cpu_info()}")
    if not (cpu_bf16_supported() or force):
        return "n/a"
    from steering.adapters import pad_batch

    study, _ = _demo_study()
    cases = list(study.cases.values())[:16]
    runs = {}
    for dtype in ("float32", "bfloat16"):
        a = load_demo_adapter(dtype=dtype, prompt="few_shot")
        ids, mask = pad_batch([a.prompt_ids(c) for c in cases], a.pad_token_id, side="left")
        kw = dict(max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=a.pad_token_id)

        def go(a=a, ids=ids, mask=mask, kw=kw) -> None:
            with torch.inference_mode():
                a.model.generate(input_ids=ids, attention_mask=mask, **kw)

        go()  # warm-up
        runs[dtype] = go
    times = {"float32": [], "bfloat16": []}
    for _ in range(max(3, repeats // 3)):  # interleaved: drift in machine load hits both alike
        for dtype, go in runs.items():
            times[dtype].append(timed(go))
    tokens = 16 * 32
    for dtype, t in times.items():
        print(f"{dtype}: median {statistics.median(t):.2f} s for {tokens} tokens = {tokens / statistics.median(t):.0f} tokens/s")
    ratio = statistics.median(f / b for f, b in zip(times["float32"], times["bfloat16"]))
    return f"{ratio:.2f}" + ("" if cpu_bf16_supported() else "(emulated)")


def demo_padding_fraction(adapter) -> float:
    """Left-padding share of the demo sweep's prompt positions, from its real prompts and batch order
    (rows of all cases sorted by prompt length; batch size as the protocol fixes it, else 16)."""
    from steering.batching import padding_fraction

    study, demo = _demo_study()
    size = demo["generation"].get("batch_size", 16)
    size = size if isinstance(size, int) else 16
    adapter.prompt_style = study.protocol.model.prompt  # the demo's few-shot prompts
    engine = SteeringEngine(adapter, None, spec=SteeringSpec(layer=0), batch_size=size)
    features = [f"f{i}" for i in range(6)]  # the demo steers at most 6 features; ids do not change prompts
    rows = plan_rows(list(study.cases), features, demo["alphas"])
    lengths = [[len(engine.prompt_ids(r.case_id, study.cases[r.case_id])) for r in b]
               for b in engine.batches(study.cases, rows)]
    print(f"demo sweep: {len(rows)} rows in batches of {size}: padding {100 * padding_fraction(lengths):.1f} % "
          "of prompt positions")
    return padding_fraction(lengths)


if __name__ == "__main__":
    main()
