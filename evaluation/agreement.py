"""Agreement: automated vs radiologist (Cohen's κ) and between radiologists (Fleiss' κ,
Krippendorff's α), over the four exclusive labels, plus confusion matrices."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from evaluation.study_data import LABELS


@dataclass
class KappaResult:
    kappa: float
    se: float
    ci_low: float
    ci_high: float
    n: int
    observed_agreement: float
    expected_agreement: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def confusion(a: Sequence[str], b: Sequence[str], categories: Sequence[str] = LABELS) -> pd.DataFrame:
    """Counts with `a` as rows and `b` as columns, every category present."""
    idx = {c: i for i, c in enumerate(categories)}
    m = np.zeros((len(categories), len(categories)), dtype=int)
    for x, y in zip(a, b, strict=True):
        m[idx[x], idx[y]] += 1
    return pd.DataFrame(m, index=pd.Index(categories, name="rows"), columns=pd.Index(categories, name="cols"))


def cohen_kappa(a: Sequence[str], b: Sequence[str], categories: Sequence[str] = LABELS,
                level: float = 0.95) -> KappaResult:
    """Cohen's κ with the asymptotic (Fleiss–Cohen–Everitt) standard error and a Wald interval
    (statsmodels `cohens_kappa`; the interval is clipped to [−1, 1]).

    Undefined (NaN, with a note) when there are no pairs or both raters use one category only.
    """
    from statsmodels.stats.inter_rater import cohens_kappa

    n = len(a)
    if n == 0:
        return KappaResult(np.nan, np.nan, np.nan, np.nan, 0, np.nan, np.nan, "no items rated by both")
    table = confusion(a, b, categories).to_numpy(dtype=float)
    p = table / n
    po = float(np.trace(p))
    pe = float(p.sum(1) @ p.sum(0))
    if pe >= 1.0 - 1e-12:
        return KappaResult(np.nan, np.nan, np.nan, np.nan, n, po, pe,
                           "both raters used a single label: κ is undefined")
    res = cohens_kappa(table)
    kappa, se = float(res.kappa), float(res.std_kappa)
    z = stats.norm.ppf(0.5 + level / 2)
    low, high = (max(-1.0, kappa - z * se), min(1.0, kappa + z * se)) if np.isfinite(se) else (np.nan, np.nan)
    note = "" if n >= 30 else f"only {n} items: the asymptotic interval is rough"
    return KappaResult(kappa, se, low, high, n, po, pe, note)


def fleiss_kappa(ratings: pd.DataFrame, categories: Sequence[str] = LABELS) -> dict[str, Any]:
    """Fleiss' κ over items read by the same number m ≥ 2 of readers (the most common m).

    `ratings` has columns item, rater, label. Items with another number of reads are left out
    (Fleiss' κ assumes a fixed m; Krippendorff's α below uses them all).
    """
    from statsmodels.stats.inter_rater import fleiss_kappa as _fk

    out: dict[str, Any] = {"statistic": "Fleiss' kappa", "value": np.nan, "n_items": 0, "raters_per_item": 0,
                           "note": ""}
    if ratings.empty:
        out["note"] = "no reads"
        return out
    counts = ratings.groupby("item").size()
    multi = counts[counts >= 2]
    if multi.empty:
        out["note"] = ("one annotator: no agreement between radiologists" if ratings.rater.nunique() < 2
                       else "no double reads")
        return out
    m = int(multi.mode().iloc[0])
    items = multi[multi == m].index
    sub = ratings[ratings["item"].isin(items)]
    table = pd.crosstab(sub["item"], sub["label"]).reindex(columns=list(categories), fill_value=0).to_numpy()
    out.update(n_items=len(items), raters_per_item=m)
    pj = table.sum(0) / table.sum()
    if (pj**2).sum() >= 1.0 - 1e-12:
        out["note"] = "every read used one label: κ is undefined"
        return out
    out["value"] = float(_fk(table, method="fleiss"))
    if len(items) < len(multi):
        out["note"] = f"{len(multi) - len(items)} items with another number of reads left out"
    return out


def krippendorff_alpha(units: Iterable[Sequence[Any]], level: str = "nominal",
                       value_domain: Sequence[Any] | None = None) -> float:
    """Krippendorff's α from the `krippendorff` package; each unit lists its values (None = not rated).

    `level`: nominal, ordinal, interval or ratio (ordinal needs `value_domain` in rank order for
    non-numeric values). Units with fewer than two values are not pairable and drop out. NaN when
    fewer than two pairable values exist or only one value occurs (α is undefined there).
    """
    import krippendorff

    vals: list[list[Any]] = [[v for v in u if v is not None and not (isinstance(v, float) and np.isnan(v))]
                             for u in units]
    vals = [v for v in vals if len(v) >= 2]
    cats = list(value_domain) if value_domain is not None else sorted({x for v in vals for x in v}, key=str)
    if not vals or len({x for v in vals for x in v}) < 2:
        return float("nan")
    index = {c: i for i, c in enumerate(cats)}
    counts = np.zeros((len(vals), len(cats)))
    for row, v in enumerate(vals):
        for x in v:
            counts[row, index[x]] += 1
    numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in cats)
    domain = cats if numeric else list(range(len(cats)))  # ranks stand in for labels
    return float(krippendorff.alpha(value_counts=counts, value_domain=domain, level_of_measurement=level))


def krippendorff_alpha_nominal(units: Iterable[Sequence[Any]]) -> float:
    """Krippendorff's α for nominal labels (the reader study's on/off/both/none)."""
    return krippendorff_alpha(units, "nominal")


def krippendorff_from_ratings(ratings: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {"statistic": "Krippendorff's alpha (nominal)", "value": np.nan, "n_items": 0,
                           "raters_per_item": np.nan, "note": ""}
    if ratings.empty:
        out["note"] = "no reads"
        return out
    units = [list(g) for _, g in ratings.groupby("item")["label"] if len(g) >= 2]
    out["n_items"] = len(units)
    if not units:
        out["note"] = ("one annotator: no agreement between radiologists" if ratings.rater.nunique() < 2
                       else "no double reads")
        return out
    out["raters_per_item"] = float(np.mean([len(u) for u in units]))
    out["value"] = krippendorff_alpha_nominal(units)
    if np.isnan(out["value"]):
        out["note"] = "every read used one label: α is undefined"
    return out
