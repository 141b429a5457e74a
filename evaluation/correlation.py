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

EXACT_MAX = 10  # n ≤ this: exact permutation p-value (over all 10! = 3,628,800 pairings)
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


def exact_spearman_p(x, y) -> float:
    """Two-sided exact permutation p-value of Spearman's ρ: the share of all n! pairings of y with x
    whose |ρ| is at least the observed |ρ| (average ranks for ties, as scipy's ρ). For n ≤ EXACT_MAX.

    ρ of a pairing π is Σ a_i·b_π(i) / const with a, b the centred ranks; doubled, they are integers,
    so the distribution of that sum over all n! pairings is counted exactly by dynamic programming over
    the subsets of y already paired (2^n states × the sum's range) instead of listing n! pairings.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = len(x)
    if n > EXACT_MAX:
        raise ValueError(f"exact permutation p-value only for n ≤ {EXACT_MAX}, not {n}")
    a = np.rint(2 * stats.rankdata(x) - (n + 1)).astype(np.int64)  # 2 × (rank − mean rank): integers
    b = np.rint(2 * stats.rankdata(y) - (n + 1)).astype(np.int64)
    if not a.any() or not b.any():
        return float("nan")
    off = int(np.abs(a).sum() * np.abs(b).max())
    counts = np.zeros((1 << n, 2 * off + 1), dtype=np.int64)  # [subset of y used, sum + off] → pairings
    counts[0, off] = 1
    popcount = [bin(m).count("1") for m in range(1 << n)]
    for mask in range(1 << n):  # a superset is numerically larger: every state is complete when reached
        i = popcount[mask]
        if i == n or not counts[mask].any():
            continue
        row = counts[mask]
        for j in range(n):
            if not mask >> j & 1:
                shift = int(a[i] * b[j])
                dest = counts[mask | 1 << j]
                if shift >= 0:
                    dest[shift:] += row[:len(row) - shift]
                else:
                    dest[:shift] += row[-shift:]
    final = counts[-1]
    observed = abs(int(a @ b))
    sums = np.abs(np.arange(-off, off + 1))
    return float(final[sums >= observed].sum() / final.sum())


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
