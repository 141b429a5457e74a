"""Per-feature tests and their multiplicity correction.

Test (one per method × feature × direction × |α| cell): is the on-target proportion above a
null rate p0? Exact one-sided binomial test (scipy `binomtest`, alternative "greater"). Within
a cell each case appears once, so the rows are independent. p0 is the rate at which an
unrelated change would be called on-target by chance (default 0.05, set in the protocol's
report options or with `--null-rate`). Every p is adjusted over all cells of the method by Holm
(family-wise error) and Benjamini–Hochberg (false discovery rate); the chosen correction
decides `reject`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

CORRECTIONS = {"holm": "Holm (family-wise error rate)", "fdr_bh": "Benjamini–Hochberg (false discovery rate)"}
TEST_NAME = "exact one-sided binomial test of on-target proportion > p0"


def adjust(pvalues: np.ndarray, method: str) -> np.ndarray:
    """Adjusted p-values (statsmodels multipletests), NaNs passed through."""
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {sorted(CORRECTIONS)}, not {method!r}")
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method=method)[1]
    return out


def feature_tests(cell_rates: pd.DataFrame, *, null_rate: float = 0.05, correction: str = "holm",
                  level: float = 0.05) -> pd.DataFrame:
    """One row per cell of `cell_rates` (from rates.label_rates) with p, p_holm, p_bh and reject."""
    if not 0 < null_rate < 1:
        raise ValueError(f"null rate must lie strictly between 0 and 1, not {null_rate}")
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {sorted(CORRECTIONS)}, not {correction!r}")
    cols = ["method", "feature_id", "direction", "abs_alpha", "n", "n_on_target", "p_on_target", "null_rate",
            "p_value", "p_holm", "p_bh", "correction", "reject"]
    if cell_rates.empty:
        return pd.DataFrame(columns=cols)
    df = cell_rates[["method", "feature_id", "direction", "abs_alpha", "n", "n_on_target", "p_on_target"]].copy()
    df["null_rate"] = null_rate
    df["p_value"] = [stats.binomtest(int(k), int(n), null_rate, alternative="greater").pvalue if n else np.nan
                     for k, n in zip(df.n_on_target, df.n, strict=True)]
    df["p_holm"] = np.nan
    df["p_bh"] = np.nan
    for _, idx in df.groupby("method").groups.items():
        df.loc[idx, "p_holm"] = adjust(df.loc[idx, "p_value"].to_numpy(), "holm")
        df.loc[idx, "p_bh"] = adjust(df.loc[idx, "p_value"].to_numpy(), "fdr_bh")
    df["correction"] = CORRECTIONS[correction]
    chosen = df["p_holm"] if correction == "holm" else df["p_bh"]
    df["reject"] = chosen < level
    return df[cols].reset_index(drop=True)
