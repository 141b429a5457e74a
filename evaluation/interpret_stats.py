"""Statistics of a study's feature interpretations (the paper's section 4.1, and its validation).

- the F1 distribution (histogram) and the counts above 0.75 and below 0.5;
- precision versus recall (the paper found recall above precision: non-specific descriptions);
- Spearman ρ between activation frequency and F1, over all scored features and over those
  with F1 > 0.85 as in the paper, with percentile bootstrap intervals;
- counts per concept category of the features' targets (finding, device, longitudinal, textual);
- once radiologists have judged features (the app's feature-validity task), the AUROC of F1 for
  "valid" (majority answer; "partly" counts as not valid), with a bootstrap interval.

Degenerate data (no interpretations, too few features, one class of validity) gives NaN and a
note, never an exception. Pure pandas/numpy/scipy: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from evaluation.correlation import SpearmanResult, spearman_bootstrap

HIGH, LOW, PAPER_HIGH = 0.75, 0.5, 0.85
BINS = np.linspace(0, 1, 11)
MAX_BOOT_CELLS = 4_000_000  # features × resamples per bootstrap (memory bound on 16k features)


@dataclass
class InterpretationStats:
    features: pd.DataFrame  # feature_id, explainer, f1, precision, recall, frequency, categories, valid
    histogram: pd.DataFrame  # bin_low, bin_high, count
    counts: dict[str, Any]
    by_category: pd.DataFrame  # category, n_features, n_f1_above_075
    spearman_all: SpearmanResult
    spearman_high: SpearmanResult  # among F1 > 0.85 (the paper's ρ = 0.40)
    validity: dict[str, Any]  # auroc, ci_low, ci_high, n_valid, n_not_valid, note
    notes: list[str] = field(default_factory=list)

    def to_frames(self) -> dict[str, pd.DataFrame]:
        sp = pd.DataFrame([{"subset": "all scored", **self.spearman_all.to_dict()},
                           {"subset": f"F1 > {PAPER_HIGH}", **self.spearman_high.to_dict()}])
        return {
            "interpretation_f1_histogram": self.histogram,
            "interpretation_counts": pd.DataFrame([self.counts]),
            "interpretation_by_category": self.by_category,
            "interpretation_frequency_spearman": sp,
            "interpretation_validity_auroc": pd.DataFrame([self.validity]),
            "interpretation_precision_recall": self.features[["feature_id", "explainer", "precision", "recall", "f1"]],
        }

    def summary(self) -> str:
        c = self.counts
        lines = [f"Feature interpretations ({c['explainer'] or 'none'}): {c['n_scored']} of {c['n_features']} "
                 f"features scored; F1 > {HIGH}: {c['n_f1_above_075']}, F1 < {LOW}: {c['n_f1_below_05']}"]
        if c["n_scored"]:
            lines.append(f"  median F1 {c['median_f1']:.2f}; mean precision {c['mean_precision']:.2f} vs mean recall "
                         f"{c['mean_recall']:.2f} (recall > precision for {c['n_recall_above_precision']} features)")
        for label, s in (("all scored", self.spearman_all), (f"F1 > {PAPER_HIGH}", self.spearman_high)):
            txt = (f"ρ = {s.rho:.2f} (bootstrap 95% CI {s.ci_low:.2f} to {s.ci_high:.2f}, n = {s.n})"
                   if np.isfinite(s.rho) else f"ρ undefined — {s.note}")
            lines.append(f"  activation frequency vs F1, {label}: {txt}")
        v = self.validity
        lines.append("  radiologists' validity vs F1: " + (
            f"AUROC {v['auroc']:.2f} (95% CI {v['ci_low']:.2f} to {v['ci_high']:.2f}; "
            f"{v['n_valid']} valid, {v['n_not_valid']} not)" if np.isfinite(v["auroc"]) else f"not estimable — {v['note']}"))
        return "\n".join(lines)


def _categories(targets: Any) -> list[str]:
    from evaluation.interpret_lexicon import concept_category

    return sorted({concept_category(t) for t in (targets or [])})


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting ½ (Mann–Whitney)."""
    from scipy.stats import rankdata

    pos = labels.astype(bool)
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def validity_auroc(f1: np.ndarray, valid: np.ndarray, *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """AUROC of F1 for the radiologists' "valid", with a stratified percentile bootstrap interval."""
    n1, n0 = int(valid.sum()), int((~valid).sum())
    out = {"auroc": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n_valid": n1,
           "n_not_valid": n0, "n_boot": n_boot, "seed": seed, "note": ""}
    if n1 == 0 or n0 == 0:
        out["note"] = (f"needs features judged valid and not valid ({n1} valid, {n0} not)"
                       if n1 + n0 else "no feature has both an F1 and a radiologist's validity judgement")
        return out
    out["auroc"] = auroc(f1, valid)
    rng = np.random.default_rng(seed)
    pos, neg = f1[valid], f1[~valid]
    boots = []
    for _ in range(n_boot):
        p = rng.choice(pos, size=n1)
        q = rng.choice(neg, size=n0)
        boots.append(auroc(np.concatenate([p, q]), np.concatenate([np.ones(n1, bool), np.zeros(n0, bool)])))
    out["ci_low"], out["ci_high"] = (float(x) for x in np.percentile(boots, [2.5, 97.5]))
    if n1 + n0 < 10:
        out["note"] = f"only {n1 + n0} judged features: the interval is wide"
    return out


def feature_validity(annotations: pd.DataFrame) -> pd.Series:
    """Per feature: True when the majority of radiologists answered "valid" (ties: not valid)."""
    if annotations is None or annotations.empty:
        return pd.Series(dtype=bool)
    a = annotations[annotations.task == "feature"]
    rows = []
    for r in a.itertuples(index=False):
        answers = r.answers if isinstance(r.answers, dict) else {}
        v = answers.get("validity")
        if v in ("valid", "partly", "invalid"):
            rows.append((r.feature_id or r.item_key, v == "valid"))
    if not rows:
        return pd.Series(dtype=bool)
    df = pd.DataFrame(rows, columns=["feature_id", "valid"])
    share = df.groupby("feature_id").valid.mean()
    return share > 0.5


def _spearman(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> SpearmanResult:
    n = len(x)
    if n and n * n_boot > MAX_BOOT_CELLS:
        n_boot = max(200, MAX_BOOT_CELLS // n)
    res = spearman_bootstrap(x, y, n_boot=n_boot, seed=seed)
    if n < 3:
        res.note = f"too few scored features ({n}; need ≥ 3)"
    elif not np.isfinite(res.rho) and res.note.startswith("a direction"):
        res.note = "frequency or F1 is the same for every feature: ρ is undefined"
    return res


def compute_interpretation_stats(interpretations: pd.DataFrame, feature_stats: pd.DataFrame | None = None,
                                 annotations: pd.DataFrame | None = None, *, explainer: str | None = None,
                                 n_boot: int = 2000, seed: int = 0) -> InterpretationStats:
    """Statistics of one explainer's interpretations (default: the explainer with most scored rows)."""
    notes: list[str] = []
    df = interpretations.copy() if interpretations is not None else pd.DataFrame()
    cols = ["feature_id", "explainer", "f1", "precision", "recall", "frequency", "categories", "valid"]
    if not df.empty:
        df = df[df.error.isna()] if "error" in df else df
        if explainer is None and not df.empty:
            explainer = df.groupby("explainer").f1.count().idxmax()
        df = df[df.explainer == explainer] if explainer else df.iloc[0:0]
    if df.empty:
        notes.append("no feature interpretations: run `radsteer interpret`")
        df = pd.DataFrame(columns=cols)
    freq = (feature_stats.set_index("feature_id").frequency if feature_stats is not None and not feature_stats.empty
            else pd.Series(dtype=float))
    df = df.assign(frequency=df.feature_id.map(freq).astype(float),
                   categories=[_categories(t) for t in df.get("targets", pd.Series([[]] * len(df)))])
    valid = feature_validity(annotations)
    df = df.assign(valid=df.feature_id.map(valid))
    for c in ("f1", "precision", "recall"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    scored = df[df.f1.notna()]
    f1 = scored.f1.to_numpy(float)
    counts_hist, _ = np.histogram(f1, bins=BINS)
    hist = pd.DataFrame({"bin_low": BINS[:-1], "bin_high": BINS[1:], "count": counts_hist})
    both = scored.dropna(subset=["precision", "recall"])
    counts = {
        "explainer": explainer, "n_features": int(len(df)), "n_scored": int(len(scored)),
        "n_never_active": int(df.f1.isna().sum()),
        "n_f1_above_075": int((f1 > HIGH).sum()), "n_f1_below_05": int((f1 < LOW).sum()),
        "share_f1_above_075": float((f1 > HIGH).mean()) if len(f1) else float("nan"),
        "share_f1_below_05": float((f1 < LOW).mean()) if len(f1) else float("nan"),
        "median_f1": float(np.median(f1)) if len(f1) else float("nan"),
        "mean_precision": float(both.precision.mean()) if len(both) else float("nan"),
        "mean_recall": float(scored.recall.mean()) if len(scored) else float("nan"),
        "n_recall_above_precision": int((both.recall > both.precision).sum()),
    }
    fs = scored.dropna(subset=["frequency"])
    sp_all = _spearman(fs.frequency.to_numpy(float), fs.f1.to_numpy(float), n_boot, seed)
    hi = fs[fs.f1 > PAPER_HIGH]
    sp_high = _spearman(hi.frequency.to_numpy(float), hi.f1.to_numpy(float), n_boot, seed)
    cat_rows = []
    for cat in ("finding", "device", "longitudinal", "textual", "none"):
        has = scored.categories.map(lambda cs, cat=cat: (not cs) if cat == "none" else cat in cs)
        cat_rows.append({"category": cat, "n_features": int(has.sum()),
                         "n_f1_above_075": int((has & (scored.f1 > HIGH)).sum())})
    judged = scored[scored.valid.notna()]
    validity = validity_auroc(judged.f1.to_numpy(float), judged.valid.astype(bool).to_numpy(), n_boot=n_boot,
                              seed=seed)
    if validity["note"]:
        notes.append(f"validity AUROC: {validity['note']}")
    return InterpretationStats(df.reindex(columns=cols), hist, counts, pd.DataFrame(cat_rows), sp_all, sp_high,
                               validity, notes)


def interpretations_from_features(features: pd.DataFrame) -> pd.DataFrame:
    """Interpretation rows of a study that steers selected features: their F1 from the `features`
    table (precision and recall unknown there). Empty when no feature carries an F1."""
    cols = ["feature_id", "explainer", "f1", "precision", "recall", "targets", "error"]
    if features is None or features.empty or "interpretability" not in features:
        return pd.DataFrame(columns=cols)
    f = features[features.interpretability.notna()]
    if f.empty:
        return pd.DataFrame(columns=cols)
    explainer = f.explainer if "explainer" in f else pd.Series([None] * len(f), index=f.index)
    return pd.DataFrame({"feature_id": f.feature_id, "explainer": explainer.fillna("selected"),
                         "f1": f.interpretability, "precision": np.nan, "recall": np.nan,
                         "targets": f.target_concepts, "error": None}).reset_index(drop=True)
