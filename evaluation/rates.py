"""Counts and proportions of on / off / both / none with Wilson 95% intervals.

Wilson, not statsmodels' default (normal approximation): with small cells and rates near
0 or 1 the normal interval leaves [0, 1] or collapses to a point.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from evaluation.study_data import LABELS

CI_METHOD = "wilson"
CI_LEVEL = 0.95
OUTCOMES: tuple[str, ...] = (*LABELS, "on_target", "off_target")
"""`on`, `off`, `both`, `none` are the exclusive labels; `on_target` = on ∪ both (the primary
endpoint: the intended change happened), `off_target` = off ∪ both."""

CELL = ("method", "feature_id", "direction", "abs_alpha")
FEATURE = ("method", "feature_id", "direction")


def wilson_interval(count: np.ndarray | int, nobs: np.ndarray | int, level: float = CI_LEVEL
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for count/nobs; NaN where nobs is 0.

    Bounds are clipped to [0, p] and [p, 1]: statsmodels' floating point leaves e.g. 5.6e-17
    as the lower bound of 0/3, which is not 0 and breaks error bars built as p − low.
    """
    count = np.asarray(count, dtype=float)
    nobs = np.asarray(nobs, dtype=float)
    safe = np.where(nobs > 0, nobs, 1.0)
    low, high = proportion_confint(count, safe, alpha=1 - level, method=CI_METHOD)
    p = count / safe
    low = np.clip(np.minimum(low, p), 0.0, 1.0)
    high = np.clip(np.maximum(high, p), 0.0, 1.0)
    low = np.where(count == 0, 0.0, low)
    high = np.where(count == safe, 1.0, high)
    low = np.where(nobs > 0, low, np.nan)
    high = np.where(nobs > 0, high, np.nan)
    return low, high


def label_rates(labels: pd.DataFrame, by: Sequence[str] = CELL, level: float = CI_LEVEL) -> pd.DataFrame:
    """One row per group: n, n_<outcome>, p_<outcome>, p_<outcome>_low/_high for every outcome."""
    by = list(by)
    cols = [*by, "n"] + [c for o in OUTCOMES for c in (f"n_{o}", f"p_{o}", f"p_{o}_low", f"p_{o}_high")]
    if labels.empty:
        return pd.DataFrame(columns=[*cols, "ci_method"])
    df = labels.assign(**{o: labels.label.eq(o) for o in LABELS})
    df["on_target"] = df["on"] | df["both"]
    df["off_target"] = df["off"] | df["both"]
    g = df.groupby(by, sort=True, observed=True)
    counts = g[list(OUTCOMES)].sum().astype(int)
    out = counts.rename(columns={o: f"n_{o}" for o in OUTCOMES})
    out.insert(0, "n", g.size())
    n = out["n"].to_numpy()
    for o in OUTCOMES:
        k = out[f"n_{o}"].to_numpy()
        low, high = wilson_interval(k, n, level)
        out[f"p_{o}"] = k / n
        out[f"p_{o}_low"] = low
        out[f"p_{o}_high"] = high
    out = out.reset_index()
    out["ci_method"] = f"Wilson score {int(level * 100)}%"
    return out[[*cols, "ci_method"]]
