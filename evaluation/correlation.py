"""Does a feature that steers well in one direction steer well in the other?

Spearman's ρ between each feature's on-target rate under +α and under −α (pooled over |α|).
Small samples are reported honestly: with n ≤ EXACT_MAX features the p-value comes from the exact
permutation distribution (every pairing of the two rate vectors, ties kept as average ranks), not from
the t approximation; the percentile bootstrap interval (resampling features, seeded so reruns agree)
is given only from MIN_CI_N features up — below that it is not estimable in any useful sense.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

EXACT_MAX = 10  # n ≤ this: exact permutation p-value (10! = 3,628,800 pairings)
MIN_CI_N = 10  # n < this: no bootstrap interval


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
    p_method: str = ""  # "exact permutation" | "t approximation" | ""

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
    if n <= EXACT_MAX:
        p_value, p_method = exact_spearman_p(x, y), "exact permutation"
    else:
        p_value, p_method = float(res.pvalue), "t approximation"
    if n < MIN_CI_N:
        return SpearmanResult(float(res.statistic), p_value, np.nan, np.nan, n, n_boot, 0, seed,
                              f"only {n} features: no bootstrap interval (needs ≥ {MIN_CI_N}); exact p-value",
                              p_method)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    boots = _row_spearman(x[idx], y[idx])
    valid = boots[~np.isnan(boots)]
    tail = (1 - level) / 2 * 100
    lo, hi = (np.percentile(valid, [tail, 100 - tail]) if len(valid) else (np.nan, np.nan))
    return SpearmanResult(float(res.statistic), p_value, float(lo), float(hi), n, n_boot, len(valid), seed, "",
                          p_method)


def _all_permutations(n: int) -> np.ndarray:
    """Every permutation of range(n) as rows of an [n!, n] int8 array (built by insertion, no Python loop
    over the n! rows)."""
    perms = np.zeros((1, 0), dtype=np.int8)
    for k in range(n):  # insert element k at every position of each permutation of range(k)
        m = perms.shape[0]
        out = np.empty((m * (k + 1), k + 1), dtype=np.int8)
        for pos in range(k + 1):
            block = out[pos * m:(pos + 1) * m]
            block[:, :pos] = perms[:, :pos]
            block[:, pos] = k
            block[:, pos + 1:] = perms[:, pos:]
        perms = out
    return perms


def exact_spearman_p(x, y) -> float:
    """Two-sided exact permutation p-value of Spearman's ρ: the share of all n! pairings of y with x
    whose |ρ| is at least the observed |ρ| (average ranks for ties, as scipy's ρ). For n ≤ EXACT_MAX."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = len(x)
    if n > EXACT_MAX:
        raise ValueError(f"exact permutation p-value only for n ≤ {EXACT_MAX}, not {n}")
    rx = stats.rankdata(x)
    ry = stats.rankdata(y)
    rx -= rx.mean()
    ry -= ry.mean()
    den = np.sqrt((rx**2).sum() * (ry**2).sum())
    if den == 0:
        return float("nan")
    observed = abs(float(rx @ ry)) / den
    perms = _all_permutations(n)
    hits = 0
    for start in range(0, len(perms), 400_000):  # bounded memory: 400k × n floats at a time
        rho = np.abs(ry[perms[start:start + 400_000]] @ rx) / den
        hits += int((rho >= observed - 1e-12).sum())
    return hits / len(perms)


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
