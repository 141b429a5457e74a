"""`radsteer demo [--out DIR]`: the whole pipeline on the bundled SmolLM2 model, offline, on the CPU.

Copies the bundled `demo.yaml` and its cases into DIR (so the demo's protocol is a file you can
read, edit and re-run with `radsteer run DIR/demo.yaml --runs-dir DIR/runs`), builds the concept
vectors there if needed, runs sweep → evaluate → stats → report, prints what it found — how often
each concept is mentioned by baseline, +α and −α reports, and the on-target rates — and ends with
the HTML report's path. Re-running resumes: nothing stored is generated again.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

import pandas as pd

from steering.errors import RadsteerError
from steering.store.files import write_atomic

DEMO_PROTOCOL = "demo.yaml"
DEMO_CASES = Path("data") / "demo_cases.jsonl"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="directory for the demo's protocol, vectors and run "
                        "(default: demo_out)")
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first N cases (a quicker look; the full demo uses 20)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def install_demo(out: Path) -> Path:
    """Copy the bundled demo protocol and cases into `out`; returns the protocol's path there."""
    bundled = resources.files("protocols")
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_CASES).parent.mkdir(parents=True, exist_ok=True)
    for rel in (Path(DEMO_PROTOCOL), DEMO_CASES):
        src = bundled.joinpath(*rel.parts)
        if not src.is_file():
            raise RadsteerError(f"the bundled demo file protocols/{rel} is missing: reinstall radsteer")
        dst = out / rel
        data = src.read_bytes()
        if not dst.exists():
            write_atomic(dst, data)
        elif dst.read_bytes() != data:  # edited by the user (README: "edit DIR/demo.yaml"): keep it
            raise RadsteerError(
                f"{dst} differs from the bundled demo file and `radsteer demo` will not overwrite it: run "
                f"`radsteer run {out / DEMO_PROTOCOL} --runs-dir {out / 'runs'}` to use your edits, or "
                f"choose another --out")
    return out / DEMO_PROTOCOL


def concept_mentions(run_dir: Path, backend: str = "lexicon") -> pd.DataFrame:
    """Per feature: the share of baseline, +α and −α reports that assert one of its target concepts
    as present (lexicon entities), i.e. whether steering moved the concept in its direction."""
    from steering.store import BASELINE_FEATURE, StudyStore

    with StudyStore.open(run_dir) as store:
        gens = store.dataframe("generations")
        ext = store.dataframe("extractions")
        feats = store.dataframe("features")
    if gens.empty or ext.empty:
        return pd.DataFrame()
    ext = ext[ext.backend == backend]
    present = {
        int(r.generation_id): {e.get("concept") for e in (r.entities or []) if e.get("assertion") == "present"}
        for r in ext.itertuples()
    }
    base = gens[gens.feature_id == BASELINE_FEATURE]
    rows = []
    for f in feats.itertuples():
        targets = set(f.target_concepts or [])

        def share(df: pd.DataFrame, targets: set[str] = targets) -> tuple[int, int]:
            ids = [int(i) for i in df.id if int(i) in present]
            return sum(bool(present[i] & targets) for i in ids), len(ids)

        mine = gens[gens.feature_id == f.feature_id]
        row = {"feature": f.feature_id}
        for name, df in (("baseline", base), ("+α", mine[mine.alpha > 0]), ("−α", mine[mine.alpha < 0])):
            k, n = share(df)
            row[name] = f"{k}/{n}"
        rows.append(row)
    return pd.DataFrame(rows)


def run(args: argparse.Namespace) -> int:
    from protocols.plan import check_study
    from protocols.runner import run_study, study_and_config

    if args.limit is not None and args.limit < 1:
        raise RadsteerError(f"--limit must be ≥ 1, not {args.limit}")
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    out = Path(args.out)
    protocol = install_demo(out)
    study, config = study_and_config(protocol, "demo", **{"study.runs_dir": str(out / "runs"), "study.limit": args.limit,
                                                          "ui.no_progress": args.no_progress or None})
    study.check_run_dir()
    checked = check_study(study)
    print(f"radsteer demo: {len(study.cases)} cases × {len(checked.feature_ids)} concepts × "
          f"{len([a for a in study.protocol.alphas if a])} α on {study.protocol.model.kind} "
          f"(protocol: {protocol})")
    result = run_study(study, config, checked=checked)
    print()
    print("What the demo found")
    mentions = concept_mentions(study.run_dir)
    if not mentions.empty:
        print("  reports asserting the concept (lexicon), baseline vs steered towards (+α) / away (−α):")
        for line in mentions.to_string(index=False).splitlines():
            print(f"    {line}")
    stats = result.stats
    if stats is not None and not stats.pos_neg.empty:
        print(f"  on-target rate per concept ({stats.primary_method}; the α = 0 baseline is 0 by definition):")
        pn = stats.pos_neg.rename(columns={"feature_id": "feature", "p_on_target_pos": "+α on-target",
                                           "p_on_target_neg": "−α on-target"})
        for line in pn[["feature", "+α on-target", "−α on-target", "n_pos", "n_neg"]].to_string(
                index=False, float_format=lambda x: f"{x:.2f}").splitlines():
            print(f"    {line}")
        for r in stats.method_rates[stats.method_rates.method == stats.primary_method].itertuples(index=False):
            print(f"  pooled {'+α' if r.direction > 0 else '−α'}: on-target {r.p_on_target:.1%} "
                  f"[{r.p_on_target_low:.1%}, {r.p_on_target_high:.1%}], off-target {r.p_off_target:.1%} (n={r.n})")
    for line in result.lines():
        print(f"  {line}")
    if result.report_path is None:
        raise RadsteerError("the demo produced no report (see the messages above)")
    print(f"report: {result.report_path}")
    return 0
