"""A study's rows as tidy DataFrames: the one place statistics and reports read the store.

Every labelling method — entity diff, LLM judge, combined, and the radiologists' majority —
ends up in one long `labels` frame (one row per steered generation × method with a valid
label), so rates, dose–response and agreement are computed the same way for all of them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steering.store import DB_FILENAME, StudyStore, has_study, read_manifest

LABELS: tuple[str, ...] = ("on", "off", "both", "none")
AUTOMATED_METHODS: tuple[str, ...] = ("entity_diff", "llm_judge", "combined")
RADIOLOGIST = "radiologist_majority"
METHODS: tuple[str, ...] = (*AUTOMATED_METHODS, RADIOLOGIST)
_DESIGN_COLS = ["generation_id", "case_id", "feature_id", "alpha", "direction", "abs_alpha", "settings_hash"]


@dataclass
class StudyData:
    """Everything the statistics and the report need, read once."""

    run_dir: Path | None
    cases: pd.DataFrame
    features: pd.DataFrame
    generations: pd.DataFrame  # every generation, baselines included (column `id`)
    steered: pd.DataFrame  # steered generations beside their baseline (generations_with_baselines)
    verdicts: pd.DataFrame  # raw verdict rows, errors included
    annotations: pd.DataFrame  # raw annotation rows (both tasks)
    reads: pd.DataFrame  # change-task reads that carry a valid label (skips removed)
    majority: pd.DataFrame  # generation_id, label (None on a tie), n_reads, tie
    labels: pd.DataFrame  # long: design columns + method, label, on_target, off_target
    manifest: dict[str, Any] = field(default_factory=dict)
    protocol_text: str | None = None
    protocol: dict[str, Any] | None = None
    protocol_error: str | None = None
    interpretations: pd.DataFrame = field(default_factory=pd.DataFrame)  # feature_interpretations (issue 13)
    feature_stats: pd.DataFrame = field(default_factory=pd.DataFrame)  # mined frequency per feature
    adjudications: pd.DataFrame = field(default_factory=pd.DataFrame)  # final answers (issue 14)
    queue: pd.DataFrame = field(default_factory=pd.DataFrame)  # queue_items: who was assigned what


def majority_labels(reads: pd.DataFrame, adjudicated: dict[int, str] | None = None) -> pd.DataFrame:
    """The radiologists' label per generation: the adjudicated one where present, else the majority.

    Rule: the most frequent label among the non-skipped reads; when two or more labels tie
    for most frequent (e.g. two readers who disagree) there is no majority — `label` is None
    and `tie` True, and the generation is left out of every radiologist-majority statistic
    (and counted as such in the report's flow), rather than broken by an arbitrary order.
    An adjudicator's final label (`adjudicated`: generation id → label) replaces the vote;
    `source` says which ("adjudicated", "majority", "tie").
    """
    cols = ["generation_id", "label", "n_reads", "tie", "source"]
    adjudicated = {int(k): v for k, v in (adjudicated or {}).items() if v in LABELS}
    votes = {int(g): list(labs) for g, labs in reads.groupby("generation_id")["label"]} if not reads.empty else {}
    out = []
    for gid in sorted(set(votes) | set(adjudicated)):
        labs = votes.get(gid, [])
        if gid in adjudicated:
            out.append((gid, adjudicated[gid], len(labs), False, "adjudicated"))
            continue
        counts = Counter(labs).most_common()
        tie = len(counts) > 1 and counts[0][1] == counts[1][1]
        out.append((gid, None if tie else counts[0][0], len(labs), tie, "tie" if tie else "majority"))
    return pd.DataFrame(out, columns=cols)


def _adjudicated_labels(adjudications: pd.DataFrame) -> dict[int, str]:
    """Change-task final labels by generation id (item keys are generation ids as text)."""
    if adjudications.empty:
        return {}
    out = {}
    for r in adjudications[adjudications.task == "change"].itertuples(index=False):
        ans = r.answers if isinstance(r.answers, dict) else {}
        if str(r.item_key).isdigit() and ans.get("label") in LABELS:
            out[int(r.item_key)] = ans["label"]
    return out


def _parse_reads(annotations: pd.DataFrame) -> pd.DataFrame:
    cols = ["generation_id", "annotator", "label", "interpretation_valid", "coherent", "flagged", "seconds"]
    if annotations.empty:
        return pd.DataFrame(columns=cols)
    ch = annotations[annotations.task == "change"]
    rows = []
    for r in ch.itertuples(index=False):
        ans = r.answers if isinstance(r.answers, dict) else {}
        if ans.get("skipped") or ans.get("label") not in LABELS:
            continue
        gid = r.generation_id if r.generation_id is not None and not pd.isna(r.generation_id) else r.item_key
        rows.append((int(gid), r.annotator, ans["label"], ans.get("interpretation_valid"), ans.get("coherent"),
                     bool(ans.get("flagged", False)), r.seconds))
    return pd.DataFrame(rows, columns=cols)


def _read_protocol(run_dir: Path | None) -> tuple[str | None, dict[str, Any] | None, str | None]:
    if run_dir is None:
        return None, None, None
    path = run_dir / "protocol.yaml"
    if not path.exists():
        return None, None, None
    text = path.read_text(errors="replace")
    try:
        import yaml

        data = yaml.safe_load(text)
    except Exception as exc:  # a broken frozen protocol is shown, not fatal, in a report
        return text, None, f"{path}: not valid YAML ({type(exc).__name__}: {str(exc).splitlines()[0]})"
    return text, data if isinstance(data, dict) else None, None


def build_labels(steered: pd.DataFrame, verdicts: pd.DataFrame, majority: pd.DataFrame) -> pd.DataFrame:
    """The long labels frame: valid verdicts of each method plus the radiologist majority."""
    cols = [*_DESIGN_COLS, "method", "label", "on_target", "off_target"]
    if steered.empty:
        return pd.DataFrame(columns=cols)
    design = steered[["generation_id", "case_id", "feature_id", "alpha", "settings_hash"]].copy()
    design["alpha"] = design["alpha"].astype(float)
    design["direction"] = np.sign(design["alpha"]).astype(int)
    design["abs_alpha"] = design["alpha"].abs()
    parts = []
    if not verdicts.empty:
        v = verdicts[verdicts.label.isin(LABELS)][["generation_id", "method", "label"]]
        parts.append(v)
    if not majority.empty:
        m = majority[majority.label.notna()][["generation_id", "label"]].assign(method=RADIOLOGIST)
        parts.append(m)
    if not parts:
        return pd.DataFrame(columns=cols)
    long = pd.concat(parts, ignore_index=True)
    long["generation_id"] = long["generation_id"].astype(int)
    out = design.merge(long, on="generation_id", how="inner")
    out["on_target"] = out.label.isin(["on", "both"])
    out["off_target"] = out.label.isin(["off", "both"])
    return out[cols].reset_index(drop=True)


def load_study(run_dir: str | Path) -> StudyData:
    """Read a run directory (study.sqlite, manifest.json, protocol.yaml — the last two optional).

    A missing directory or database raises FileNotFoundError with a one-line message (the CLI
    turns it into a RadsteerError; `evaluation` does not import `protocols`). Nothing is created.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory (give the directory that holds {DB_FILENAME})")
    if not has_study(run_dir):
        raise FileNotFoundError(f"{run_dir}: no {DB_FILENAME} here — run `radsteer sweep` first or give the run directory")
    store = StudyStore.open(run_dir)
    try:
        data = from_store(store, run_dir=run_dir)
    finally:
        store.close()
    return data


def from_store(store: StudyStore, run_dir: Path | None = None) -> StudyData:
    """Read an open store; `run_dir` (if any) supplies the manifest and frozen protocol."""
    generations = store.dataframe("generations")
    steered = store.generations_with_baselines()
    verdicts = store.dataframe("verdicts")
    annotations = store.dataframe("annotations")
    reads = _parse_reads(annotations)
    adjudications = pd.DataFrame(store.adjudications(), columns=["task", "item_key", "adjudicator", "answers",
                                                                 "reason", "readers", "seconds"])
    majority = majority_labels(reads, _adjudicated_labels(adjudications))
    labels = build_labels(steered, verdicts, majority)
    try:
        manifest = read_manifest(run_dir) if run_dir is not None else {}
    except ValueError as exc:  # JSON error: show it instead of the manifest
        manifest = {"error": f"manifest.json could not be read: {exc}"}
    text, proto, perr = _read_protocol(run_dir)
    return StudyData(
        run_dir=run_dir, cases=store.dataframe("cases"), features=store.dataframe("features"),
        generations=generations, steered=steered, verdicts=verdicts, annotations=annotations, reads=reads,
        majority=majority, labels=labels, manifest=manifest, protocol_text=text, protocol=proto,
        protocol_error=perr, interpretations=store.dataframe("feature_interpretations"),
        feature_stats=store.dataframe("feature_stats"), adjudications=adjudications,
        queue=store.dataframe("queue_items"),
    )
