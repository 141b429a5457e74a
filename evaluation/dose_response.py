"""Dose–response: does the on-target probability rise with |α|?

Per labelling method and steering direction, a GEE logistic model
logit P(on_target) = β0 + β1·|α| with cases as clusters (every case is steered at every
|α|, so its rows are correlated). With fewer than `few_clusters` cases the sandwich
covariance is biased downward, so the bias-reduced (Mancl–DeRouen) covariance is used.
Only steered rows enter: the baseline (α = 0) has no verdict; β0 extrapolates to |α| = 0.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import expit

FEW_CLUSTERS = 40
MIN_CLUSTERS = 10  # fewer cases: the sandwich covariance is not estimable (intervals of ±10^5 on demo data)


@dataclass
class DoseResponseFit:
    method: str
    direction: int
    n: int
    n_clusters: int
    n_levels: int
    intercept: float = np.nan
    slope: float = np.nan
    slope_se: float = np.nan
    slope_low: float = np.nan
    slope_high: float = np.nan
    p_value: float = np.nan
    odds_ratio_per_unit: float = np.nan
    cov_type: str = ""
    cov_struct: str = ""
    note: str = ""
    curve: pd.DataFrame = field(default_factory=pd.DataFrame)

    def row(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "curve"}


def _observed(sub: pd.DataFrame) -> pd.DataFrame:
    obs = sub.groupby("abs_alpha", sort=True)["on_target"].agg(["size", "mean"]).reset_index()
    return obs.rename(columns={"size": "n", "mean": "observed"})


def fit_dose_response(labels: pd.DataFrame, method: str, direction: int, *, cov_struct: str = "exchangeable",
                      few_clusters: int = FEW_CLUSTERS, level: float = 0.95) -> DoseResponseFit:
    """Fit one GEE; degenerate data (one |α|, no variation, one case) gives a note, not an error."""
    import statsmodels.api as sm

    sub = labels[(labels.method == method) & (labels.direction == direction)]
    n, n_clusters, n_levels = len(sub), sub.case_id.nunique(), sub.abs_alpha.nunique()
    fit = DoseResponseFit(method, direction, n, n_clusters, n_levels, cov_struct=cov_struct)
    if n == 0:
        fit.note = "no labelled rows"
        return fit
    fit.curve = _observed(sub)
    y = sub.on_target.to_numpy(dtype=float)
    if n_levels < 2:
        fit.note = "a single |α|: no dose–response can be estimated"
        return fit
    if y.min() == y.max():
        fit.note = "no on-target change at any |α|" if y.max() == 0 else "on-target at every row: no variation"
        return fit
    if n_clusters < MIN_CLUSTERS:
        fit.note = f"not estimable: {n_clusters} case(s) as clusters (GEE needs ≥ {MIN_CLUSTERS})"
        return fit
    x = sub.abs_alpha.to_numpy(dtype=float)
    exog = np.column_stack([np.ones_like(x), x])
    groups = pd.factorize(sub.case_id)[0]
    structs = {"exchangeable": sm.cov_struct.Exchangeable, "independence": sm.cov_struct.Independence}
    cov_type = "bias_reduced" if n_clusters < few_clusters else "robust"
    notes = []
    res = None
    for struct in dict.fromkeys([cov_struct, "independence"]):
        model = sm.GEE(y, exog, groups=groups, family=sm.families.Binomial(), cov_struct=structs[struct]())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res = model.fit(cov_type=cov_type)
            except Exception as exc:  # singular working correlation, separation
                notes.append(f"{struct} fit failed ({type(exc).__name__})")
                res = None
                continue
        msgs = {str(w.message).splitlines()[0] for w in caught if "converge" in str(w.message).lower()}
        notes.extend(sorted(msgs))
        fit.cov_struct = struct
        break
    if res is None or not np.all(np.isfinite(res.params)) or not np.all(np.isfinite(res.bse)):
        fit.note = "; ".join(notes + ["GEE did not give finite estimates (separation?)"])
        return fit
    z = stats.norm.ppf(0.5 + level / 2)
    b, cov = np.asarray(res.params), np.asarray(res.cov_params())
    fit.intercept, fit.slope = float(b[0]), float(b[1])
    fit.slope_se = float(np.sqrt(cov[1, 1]))
    fit.slope_low, fit.slope_high = fit.slope - z * fit.slope_se, fit.slope + z * fit.slope_se
    fit.p_value = float(2 * stats.norm.sf(abs(fit.slope / fit.slope_se))) if fit.slope_se > 0 else np.nan
    with np.errstate(over="ignore"):  # quasi-separation: a huge slope gives an infinite odds ratio
        fit.odds_ratio_per_unit = float(np.exp(fit.slope))
    if abs(fit.slope) > 20:
        notes.append("slope very large: (quasi-)separation, estimate unreliable")
    fit.cov_type = cov_type
    if cov_type == "bias_reduced":
        notes.append(f"{n_clusters} cases (< {few_clusters}): bias-reduced covariance")
    fit.note = "; ".join(notes)
    grid = fit.curve.abs_alpha.to_numpy(dtype=float)
    X = np.column_stack([np.ones_like(grid), grid])
    eta = X @ b
    se = np.sqrt(np.einsum("ij,jk,ik->i", X, cov, X))
    fit.curve["fitted"] = expit(eta)
    fit.curve["fitted_low"] = expit(eta - z * se)
    fit.curve["fitted_high"] = expit(eta + z * se)
    return fit


def dose_response_all(labels: pd.DataFrame, methods, **kw) -> list[DoseResponseFit]:
    return [fit_dose_response(labels, m, d, **kw) for m in methods for d in (1, -1)
            if not labels.empty and ((labels.method == m) & (labels.direction == d)).any()]
