"""The demo's prompt and steering setting, measured quickly (without running the whole demo).

`baselines`: the demo cases' unsteered findings (greedy, the demo protocol's generation settings),
for one or more few-shot example sets; prints each text, whether it is report-shaped
(evaluation/report_shape.py) and per variant `report_shaped=k/n prompt_tokens=<mean>`.

`steer`: layers × |α| on a few cases and features: for each layer an SAE is trained (or reused
from the cache, keyed like the demo's) on the demo's training corpus, mined over the held-out
corpus and explained by the lexicon, and the features the demo itself would select at that layer
(demo.yaml's `features.select`) are steered at ±α. Prints per (layer, α) how many +α texts newly
assert the feature's target concept (and how many −α texts lose it), how many steered texts stay
report-shaped, and the baselines' share. (Measured for the demo: docs/benchmarks.md.)

    python benchmarks/demo_prompt.py baselines [--variant current --variant unrelated4 ...] [--cases 16]
    python benchmarks/demo_prompt.py steer --layers 8 6 10 --alphas 25 50 80 [--cases 4] [--features 4] [--show]

Torch runs on one thread so that side-by-side CPU seconds are comparable on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Candidate prompts: (header sections, example studies) in steering/few_shot.py's format. "current" is
# what steering/few_shot.py ships; the others are kept as the record of what was compared.
_IND, _CMP, _PRI = ("indication", "INDICATION", True), ("comparison", "COMPARISON", True), \
    ("prior_report", "PRIOR REPORT", False)
_TEC = ("technique", "TECHNIQUE", True)
_NORMAL = "The lungs are clear. The heart size is normal. No pleural effusion or pneumothorax."
_PACER = "A left-sided pacemaker is present. The heart is mildly enlarged. There is a small right pleural effusion."
_CHF = "Moderate cardiomegaly is unchanged. Mild pulmonary edema. No focal consolidation or pneumothorax."
_THREE = (
    {"indication": "Cough.", "technique": "PA chest radiograph.", "comparison": "None.", "findings": _NORMAL},
    {"indication": "Pacemaker check.", "technique": "PA and lateral chest radiographs.", "comparison": "None.",
     "findings": _PACER},
    {"indication": "Heart failure.", "technique": "AP portable chest radiograph.",
     "comparison": "Chest radiograph from two days ago.", "prior_report": "Moderate cardiomegaly.", "findings": _CHF},
)
_UNRELATED = {"indication": "Pre-operative assessment before hip surgery.", "technique": "PA chest radiograph.",
              "comparison": "None.",
              "findings": "The heart and mediastinum are within normal limits. The lungs are clear. No pleural effusion."}
VARIANTS: dict[str, tuple[tuple, tuple]] = {
    "three": ((_IND, _CMP, _PRI), _THREE),  # the first demo prompt (12/16 report-shaped)
    "unrelated4": ((_IND, _CMP, _PRI), (_THREE[0], _THREE[1], _UNRELATED, _THREE[2])),
    "technique": ((_IND, _TEC, _CMP, _PRI), _THREE),  # the chest technique line in every header
    "technique_last": ((_IND, _CMP, _PRI, _TEC), _THREE),  # … right before FINDINGS:
    "technique_unrelated4": ((_IND, _CMP, _PRI, _TEC), (_THREE[0], _THREE[1], _UNRELATED, _THREE[2])),
    "technique_last_short": ((_IND, _CMP, _PRI, _TEC), tuple({**e, "technique": "Chest radiograph."} for e in _THREE)),
    "technique_last_two": ((_IND, _CMP, _PRI, _TEC), _THREE[:2]),
    # the case's own technique line before FINDINGS:, the examples without one (fewer prompt tokens)
    "technique_case_only": ((_IND, _CMP, _PRI, ("technique", "TECHNIQUE", False)),
                            tuple({k: v for k, v in e.items() if k != "technique"} for e in _THREE)),
}


def _load_cases(n: int) -> dict[str, dict]:
    path = ROOT / "protocols" / "data" / "demo_cases.jsonl"
    cases = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {c["case_id"]: c for c in cases[:n]}


def _demo_generation():
    """The demo protocol's layer, steering and generation settings (one source: protocols/demo.yaml)."""
    import yaml

    from steering.engine import GenerationSettings

    p = yaml.safe_load((ROOT / "protocols" / "demo.yaml").read_text())
    g = p["generation"]
    settings = GenerationSettings(max_new_tokens=g["max_new_tokens"], do_sample=g.get("do_sample", False),
                                  stop=tuple(g.get("stop", ())), no_repeat_ngram_size=g.get("no_repeat_ngram_size", 0))
    return p, settings


def _use_variant(name: str) -> None:
    import steering.few_shot as fs

    if not hasattr(_use_variant, "shipped"):
        _use_variant.shipped = (fs.SECTIONS, fs.EXAMPLES)  # type: ignore[attr-defined]
    fs.SECTIONS, fs.EXAMPLES = _use_variant.shipped if name == "current" else VARIANTS[name]  # type: ignore


def baselines(args: argparse.Namespace) -> None:
    from evaluation.report_shape import is_report_shaped
    from steering.demo_model import load_demo_adapter
    from steering.engine import SteeringEngine, SteeringSpec, plan_rows

    protocol, settings = _demo_generation()
    adapter = load_demo_adapter(prompt="few_shot", dtype=protocol["model"]["dtype"])
    cases = _load_cases(args.cases)
    summary = []
    for name in args.variant or ["current"]:
        _use_variant(name)
        n_prompt = sum(len(adapter.prompt_ids(c)) for c in cases.values()) / len(cases)
        engine = SteeringEngine(adapter, None, spec=SteeringSpec(layer=protocol["layer"]), settings=settings,
                                batch_size=len(cases))
        t0, c0 = time.perf_counter(), time.process_time()
        results = engine.generate(cases, plan_rows(list(cases), [], []))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        shaped = 0
        print(f"== {name}")
        for r in sorted(results, key=lambda r: r.row.case_id):
            ok = is_report_shaped(r.text)
            shaped += ok
            print(f"  {r.row.case_id} {'shaped' if ok else 'MISS  '} {r.finish_reason:6} {r.n_tokens:3} {r.text!r}")
        line = (f"variant={name} report_shaped={shaped}/{len(results)} prompt_tokens={n_prompt:.0f} "
                f"new_tokens={sum(r.n_tokens for r in results)} wall_s={wall:.0f} cpu_s={cpu:.0f}")
        print(line)
        summary.append(line)
    print("\n".join(summary))


def _layer_features(adapter, layer: int, work: Path) -> tuple[Path, list[tuple[str, str, float]]]:
    """SAE at `layer` (cached like the demo's), mined and lexicon-interpreted, then the demo's own
    `features.select` on it: [(feature id, first target concept, F1)]."""
    from protocols.cli import main
    from protocols.commands import demo
    from protocols.loader import load_protocol

    out = work / f"l{layer}"
    demo.install_demo(out)
    for name in (demo.FEATURES_PROTOCOL, demo.DEMO_PROTOCOL):  # the same files at another layer
        f = out / name
        f.write_text(f.read_text().replace("layer: 8", f"layer: {layer}")
                     .replace("demo_sae/layers.8", f"demo_sae/layers.{layer}"))
    demo.demo_sae(out, layer, adapter, progress=False)
    runs = out / "runs"
    feats = out / demo.FEATURES_PROTOCOL
    for argv in (["mine", str(feats), "--corpus", str(out / demo.MINING_CORPUS), "--runs-dir", str(runs),
                  *demo.MINE_ARGS, "--no-progress"],
                 ["interpret", str(feats), "--runs-dir", str(runs), "--explainer", "lexicon", "--no-progress"]):
        if main(argv) != 0:
            raise SystemExit(f"radsteer {argv[0]} failed for layer {layer}")
    items = load_protocol(out / demo.DEMO_PROTOCOL).protocol.features.items
    chosen = [(i.id, i.targets[0], float(i.interpretability or 0)) for i in items]
    return out / demo.SAE_DIR / f"layers.{layer}", chosen


def _asserts(text: str, concept: str, extractor) -> bool:
    return any(e.concept == concept and e.assertion == "present" for e in extractor.extract_one(text))


def steer(args: argparse.Namespace) -> None:
    from evaluation.lexicon import LexiconExtractor
    from evaluation.report_shape import is_report_shaped
    from steering.demo_model import load_demo_adapter
    from steering.engine import SteeringEngine, SteeringSpec, plan_rows
    from steering.sae_loaders import load_feature_bank

    protocol, settings = _demo_generation()
    adapter = load_demo_adapter(prompt="few_shot", dtype=protocol["model"]["dtype"])
    cases = _load_cases(args.cases)
    lex = LexiconExtractor()
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for layer in args.layers:
            t0 = time.perf_counter()
            path, chosen = _layer_features(adapter, layer, Path(tmp))
            chosen = chosen[: args.features]
            print(f"layer {layer}: features {chosen} ({time.perf_counter() - t0:.0f} s for SAE, mining, lexicon)")
            bank = load_feature_bank(str(path), "sparsify")
            ids = [fid for fid, _, _ in chosen]
            target = {fid: c for fid, c, _ in chosen}
            st = protocol["steering"]
            spec = SteeringSpec(layer=layer, space=st["vector_space"], unit_norm=st["unit_norm"],
                                positions=st["positions"])
            engine = SteeringEngine(adapter, bank, spec=spec, settings=settings, batch_size=args.batch_size)
            base = {r.row.case_id: r.text for r in engine.generate(cases, plan_rows(list(cases), [], []))}
            base_shaped = sum(is_report_shaped(t) for t in base.values())
            for a in args.alphas:
                rows = [r for r in plan_rows(list(cases), ids, [-a, a]) if not r.is_baseline]
                t1 = time.perf_counter()
                res = engine.generate(cases, rows)
                gained = sum(r.row.alpha > 0 and _asserts(r.text, target[r.row.feature_id], lex)
                             and not _asserts(base[r.row.case_id], target[r.row.feature_id], lex) for r in res)
                plus = [r for r in res if r.row.alpha > 0]
                lost = sum(r.row.alpha < 0 and _asserts(base[r.row.case_id], target[r.row.feature_id], lex)
                           and not _asserts(r.text, target[r.row.feature_id], lex) for r in res)
                had = sum(_asserts(base[c], target[f], lex) for c in cases for f in ids)
                shaped = sum(is_report_shaped(r.text) for r in res)
                per = {target[f]: sum(r.row.feature_id == f and r.row.alpha > 0 and
                                      _asserts(r.text, target[f], lex) for r in res) for f in ids}
                line = (f"layer={layer} alpha=±{a:g} +α_gains_target={gained}/{len(plus)} −α_removes={lost}/{had} "
                        f"steered_shaped={shaped}/{len(res)} baselines_shaped={base_shaped}/{len(base)} "
                        f"per_concept_+α={per} ({time.perf_counter() - t1:.0f} s)")
                print(line)
                if args.show:
                    for r in res:
                        print(f"    {r.row.case_id} {target[r.row.feature_id]} {r.row.alpha:+g}: {r.text!r}")
                lines.append(line)
    print("\n".join(lines))


def main() -> None:
    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("baselines")
    b.add_argument("--variant", action="append", choices=["current", *VARIANTS])
    b.add_argument("--cases", type=int, default=16)
    s = sub.add_parser("steer")
    s.add_argument("--layers", type=int, nargs="+", default=[8])
    s.add_argument("--alphas", type=float, nargs="+", default=[50.0])
    s.add_argument("--cases", type=int, default=4)
    s.add_argument("--features", type=int, default=6, help="the first N features the demo selects (best F1 first)")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--show", action="store_true", help="print every steered text")
    args = parser.parse_args()
    baselines(args) if args.cmd == "baselines" else steer(args)


if __name__ == "__main__":
    main()
