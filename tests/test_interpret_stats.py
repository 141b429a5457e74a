"""Interpretation statistics: counts, histogram, ρ(frequency, F1), categories, AUROC of F1 for the
radiologists' validity; and their place in `radsteer stats` / the report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.interpret import make_interpreter
from evaluation.interpret_stats import auroc, compute_interpretation_stats, feature_validity, validity_auroc
from evaluation.report import build_report
from evaluation.stats import compute_statistics
from evaluation.study_data import load_study
from steering.store import StudyStore
from tests.helpers_interpret import add_synthetic_feature


def _interps(f1, precision=None, recall=None, targets=None, explainer="lexicon"):
    n = len(f1)
    return pd.DataFrame({"feature_id": [f"f{i}" for i in range(n)], "explainer": explainer, "f1": f1,
                         "precision": precision if precision is not None else f1,
                         "recall": recall if recall is not None else f1,
                         "targets": targets if targets is not None else [[] for _ in range(n)], "error": None})


def test_counts_histogram_precision_recall_and_categories() -> None:
    f1 = [0.95, 0.8, 0.76, 0.6, 0.4, 0.1, None]
    df = _interps(f1, precision=[0.9, 0.7, 0.7, 0.5, 0.3, 0.1, None], recall=[1.0, 0.9, 0.85, 0.8, 0.6, 0.1, None],
                  targets=[["pacemaker"], ["pleural_effusion"], ["pneumothorax"], [], [], [], []])
    st = compute_interpretation_stats(df, n_boot=200)
    c = st.counts
    assert (c["n_features"], c["n_scored"], c["n_never_active"]) == (7, 6, 1)
    assert (c["n_f1_above_075"], c["n_f1_below_05"]) == (3, 2)
    assert c["n_recall_above_precision"] == 5 and c["mean_recall"] > c["mean_precision"]
    assert int(st.histogram["count"].sum()) == 6 and st.histogram.loc[9, "count"] == 1  # 0.95 in [0.9, 1]
    cats = st.by_category.set_index("category")
    assert cats.loc["device", "n_features"] == 1 and cats.loc["finding", "n_features"] == 2
    assert cats.loc["finding", "n_f1_above_075"] == 2 and cats.loc["none", "n_features"] == 3
    assert "F1 > 0.75: 3" in st.summary()
    assert set(st.to_frames()) >= {"interpretation_f1_histogram", "interpretation_validity_auroc"}


def test_spearman_of_frequency_and_f1_with_bootstrap_interval() -> None:
    rng = np.random.default_rng(0)
    f1 = np.linspace(0.05, 0.99, 40)
    freq = f1 * 0.01 + rng.normal(0, 0.0005, 40)  # strongly monotone
    df = _interps(list(f1))
    fs = pd.DataFrame({"feature_id": df.feature_id, "frequency": freq})
    st = compute_interpretation_stats(df, fs, n_boot=300, seed=1)
    s = st.spearman_all
    assert s.rho > 0.9 and s.ci_low <= s.rho <= s.ci_high and s.n == 40
    assert st.spearman_high.n == int((f1 > 0.85).sum())
    few = compute_interpretation_stats(_interps([0.9, 0.95]), fs.head(2), n_boot=50)
    assert np.isnan(few.spearman_all.rho) and "too few" in few.spearman_all.note


def test_auroc_matches_the_pairwise_definition_and_validity_majority() -> None:
    f1 = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.8])
    valid = np.array([True, True, False, False, False, False])
    pairs = [(p, n) for p in f1[valid] for n in f1[~valid]]
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert auroc(f1, valid) == pytest.approx(expected)
    res = validity_auroc(f1, valid, n_boot=300)
    assert res["ci_low"] <= res["auroc"] <= res["ci_high"] and res["n_valid"] == 2
    assert np.isnan(validity_auroc(f1, np.ones(6, bool))["auroc"])
    ann = pd.DataFrame({"task": ["feature"] * 5 + ["change"], "feature_id": ["a", "a", "a", "b", "b", None],
                        "item_key": ["a", "a", "a", "b", "b", "7"],
                        "answers": [{"validity": "valid"}, {"validity": "valid"}, {"validity": "invalid"},
                                    {"validity": "partly"}, {"validity": "valid"}, {"label": "on"}]})
    assert feature_validity(ann).to_dict() == {"a": True, "b": False}  # a tie is not a majority


def test_stats_and_report_show_interpretations_with_radiologists_validity(tmp_path) -> None:
    run = tmp_path / "run"
    with StudyStore.open(run) as store:
        for i, word in enumerate(["pacemaker", "pneumothorax", "cardiomegaly", "atelectasis"]):
            add_synthetic_feature(store, f"f{i}", word)
        add_synthetic_feature(store, "f9", "heart", n_zero=30)  # fires on a word that is no concept: F1 0
        make_interpreter("lexicon").run(store)
        ann = [{"task": "feature", "item_key": f, "feature_id": f, "annotator": a, "answers": {"validity": v}}
               for f, v in (("f0", "valid"), ("f1", "valid"), ("f9", "invalid"), ("f2", "invalid"))
               for a in ("r1", "r2")]
        store.insert_ignore("annotations", ann)
    data = load_study(run)
    stats = compute_statistics(data, n_boot=200)
    it = stats.interpretation
    assert it is not None and it.counts["n_scored"] == 5 and it.counts["n_f1_above_075"] == 4
    assert it.validity["n_valid"] == 2 and it.validity["n_not_valid"] == 2
    f1 = it.features.set_index("feature_id").f1
    pairs = [(f1[v], f1[n]) for v in ("f0", "f1") for n in ("f9", "f2")]
    expected = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / 4
    assert it.validity["auroc"] == pytest.approx(expected) and expected >= 0.75
    # "normal heart" negates cardiomegaly: an inactive context that mentions the concept, a hard negative
    assert 0.9 < f1["f2"] < 1.0
    assert "Feature interpretations (lexicon)" in stats.summary()
    assert "interpretation_counts" in stats.to_frames()
    res = build_report(run, tmp_path / "report.html", data=data, stats=stats)
    html = (tmp_path / "report.html").read_text()
    assert 'id="interpretations"' in html and "histogram of detection F1" in html and res is not None
