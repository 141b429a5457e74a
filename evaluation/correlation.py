"""Does a feature that steers well in one direction steer well in the other?

Spearman's ρ between each feature's on-target rate under +α and under −α (pooled over |α|),
with a percentile bootstrap interval that resamples features (seeded, so reruns agree).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass
class SpearmanResult:
    rho: float
    p_value: float
    ci_low: float
    ci_high: float
    n: int
    n_boot: int
    n_boot_valid: int
    seed: int
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _row_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman ρ of each row pair (average ranks for ties); NaN for a constant row."""
    rx = stats.rankdata(x, axis=1)
    ry = stats.rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    num = (rx * ry).sum(axis=1)
    den = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def spearman_bootstrap(x, y, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> SpearmanResult:
    """ρ (scipy), its p-value, and a percentile bootstrap interval over the paired units."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = len(x)
    if n < 3:
        return SpearmanResult(np.nan, np.nan, np.nan, np.nan, n, n_boot, 0, seed,
                              f"too few features with both directions ({n}; need ≥ 3)")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return SpearmanResult(np.nan, np.nan, np.nan, np.nan, n, n_boot, 0, seed,
                              "a direction has the same rate for every feature: ρ is undefined")
    res = stats.spearmanr(x, y)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    boots = _row_spearman(x[idx], y[idx])
    valid = boots[~np.isnan(boots)]
    tail = (1 - level) / 2 * 100
    lo, hi = (np.percentile(valid, [tail, 100 - tail]) if len(valid) else (np.nan, np.nan))
    note = "" if n >= 10 else f"only {n} features: the interval is wide and the bootstrap coarse"
    return SpearmanResult(float(res.statistic), float(res.pvalue), float(lo), float(hi), n, n_boot,
                          len(valid), seed, note)


def positive_vs_negative(per_feature: pd.DataFrame, method: str, *, n_boot: int = 2000, seed: int = 0
                         ) -> tuple[pd.DataFrame, SpearmanResult]:
    """Per-feature on-target rates at +α and −α (one method) and their Spearman correlation."""
    cols = ["feature_id", "n_pos", "p_on_target_pos", "n_neg", "p_on_target_neg"]
    sub = per_feature[per_feature.method == method] if not per_feature.empty else per_feature
    if sub.empty:
        return pd.DataFrame(columns=cols), spearman_bootstrap([], [], n_boot=n_boot, seed=seed)
    wide = sub.pivot_table(index="feature_id", columns="direction", values=["n", "p_on_target"], aggfunc="first")
    out = pd.DataFrame(index=wide.index)
    for d, tag in ((1, "pos"), (-1, "neg")):
        out[f"n_{tag}"] = wide["n"][d] if ("n", d) in wide.columns else np.nan
        out[f"p_on_target_{tag}"] = wide["p_on_target"][d] if ("p_on_target", d) in wide.columns else np.nan
    out = out.reset_index()[cols]
    return out, spearman_bootstrap(out.p_on_target_pos, out.p_on_target_neg, n_boot=n_boot, seed=seed)
