"""`radsteer generate`: steer one case and show baseline and steered reports side by side.

The quickest way to see what a feature does:

    radsteer generate --model-kind demo --vectors runs/demo/vectors --feature pleural_effusion \
        --alpha -8 --alpha 8 --case '{"indication": "Dyspnoea", "technique": "PA"}'
"""

from __future__ import annotations

import argparse
import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

from steering.errors import RadsteerError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-kind", choices=("demo", "hf_causal_lm", "maira2"), default="demo")
    parser.add_argument("--model", help="local model directory (not needed for the demo model)")
    parser.add_argument("--sae", "--vectors", dest="bank", help="feature bank: ae.pt, SAELens or concept-vector folder")
    parser.add_argument("--sae-format", default="auto", choices=("auto", "dictionary_learning", "saelens", "sparsify"))
    parser.add_argument("--normalisation-factor", type=float, default=None,
                        help="SAE activation normalisation factor (vector space sae_input)")
    parser.add_argument("--vector-space", default="residual", choices=("residual", "sae_input"))
    parser.add_argument("--unit-norm", action="store_true")
    parser.add_argument("--feature", help="feature id to steer (e.g. f1599 or a concept id)")
    parser.add_argument("--alpha", type=float, action="append", help="steering coefficient (repeatable)")
    parser.add_argument("--layer", type=int, default=None, help="decoder layer whose output is steered (default: "
                        "the SAE's own layer, from its hook name; an SAE that names none needs --layer)")
    parser.add_argument("--positions", default="all", choices=("all", "prompt", "generated"))
    parser.add_argument("--exclude", action="append", choices=("special", "image"), default=[])
    parser.add_argument("--case", required=True,
                        help="the case as inline JSON, or the path of a JSON file (image paths relative to it)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="default: the model's (300 for MAIRA-2, 450 grounded; 64 otherwise)")
    parser.add_argument("--image-features", choices=("feature_maps", "hidden_states"), default="feature_maps",
                        help="MAIRA-2: the vision output fed to the projector (default feature_maps)")
    parser.add_argument("--grounded", action="store_true",
                        help="MAIRA-2: grounded reporting; each report's sentences with their boxes on the frontal "
                             "image are printed after it")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print JSON instead of columns")


def read_case(spec: str) -> tuple[dict[str, Any], Path | None]:
    path = Path(spec)
    if not spec.lstrip().startswith("{") and path.exists():
        try:
            case = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise RadsteerError(f"{path}: not valid JSON: {exc.msg} (line {exc.lineno})") from None
        source: Path | None = path
    else:
        try:
            case = json.loads(spec)
        except json.JSONDecodeError as exc:
            raise RadsteerError(f"--case is neither a JSON file nor valid JSON: {exc.msg}") from None
        source = None
    if not isinstance(case, dict):
        raise RadsteerError("--case must be a JSON object of report inputs")
    case.setdefault("case_id", "case")
    return case, source


def side_by_side(left_title: str, left: str, right_title: str, right: str) -> str:
    width = max(60, shutil.get_terminal_size((120, 20)).columns)
    col = (width - 3) // 2
    lwrap = [line for para in left.splitlines() or [""] for line in (textwrap.wrap(para, col) or [""])]
    rwrap = [line for para in right.splitlines() or [""] for line in (textwrap.wrap(para, col) or [""])]
    rows = [f"{left_title:<{col}} │ {right_title}", f"{'─' * col}─┼─{'─' * col}"]
    for i in range(max(len(lwrap), len(rwrap))):
        lft = lwrap[i] if i < len(lwrap) else ""
        rgt = rwrap[i] if i < len(rwrap) else ""
        rows.append(f"{lft:<{col}} │ {rgt}")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    from steering.engine import GenerationSettings, SteeringEngine, SteeringSpec, plan_rows
    from steering.models import load_adapter
    from steering.sae_loaders import load_feature_bank

    if args.grounded and args.model_kind != "maira2":
        raise RadsteerError(f"--grounded applies to MAIRA-2 only, not --model-kind {args.model_kind}")
    if bool(args.feature) != bool(args.bank):
        raise RadsteerError("--feature and --sae/--vectors go together (or leave both out for the baseline only)")
    alphas = args.alpha or ([] if not args.feature else [10.0])
    case, source = read_case(args.case)
    if args.model_kind == "maira2":
        from steering.maira2.cases import resolve_case_images

        case = resolve_case_images(case, source or Path.cwd() / "case.json")
    bank = None
    if args.bank:
        bank = load_feature_bank(args.bank, args.sae_format, normalisation_factor=args.normalisation_factor,
                                 layer=args.layer)
        bank.canonical_id(args.feature)  # an unknown feature is the first thing to say
        if bank.layer is None:  # never guess: a wrong layer steers silently and plausibly
            why = bank.provenance.get("layer_note") or "it names no layer"
            raise RadsteerError(f"{args.bank}: no steering layer known ({why}); give --layer L, the decoder layer "
                                f"whose output the SAE was trained on")
    feature = bank.canonical_id(args.feature) if bank is not None else None  # fail before loading a model
    adapter = load_adapter(args.model_kind, args.model, dtype=args.dtype, device=args.device,
                           image_features=args.image_features, grounded=args.grounded)
    layer = args.layer if args.layer is not None else (bank.layer if bank is not None else adapter.default_layer)
    max_new_tokens = args.max_new_tokens or adapter.default_max_new_tokens
    spec = SteeringSpec(layer=layer, space=args.vector_space, unit_norm=args.unit_norm,
                        positions=args.positions, exclude=tuple(args.exclude))
    engine = SteeringEngine(adapter, bank, spec=spec, settings=GenerationSettings(max_new_tokens=max_new_tokens),
                            batch_size=len(alphas) + 1)
    rows = plan_rows([case["case_id"]], [feature] if feature else [], alphas)
    results = engine.generate({case["case_id"]: case}, rows)
    baseline = next(r for r in results if r.row.is_baseline)
    steered = [r for r in results if not r.row.is_baseline]
    if args.json:
        sides = [{"alpha": r.row.alpha, "text": r.text,
                  **({"grounding": r.grounding} if r.grounding is not None else {})} for r in steered]
        print(json.dumps({"layer": layer, "feature": feature, "baseline": baseline.text,
                          **({"baseline_grounding": baseline.grounding} if baseline.grounding is not None else {}),
                          "steered": sides}, indent=2))
        return 0
    print(f"model {adapter.name} · layer {layer} ({adapter.layer_module_path(layer)}) · positions {args.positions}")
    if not steered:
        print(side_by_side("baseline (α = 0)", baseline.text, "", ""))
        print(boxes_text("baseline", baseline.grounding))
    for r in steered:
        desc = bank.descriptions.get(feature, "") if bank is not None else ""
        title = f"steered: {feature} α = {r.row.alpha:+g}" + (f" ({desc})" if desc else "")
        print(side_by_side("baseline (α = 0)", baseline.text, title, r.text))
        print(boxes_text("baseline", baseline.grounding) + boxes_text(f"α = {r.row.alpha:+g}", r.grounding))
        print()
    return 0


def boxes_text(side: str, grounding: list[dict[str, Any]] | None) -> str:
    """A grounded report's sentences that have boxes, one a line with their boxes (x0, y0, x1, y1
    normalised to the frontal image's centre square); "" when the report was not grounded."""
    if grounding is None:
        return ""
    lines = [f"  {side}: {p['text']}  " + " ".join("[" + ", ".join(f"{v:.3f}" for v in b) + "]" for b in p["boxes"])
             for p in grounding if p.get("boxes")]
    return "\n".join([f"boxes ({side}):" if lines else f"boxes ({side}): none", *lines]) + "\n"
