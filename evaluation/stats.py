"""`compute_statistics`: every statistic of a study in one result object.

Modelled on statsmodels' result objects: compute once, then `summary()` for people and
`to_frames()` / `save()` for machines. Degenerate data (an empty study, one annotator, no
double reads, a single α, a feature that never hits its target) yields NaNs and a line in
`notes`, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation import agreement, correlation, dose_response, multiplicity, rates
from evaluation.study_data import AUTOMATED_METHODS, LABELS, METHODS, RADIOLOGIST, StudyData, load_study
from steering.store import DB_FILENAME
from steering.store.files import claim_dir, only_files_like, write_atomic


@dataclass
class StudyStatistics:
    """The statistics of one study (see `summary()`); tables are pandas DataFrames."""

    primary_method: str
    cell_rates: pd.DataFrame  # method × feature × direction × |α|
    feature_rates: pd.DataFrame  # method × feature × direction (pooled over |α|)
    method_rates: pd.DataFrame  # method × direction (pooled over features and |α|)
    pos_neg: pd.DataFrame  # per feature: on-target rate at +α and −α (primary method)
    spearman: correlation.SpearmanResult
    dose_fits: list[dose_response.DoseResponseFit]
    tests: pd.DataFrame  # per-cell binomial tests with Holm and BH adjustment
    kappa_vs_radiologist: pd.DataFrame  # per automated method: Cohen's κ vs radiologist majority
    confusions: dict[str, pd.DataFrame]  # method → confusion matrix vs radiologist majority
    inter_rater: pd.DataFrame  # Fleiss' κ, Krippendorff's α
    flow: pd.DataFrame  # stage, count, note
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    interpretation: Any = None  # evaluation.interpret_stats.InterpretationStats when features were interpreted
    reader: Any = None  # evaluation.reader_study.ReaderStudyStats when the study has annotations

    # ---- tables -----------------------------------------------------------------------------

    @property
    def dose_response(self) -> pd.DataFrame:
        cols = list(dose_response.DoseResponseFit("", 0, 0, 0, 0).row())
        return pd.DataFrame([f.row() for f in self.dose_fits], columns=cols)

    @property
    def dose_curves(self) -> pd.DataFrame:
        parts = [f.curve.assign(method=f.method, direction=f.direction) for f in self.dose_fits if not f.curve.empty]
        cols = ["method", "direction", "abs_alpha", "n", "observed", "fitted", "fitted_low", "fitted_high"]
        if not parts:
            return pd.DataFrame(columns=cols)
        return pd.concat(parts, ignore_index=True).reindex(columns=cols)

    def to_frames(self) -> dict[str, pd.DataFrame]:
        """Every table by name (the names of the CSV / Parquet files)."""
        conf = [c.reset_index().melt(id_vars="rows", var_name="radiologist_majority", value_name="count")
                .rename(columns={"rows": "automated"}).assign(method=m) for m, c in self.confusions.items()]
        return {
            "flow": self.flow,
            "rates_by_cell": self.cell_rates,
            "rates_by_feature": self.feature_rates,
            "rates_by_method": self.method_rates,
            "positive_vs_negative": self.pos_neg,
            "spearman": pd.DataFrame([self.spearman.to_dict() | {"method": self.primary_method}]),
            "dose_response": self.dose_response,
            "dose_response_curves": self.dose_curves,
            "feature_tests": self.tests,
            "kappa_vs_radiologist": self.kappa_vs_radiologist,
            "confusion_vs_radiologist": (pd.concat(conf, ignore_index=True) if conf else
                                         pd.DataFrame(columns=["automated", "radiologist_majority", "count",
                                                               "method"])),
            "inter_rater": self.inter_rater,
            "notes": pd.DataFrame({"note": self.notes}),
            **(self.interpretation.to_frames() if self.interpretation is not None else {}),
            **(self.reader.to_frames() if self.reader is not None else {}),
        }

    def save(self, out_dir: str | Path) -> list[Path]:
        """Write every table as CSV and Parquet under `out_dir`; returns the paths written."""
        out_dir = claim_dir(out_dir, "stats", what="statistics tables", recognise=_older_stats_dir)
        return write_tables(self.to_frames(), out_dir)

    # ---- text -------------------------------------------------------------------------------

    def summary(self) -> str:
        """A readable plain-text summary: flow, headline rates, correlation, dose–response, agreement."""
        lines = ["radsteer study statistics", "=" * 25]
        for r in self.flow.itertuples(index=False):
            lines.append(f"  {r.stage:<44} {r.count:>8}" + (f"  ({r.note})" if r.note else ""))
        lines.append("")
        lines.append("On-target rate (on ∪ both), Wilson 95% CI, pooled over features and |α|:")
        for r in self.method_rates.itertuples(index=False):
            lines.append(f"  {r.method:<22} {_dir(r.direction)}  n={r.n:<6} {_pct(r.p_on_target)} "
                         f"[{_pct(r.p_on_target_low)}, {_pct(r.p_on_target_high)}]   off-target {_pct(r.p_off_target)}")
        if self.method_rates.empty:
            lines.append("  (no labelled rows)")
        s = self.spearman
        lines.append("")
        lines.append(f"Positive vs negative steering ({self.primary_method}, on-target rate per feature): "
                     + (f"Spearman ρ = {s.rho:.2f} (bootstrap 95% CI {s.ci_low:.2f} to {s.ci_high:.2f}, "
                        f"{s.n} features, p = {_p(s.p_value)})" if np.isfinite(s.rho) else f"ρ undefined — {s.note}"))
        lines.append("")
        lines.append("Dose–response over |α| (GEE logistic, cases as clusters):")
        for f in self.dose_fits:
            if f.method != self.primary_method and f.method != RADIOLOGIST:
                continue
            est = (f"slope {f.slope:+.3f}/unit |α| (95% CI {f.slope_low:+.3f} to {f.slope_high:+.3f}), "
                   f"OR {f.odds_ratio_per_unit:.2f}, p = {_p(f.p_value)}, {f.cov_struct}, {f.cov_type} SE"
                   if np.isfinite(f.slope) else "not estimated")
            lines.append(f"  {f.method:<22} {_dir(f.direction)}  {est}" + (f"  [{f.note}]" if f.note else ""))
        if not self.dose_fits:
            lines.append("  (no labelled rows)")
        lines.append("")
        lines.append("Agreement with the radiologists (adjudicated answer where present, else majority; "
                     "Cohen's κ, 95% CI):")
        for r in self.kappa_vs_radiologist.itertuples(index=False):
            lines.append(f"  {r.method:<22} n={r.n:<5} " + (f"κ = {r.kappa:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"
                         if np.isfinite(r.kappa) else "κ undefined")
                         + f"  ({r.n_adjudicated} adjudicated, {r.n_majority} majority, {r.n_ties} ties left out)"
                         + (f"  [{r.note}]" if r.note else ""))
        for r in self.inter_rater.itertuples(index=False):
            val = f"{r.value:.2f}" if np.isfinite(r.value) else "undefined"
            lines.append(f"  between radiologists: {r.statistic} = {val} ({r.n_items} items)"
                         + (f"  [{r.note}]" if r.note else ""))
        t = self.tests[self.tests.method == self.primary_method] if not self.tests.empty else self.tests
        lines.append("")
        corr = multiplicity.CORRECTIONS[self.settings.get("correction", "holm")]
        lines.append(f"Per-feature tests ({multiplicity.TEST_NAME}, p0 = {self.settings.get('null_rate')}; "
                     f"{corr}): {int(t.reject.sum()) if len(t) else 0} of {len(t)} cells significant "
                     f"at {self.settings.get('level')}")
        if self.interpretation is not None:
            lines.append("")
            lines.append(self.interpretation.summary())
        if self.reader is not None:
            lines.append("")
            lines.append(self.reader.summary())
        if self.notes:
            lines.append("")
            lines.append("Notes:")
            lines.extend(f"  - {n}" for n in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _dir(d: int) -> str:
    return "+α" if d > 0 else "−α"


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%" if x is not None and np.isfinite(x) else "  n/a"


def _p(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _older_stats_dir(folder: Path) -> bool:
    """RUN_DIR/stats as radsteer wrote it before marking its folders."""
    return (folder.parent / DB_FILENAME).is_file() and only_files_like(folder, ".csv", ".parquet")


def write_tables(frames: dict[str, pd.DataFrame], out_dir: Path) -> list[Path]:
    """CSV and Parquet of each frame (JSON-ish object columns become strings for Parquet), each
    written beside its target and renamed, into a folder radsteer claimed (`claim_dir`)."""
    written = []
    for name, df in frames.items():
        csv, pq = out_dir / f"{name}.csv", out_dir / f"{name}.parquet"
        write_atomic(csv, lambda tmp, df=df: df.to_csv(tmp, index=False))
        safe = df.copy()
        for c in safe.columns:
            if safe[c].dtype == object:
                safe[c] = safe[c].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v))
                                      else str(v) if not isinstance(v, str | bool | int | float) else v)
                if safe[c].map(type).nunique() > 1:
                    safe[c] = safe[c].map(lambda v: None if v is None else str(v))
        write_atomic(pq, lambda tmp, safe=safe: safe.to_parquet(tmp, index=False))
        written += [csv, pq]
    return written


# ---- computation ----------------------------------------------------------------------------


def _pick_primary(labels: pd.DataFrame, requested: str | None) -> str:
    if requested is not None:
        if requested not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, not {requested!r}")
        return requested
    present = set(labels.method) if not labels.empty else set()
    for m in ("combined", "entity_diff", "llm_judge", RADIOLOGIST):
        if m in present:
            return m
    return "combined"


def _planned(data: StudyData) -> tuple[int | None, str]:
    """Rows the protocol planned: cases × (1 baseline + features × non-zero α).

    The sweep records its plan in manifest.json (`plan`, from the validated protocol, so features merged
    from an items_file or a selection count). Without it, the frozen protocol's own fields are read —
    `alphas` and `features.items` as protocols.schema defines them — over the cases the store registered.
    """
    plan = (data.manifest or {}).get("plan")
    if isinstance(plan, dict) and all(isinstance(plan.get(k), int) for k in ("rows", "cases", "features", "alphas")):
        return plan["rows"], f"{plan['cases']} cases × (1 + {plan['features']} features × {plan['alphas']} α)"
    p = data.protocol or {}
    feats = p.get("features") if isinstance(p.get("features"), dict) else {}
    items, alphas = feats.get("items"), p.get("alphas")
    if feats.get("items_file") or feats.get("select"):  # such a protocol may list no items of its own
        return None, "no plan in manifest.json and protocol.yaml adds features from a file"
    if not isinstance(alphas, list) or not isinstance(items, list):
        return None, "no plan in manifest.json and protocol.yaml lists no alphas and features.items"
    try:
        n_alpha = sum(1 for a in alphas if float(a) != 0.0)
    except (TypeError, ValueError):
        return None, "protocol.yaml alphas are not numbers"
    n_cases = len(data.cases)
    return n_cases * (1 + len(items) * n_alpha), f"{n_cases} cases × (1 + {len(items)} features × {n_alpha} α)"


def study_flow(data: StudyData) -> pd.DataFrame:
    """Cases and rows from plan to analysis, with every exclusion and its reason."""
    rows: list[tuple[str, int | str, str]] = []
    planned, how = _planned(data)
    rows.append(("cases", len(data.cases), ""))
    rows.append(("features", len(data.features), ""))
    rows.append(("rows planned (protocol)", planned if planned is not None else "n/a", how))
    g = data.generations
    n_base = int((g.feature_id == "").sum()) if not g.empty else 0
    rows.append(("generations stored", len(g), f"{n_base} baselines, {len(g) - n_base} steered"))
    if planned is not None and len(g) < planned:
        rows.append(("excluded: not generated (yet)", planned - len(g), "planned rows without a generation"))
    st = data.steered
    no_base = int(st.baseline_generation_id.isna().sum()) if not st.empty else 0
    if no_base:
        rows.append(("excluded: steered without a baseline", no_base, "no α = 0 row for the case and settings"))
    if not g.empty and "finish_reason" in g:
        n_len = int((g.finish_reason == "length").sum())
        if n_len:
            rows.append(("note: stopped at the token limit", n_len, "kept in the analysis"))
    v = data.verdicts
    steered_ids = set(st.generation_id) if not st.empty else set()
    for m in AUTOMATED_METHODS:
        vm = v[v.method == m] if not v.empty else v
        if vm.empty:
            continue
        ok = vm[vm.label.isin(LABELS)]
        rows.append((f"evaluated: {m}", len(ok), ""))
        errs = vm[~vm.label.isin(LABELS)]
        if len(errs):
            reasons = errs.error.fillna("no label").astype(str).map(lambda s: s.splitlines()[0][:80])
            top = reasons.value_counts().head(3)
            rows.append((f"excluded: {m} error", len(errs), "; ".join(f"{k} ×{c}" for k, c in top.items())))
        missing = len(steered_ids - set(vm.generation_id))
        if missing:
            rows.append((f"excluded: {m} not run", missing, "steered rows without this verdict"))
    a = data.annotations
    ch = a[a.task == "change"] if not a.empty else a
    if not ch.empty:
        skipped = int(ch.answers.map(lambda x: isinstance(x, dict) and bool(x.get("skipped"))).sum())
        rows.append(("annotated: change reads", len(data.reads), f"{data.reads.annotator.nunique()} annotators"))
        if skipped:
            rows.append(("excluded: skipped reads", skipped, "annotator skipped the item"))
        maj = data.majority
        rows.append(("annotated: generations read", len(maj), f"{int((maj.n_reads >= 2).sum())} read twice or more"))
        if int(maj.tie.sum()):
            rows.append(("excluded: radiologist tie", int(maj.tie.sum()), "no majority label (tie rule)"))
    fa = a[a.task == "feature"] if not a.empty else a
    if not fa.empty:
        rows.append(("annotated: feature validity reads", len(fa), ""))
    return pd.DataFrame(rows, columns=["stage", "count", "note"]).astype({"count": str})


def compute_statistics(
    study: StudyData | str | Path,
    *,
    method: str | None = None,
    null_rate: float = 0.05,
    correction: str = "holm",
    level: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
    cov_struct: str = "exchangeable",
) -> StudyStatistics:
    """All statistics of a study. `method` is the primary labelling method (default: combined
    if present, else entity_diff, llm_judge, radiologist majority)."""
    data = study if isinstance(study, StudyData) else load_study(study)
    labels = data.labels
    primary = _pick_primary(labels, method)
    notes: list[str] = []
    if data.generations.empty:
        notes.append("empty study: no generations stored")
    elif data.steered.empty:
        notes.append("no steered generations: only baselines stored")
    elif labels.empty:
        notes.append("no labelled rows: run `radsteer evaluate` (and/or annotate) first")
    if data.protocol_error:
        notes.append(data.protocol_error)
    if data.run_dir is not None and not data.manifest:
        notes.append("manifest.json absent: model, SAE and versions unknown")

    cell = rates.label_rates(labels, rates.CELL)
    feat = rates.label_rates(labels, rates.FEATURE)
    meth = rates.label_rates(labels, ("method", "direction"))
    if not labels.empty:
        alphas = sorted(labels.abs_alpha.unique())
        if len(alphas) == 1:
            notes.append(f"a single |α| ({alphas[0]:g}): dose–response not estimable")
        if set(labels.direction) != {1, -1}:
            notes.append("steering in one direction only: positive vs negative not estimable")
        pf = feat[feat.method == primary]
        never = sorted(set(pf.loc[pf.n_on_target == 0, "feature_id"]))
        if never:
            shown = ", ".join(never[:10]) + (f" and {len(never) - 10} more" if len(never) > 10 else "")
            notes.append(f"{len(never)} feature(s) with no on-target change in some direction ({primary}): {shown}")
    if primary not in set(labels.method):
        if not labels.empty:
            notes.append(f"no labels from the primary method {primary!r}")

    pos_neg, spear = correlation.positive_vs_negative(feat, primary, n_boot=n_boot, seed=seed)
    if spear.note and not labels.empty:
        notes.append(f"Spearman: {spear.note}")
    methods_present = [m for m in METHODS if not labels.empty and m in set(labels.method)]
    fits = dose_response.dose_response_all(labels, methods_present, cov_struct=cov_struct)
    tests = multiplicity.feature_tests(cell, null_rate=null_rate, correction=correction, level=level)

    kap_rows, confusions = [], {}
    rad = data.majority[data.majority.label.notna()] if not data.majority.empty else data.majority
    if data.reads.empty:
        if not labels.empty:
            notes.append("no radiologist annotations: agreement with radiologists not estimable")
    else:
        if data.reads.annotator.nunique() < 2:
            notes.append("one annotator: no agreement between radiologists")
        elif int((data.majority.n_reads >= 2).sum()) == 0:
            notes.append("no double reads: no agreement between radiologists")
    for m in AUTOMATED_METHODS:
        if data.verdicts.empty or rad.empty:
            break
        v = data.verdicts[(data.verdicts.method == m) & data.verdicts.label.isin(LABELS)]
        if v.empty:
            continue
        pair = v[["generation_id", "label"]].merge(rad[["generation_id", "label"]], on="generation_id",
                                                   suffixes=("_auto", "_rad"))
        k = agreement.cohen_kappa(pair.label_auto.tolist(), pair.label_rad.tolist())
        src = data.majority[data.majority.generation_id.isin(v.generation_id)].source.value_counts()
        kap_rows.append({"method": m, "versus": RADIOLOGIST, **k.to_dict(),
                         **{f"n_{s}": int(src.get(s, 0)) for s in ("adjudicated", "majority")},
                         "n_ties": int(src.get("tie", 0))})
        confusions[m] = agreement.confusion(pair.label_auto.tolist(), pair.label_rad.tolist())
    kappa_df = pd.DataFrame(kap_rows, columns=["method", "versus", *agreement.KappaResult(0, 0, 0, 0, 0, 0, 0)
                                               .to_dict(), "n_adjudicated", "n_majority", "n_ties"])
    ratings = data.reads.rename(columns={"generation_id": "item", "annotator": "rater"})[["item", "rater", "label"]] \
        if not data.reads.empty else pd.DataFrame(columns=["item", "rater", "label"])
    inter = pd.DataFrame([agreement.fleiss_kappa(ratings), agreement.krippendorff_from_ratings(ratings)])

    interp = _interpretation_stats(data, n_boot, seed)
    if interp is not None:
        notes.extend(interp.notes)
    reader = None
    if not data.annotations.empty or not data.queue.empty:
        from evaluation.reader_study import compute_reader_stats

        reader = compute_reader_stats(data)
        notes.extend(reader.notes)
    return StudyStatistics(
        primary_method=primary, cell_rates=cell, feature_rates=feat, method_rates=meth, pos_neg=pos_neg,
        spearman=spear, dose_fits=fits, tests=tests, kappa_vs_radiologist=kappa_df, confusions=confusions,
        inter_rater=inter, flow=study_flow(data), notes=list(dict.fromkeys(notes)),
        settings={"method": primary, "null_rate": null_rate, "correction": correction, "level": level,
                  "n_boot": n_boot, "seed": seed, "cov_struct": cov_struct, "ci_method": "Wilson score 95%"},
        interpretation=interp, reader=reader,
    )


def _interpretation_stats(data: StudyData, n_boot: int, seed: int):
    """Interpretation statistics when the study interpreted features (`radsteer interpret`) or
    steers features selected with their F1 (`features.select`); None otherwise."""
    from evaluation.interpret_stats import compute_interpretation_stats, interpretations_from_features

    interps = data.interpretations
    if interps is None or interps.empty:
        interps = interpretations_from_features(data.features)
        if interps.empty:
            return None
    return compute_interpretation_stats(interps, data.feature_stats, data.annotations, n_boot=n_boot, seed=seed)
