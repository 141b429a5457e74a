"""`radsteer demo [--out DIR]`: the paper's pipeline in miniature on the bundled SmolLM2 model, offline, on a CPU.

1. **Files**: copies the bundled protocols (`demo_features.yaml`, `demo.yaml`) and cases into DIR
   and writes two corpora of synthetic reports (evaluation/synthetic.py): one to train the SAE,
   a held-out one to mine it.
2. **SAE**: a TopK SAE on layer L of the model, trained by EleutherAI's sparsify (`radsteer sae
   train`) once per machine and cached like the model conversion; copied into DIR/demo_sae.
3. **Interpretation** (demo_features.yaml): `radsteer mine` then `radsteer interpret --explainer
   lexicon` — every feature explained and scored by detection F1.
4. **Steering study** (demo.yaml): the features with F1 ≥ 0.75 whose targets are findings or
   devices (at most 6) → sweep ±α → evaluate → stats → report.

It prints what it found — the selected features, how often each target concept is asserted by
baseline, +α and −α reports, the on-target rates — and ends with the HTML report's path. Every
step resumes: run it again and nothing stored is computed again. Edit DIR/demo.yaml and run
`radsteer run DIR/demo.yaml --runs-dir DIR/runs` to make it your own.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import shutil
import time
from importlib import resources
from pathlib import Path

import pandas as pd

from protocols.config import add_options
from steering.errors import RadsteerError
from steering.store.files import write_atomic

DEMO_PROTOCOL = "demo.yaml"
FEATURES_PROTOCOL = "demo_features.yaml"
DEMO_CASES = Path("data") / "demo_cases.jsonl"
TRAIN_CORPUS = Path("data") / "corpus.jsonl"  # the SAE's training reports
MINING_CORPUS = Path("data") / "mining_corpus.jsonl"  # held-out reports the features are mined on
SAE_DIR = "demo_sae"
# The demo SAE (sizes chosen to train in about a minute on 2 cores; see docs/benchmarks.md).
# ~61k training tokens, 1152 latents: the layer-L forward passes, not the SAE, dominate the cost.
CORPUS_REPORTS, CORPUS_SEED = 1000, 0
MINING_REPORTS, MINING_SEED = 300, 1
SAE_SETTINGS = {"expansion_factor": 2, "k": 16, "seq_len": 64, "batch_size": 16, "epochs": 1, "seed": 0}
MINE_ARGS = ["--top-k", "20", "--samples", "16", "--zero-samples", "40", "--batch-size", "16"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="directory for the demo's protocols, SAE and runs "
                        "(default: demo_out)")
    add_options(parser, "demo")  # --limit (of the steering study's 20 cases), --threads, --no-progress, --store-url


def _install(dst: Path, data: bytes) -> None:
    """Write a demo file unless the user's edited copy is there (never overwritten)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        write_atomic(dst, data)
    elif dst.read_bytes() != data:  # edited by the user (README: "edit DIR/demo.yaml"): keep it
        out = dst.parent.parent if dst.parent.name == "data" else dst.parent
        raise RadsteerError(
            f"{dst} differs from the bundled demo file and `radsteer demo` will not overwrite it: run "
            f"`radsteer run {out / DEMO_PROTOCOL} --runs-dir {out / 'runs'}` to use your edits, or "
            f"choose another --out")


def install_demo(out: Path) -> Path:
    """Copy the bundled demo protocols and cases into `out` and write its corpora; returns demo.yaml's path."""
    from evaluation.synthetic import report_corpus_bytes

    bundled = resources.files("protocols")
    out.mkdir(parents=True, exist_ok=True)
    for rel in (Path(DEMO_PROTOCOL), Path(FEATURES_PROTOCOL), DEMO_CASES):
        src = bundled.joinpath(*rel.parts)
        if not src.is_file():
            raise RadsteerError(f"the bundled demo file protocols/{rel} is missing: reinstall radsteer")
        _install(out / rel, src.read_bytes())
    _install(out / TRAIN_CORPUS, report_corpus_bytes(CORPUS_REPORTS, seed=CORPUS_SEED))
    _install(out / MINING_CORPUS, report_corpus_bytes(MINING_REPORTS, seed=MINING_SEED, prefix="mine"))
    return out / DEMO_PROTOCOL


def demo_sae(out: Path, layer: int, adapter, *, progress: bool):
    """Train the demo SAE once per machine (user cache, under a lock) and copy it to out/demo_sae."""
    from steering.demo_model import DEMO_GGUF, cache_dir
    from steering.sae_training import META_FILE, SAETrainSettings, read_meta, train_sae, training_key
    from steering.store.manifest import sha256_file

    settings = SAETrainSettings(layer=layer, **SAE_SETTINGS)
    corpus = out / TRAIN_CORPUS
    model_id = f"demo:{adapter.name}:{DEMO_GGUF}"  # the cache's path must not change the key
    key = training_key(adapter, sha256_file(corpus), settings, model_id)
    cached = cache_dir() / "saes" / f"{adapter.name.lower()}-l{layer}-{key}"
    cached.parent.mkdir(parents=True, exist_ok=True)
    with open(cached.parent / ".lock", "w") as lock:  # two demos at once: one trains, the other waits
        fcntl.flock(lock, fcntl.LOCK_EX)
        trained = train_sae(adapter, corpus, cached, settings, progress=progress, model_id=model_id)
    dest = out / SAE_DIR
    hook = trained.path.name
    if dest.exists():
        meta = read_meta(dest / hook)
        if meta is None:
            raise RadsteerError(f"{dest} was not written by `radsteer demo`; it is left untouched: choose another --out")
        if meta.get("key") == key:
            return trained
    stage = dest.with_name(f".{dest.name}.new")
    shutil.rmtree(stage, ignore_errors=True)
    shutil.copytree(trained.path, stage / hook)
    if dest.exists():  # ours, from other settings: replaced by renames
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        stage.rename(dest)
        shutil.rmtree(old)
    else:
        stage.rename(dest)
    assert (dest / hook / META_FILE).exists()
    return trained


def _cli(*argv: str) -> None:
    """Run a radsteer subcommand in this process; a failure stops the demo."""
    from protocols.cli import main

    if main(list(argv)) != 0:
        raise RadsteerError(f"the demo stopped at `radsteer {' '.join(argv[:2])}` (see the error above)")


def selected_features(run_dir: Path) -> pd.DataFrame:
    """The steered features with their interpretations (description, targets, detection F1)."""
    from steering.store import StudyStore

    manifest = json.loads((run_dir / "manifest.json").read_text()) if (run_dir / "manifest.json").exists() else {}
    sel = manifest.get("feature_selection") or {}
    path = Path(sel.get("interpretations", ""))
    if not sel or not path.is_file():
        return pd.DataFrame()
    interp = pd.read_csv(path, dtype={"feature_id": str})
    with StudyStore.open(run_dir) as store:
        ids = list(store.dataframe("features").feature_id)
    interp = interp[interp.feature_id.isin(ids)].sort_values(["f1", "feature_id"], ascending=[False, True])
    return interp[["feature_id", "description", "targets", "f1", "precision", "recall"]]


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


def report_shaped_share(run_dir: Path) -> tuple[int, int] | None:
    """(baselines that read as findings sections, baselines) — see evaluation/report_shape.py."""
    from evaluation.report_shape import report_shaped_count
    from steering.store import BASELINE_FEATURE, StudyStore

    with StudyStore.open(run_dir) as store:
        gens = store.dataframe("generations")
    if gens.empty:
        return None
    return report_shaped_count(gens[gens.feature_id == BASELINE_FEATURE].text.tolist())


class _Clock:
    """Wall and CPU seconds per demo step (CPU time shows the work when other jobs share the cores)."""

    def __init__(self) -> None:
        self.start = self.last = (time.perf_counter(), time.process_time())
        self.laps: list[tuple[str, float, float]] = []

    def lap(self, name: str) -> None:
        now = (time.perf_counter(), time.process_time())
        self.laps.append((name, now[0] - self.last[0], now[1] - self.last[1]))
        self.last = now

    def summary(self) -> str:
        total = (self.last[0] - self.start[0], self.last[1] - self.start[1])
        parts = ", ".join(f"{n} {w:.0f} s" for n, w, _ in self.laps)
        return f"{total[0]:.0f} s ({parts}); CPU {total[1]:.0f} s"


def run(args: argparse.Namespace) -> int:
    from protocols.config import resolve
    from protocols.plan import check_study
    from protocols.runner import run_study, study_and_config

    opts = resolve("demo", args, keys=("study.limit", "ui.threads", "ui.no_progress"))  # checked before any work
    if opts.ui.threads is not None:
        import torch

        torch.set_num_threads(opts.ui.threads)
    out = Path(args.out)
    protocol = install_demo(out)
    runs = out / "runs"
    progress = not opts.ui.no_progress
    quiet = [] if progress else ["--no-progress"]

    clock = _Clock()
    features_study, _ = study_and_config(out / FEATURES_PROTOCOL, "demo", **{"study.runs_dir": str(runs)})
    adapter = features_study.load_adapter()
    trained = demo_sae(out, features_study.protocol.layer, adapter, progress=progress)
    print(f"radsteer demo: {trained.summary()}")
    del adapter
    clock.lap("SAE")
    _cli("mine", str(out / FEATURES_PROTOCOL), "--corpus", str(out / MINING_CORPUS), "--runs-dir", str(runs),
         *MINE_ARGS, *quiet)
    clock.lap("mine")
    _cli("interpret", str(out / FEATURES_PROTOCOL), "--runs-dir", str(runs), "--explainer", "lexicon", *quiet)
    clock.lap("interpret")

    study, config = study_and_config(protocol, "demo", args, **{"study.runs_dir": str(runs)})  # --limit etc.
    study.check_run_dir()
    checked = check_study(study)
    print(f"radsteer demo: {len(study.cases)} cases × {len(checked.feature_ids)} SAE features × "
          f"{len([a for a in study.protocol.alphas if a])} α on {study.protocol.model.kind} "
          f"(protocol: {protocol})")
    result = run_study(study, config, checked=checked)
    clock.lap("steering study")
    print()
    print("What the demo found")
    chosen = selected_features(study.run_dir)
    if not chosen.empty:
        print("  features steered (lexicon explanation, detection F1 on held-out contexts; F1 ≥ 0.75, "
              "findings and devices):")
        for line in chosen.to_string(index=False, float_format=lambda x: f"{x:.2f}").splitlines():
            print(f"    {line}")
    mentions = concept_mentions(study.run_dir)
    if not mentions.empty:
        print("  reports asserting the feature's target concept (lexicon), baseline vs steered towards (+α) / "
              "away (−α):")
        for line in mentions.to_string(index=False).splitlines():
            print(f"    {line}")
    stats = result.stats
    if stats is not None and not stats.pos_neg.empty:
        print(f"  on-target rate per feature ({stats.primary_method}; the α = 0 baseline is 0 by definition):")
        pn = stats.pos_neg.rename(columns={"feature_id": "feature", "p_on_target_pos": "+α on-target",
                                           "p_on_target_neg": "−α on-target"})
        for line in pn[["feature", "+α on-target", "−α on-target", "n_pos", "n_neg"]].to_string(
                index=False, float_format=lambda x: f"{x:.2f}").splitlines():
            print(f"    {line}")
        for r in stats.method_rates[stats.method_rates.method == stats.primary_method].itertuples(index=False):
            print(f"  pooled {'+α' if r.direction > 0 else '−α'}: on-target {r.p_on_target:.1%} "
                  f"[{r.p_on_target_low:.1%}, {r.p_on_target_high:.1%}], off-target {r.p_off_target:.1%} (n={r.n})")
    shaped = report_shaped_share(study.run_dir)
    if shaped is not None:
        print(f"  baselines that read as findings sections: {shaped[0]}/{shaped[1]}")
    for line in result.lines():
        print(f"  {line}")
    print(f"  wall time: {clock.summary()}")
    if result.report_path is None:
        raise RadsteerError("the demo produced no report (see the messages above)")
    print(f"report: {result.report_path}")
    return 0
