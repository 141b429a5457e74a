"""Study statistics: hand-computed values on small tables, statsmodels' own GEE, degenerate data.

Every expected number below was worked out by hand (the arithmetic is in the comments), so a
change in a library default (statsmodels' interval method, scipy's tie handling) shows up here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.multitest import multipletests

from evaluation import agreement, correlation, dose_response, multiplicity, rates
from evaluation.report import build_report
from evaluation.stats import compute_statistics
from evaluation.study_data import load_study
from evaluation.synthetic import make_synthetic_study
from protocols.cli import main
from steering.store import StudyStore

# ---- hand-computed values -----------------------------------------------------------------


def test_wilson_bounds_by_hand() -> None:
    # z = 1.959964, z² = 3.841459. 3/10: centre (0.3 + z²/20)/(1 + z²/10) = 0.492073/1.384146 = 0.355507,
    # half-width z·sqrt(0.3·0.7/10 + z²/400)/1.384146 = 1.959964·0.174939/1.384146 = 0.247715.
    low, high = rates.wilson_interval(3, 10)
    assert float(low) == pytest.approx(0.107791, abs=2e-6)
    assert float(high) == pytest.approx(0.603222, abs=2e-6)
    # 0/3: the lower bound is exactly 0 (not 5.6e-17); upper = (z²/3)/(1 + z²/3) = 1.280486/2.280486.
    low, high = rates.wilson_interval(0, 3)
    assert float(low) == 0.0
    assert float(high) == pytest.approx(0.561497, abs=1e-6)
    # 3/3 mirrors it, and the upper bound is exactly 1.
    low, high = rates.wilson_interval(3, 3)
    assert float(high) == 1.0
    assert float(low) == pytest.approx(1 - 0.561497, abs=1e-6)
    # no observations: undefined, not an error
    low, high = rates.wilson_interval(0, 0)
    assert np.isnan(low) and np.isnan(high)


def test_wilson_bounds_bracket_the_proportion() -> None:
    k = np.arange(0, 8)
    low, high = rates.wilson_interval(k, np.full_like(k, 7))
    p = k / 7
    assert np.all(low >= 0) and np.all(high <= 1)
    assert np.all(p - low >= 0) and np.all(high - p >= 0)


def test_label_rates_counts_and_names_wilson() -> None:
    labels = pd.DataFrame({"method": "m", "feature_id": "f", "direction": 1, "abs_alpha": 5.0,
                           "label": ["on"] * 2 + ["both"] + ["off"] * 3 + ["none"] * 4})
    r = rates.label_rates(labels).iloc[0]
    assert (r.n, r.n_on, r.n_both, r.n_off, r.n_none, r.n_on_target, r.n_off_target) == (10, 2, 1, 3, 4, 3, 4)
    assert r.p_on_target == pytest.approx(0.3)
    assert r.p_on_target_low == pytest.approx(0.107791, abs=2e-6)
    assert "Wilson" in r.ci_method


def test_cohen_kappa_two_by_two_by_hand() -> None:
    # table [[20, 5], [10, 15]]: p_o = 35/50 = 0.7; rows 25/25, columns 30/20 →
    # p_e = (25·30 + 25·20)/50² = 0.5; κ = (0.7 − 0.5)/(1 − 0.5) = 0.4.
    a = ["on"] * 25 + ["off"] * 25
    b = ["on"] * 20 + ["off"] * 5 + ["on"] * 10 + ["off"] * 15
    k = agreement.cohen_kappa(a, b)
    assert k.kappa == pytest.approx(0.4)
    assert (k.observed_agreement, k.expected_agreement, k.n) == (pytest.approx(0.7), pytest.approx(0.5), 50)
    assert k.ci_low < 0.4 < k.ci_high
    c = agreement.confusion(a, b)
    assert c.loc["on", "on"] == 20 and c.loc["on", "off"] == 5 and c.loc["off", "on"] == 10


def test_spearman_five_pairs_by_hand() -> None:
    # ranks equal values; d = (−1, 1, −1, 1, 0), Σd² = 4, ρ = 1 − 6·4/(5·24) = 0.8
    res = correlation.spearman_bootstrap([1, 2, 3, 4, 5], [2, 1, 4, 3, 5], n_boot=500, seed=1)
    assert res.rho == pytest.approx(0.8)
    # exact p: pairings with |ρ| ≥ 0.8 are those with Σd² ≤ 4 — the identity (Σd² = 0), the 4 adjacent
    # swaps (2) and the 3 pairs of disjoint adjacent swaps (4) — and their 8 reversals: 16 of 5! = 120
    assert res.p_value == pytest.approx(16 / 120) and res.p_method == "exact permutation"
    # scipy's t approximation says 0.104: not what a 5-feature study should report
    assert abs(res.p_value - 0.104) > 0.02
    # five features: no bootstrap interval, and the note says why
    assert np.isnan(res.ci_low) and np.isnan(res.ci_high) and res.n == 5 and "only 5 features" in res.note


def test_exact_spearman_p_by_hand_small_and_tied() -> None:
    # n = 4, y = (1, 3, 2, 4): ρ = 0.8; |ρ| ≥ 0.8 for the identity, 3 adjacent swaps and their 4 reversals
    assert correlation.exact_spearman_p([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(8 / 24)
    # n = 3, perfect order: only the identity and the reversal reach |ρ| = 1 → 2/6
    assert correlation.exact_spearman_p([0.1, 0.5, 0.9], [0.2, 0.4, 0.8]) == pytest.approx(2 / 6)
    # ties (average ranks): x = (1, 2, 3, 4), y = (0, 0, 1, 1) → ry = (1.5, 1.5, 3.5, 3.5); ρ = 2/√5 ≈ 0.894.
    # A pairing reaches |ρ| = 0.894 exactly when the two tied-high y values land on x ranks {3, 4} or {1, 2}:
    # 2 choices × 2! × 2! = 8 of 24 pairings
    assert correlation.exact_spearman_p([1, 2, 3, 4], [0, 0, 1, 1]) == pytest.approx(8 / 24)
    # n = 7 with ties: equal to listing all 5040 pairings through scipy's ρ
    import itertools

    x7, y7 = np.array([0.1, 0.4, 0.4, 0.2, 0.9, 0.5, 0.5]), np.array([0.3, 0.3, 0.8, 0.1, 0.6, 0.6, 0.2])
    rho7 = stats.spearmanr(x7, y7).statistic
    brute = np.mean([abs(stats.spearmanr(x7, y7[list(p)]).statistic) >= abs(rho7) - 1e-12
                     for p in itertools.permutations(range(7))])
    assert correlation.exact_spearman_p(x7, y7) == pytest.approx(float(brute), abs=1e-12)
    # n = 10 (10! pairings) agrees with a seeded Monte-Carlo permutation estimate
    rng = np.random.default_rng(3)
    x, y = rng.random(10), rng.random(10)
    exact = correlation.exact_spearman_p(x, y)
    rho = stats.spearmanr(x, y).statistic
    draws = np.array([stats.spearmanr(x, rng.permutation(y)).statistic for _ in range(4000)])
    assert exact == pytest.approx(float(np.mean(np.abs(draws) >= abs(rho) - 1e-12)), abs=0.03)
    with pytest.raises(ValueError):
        correlation.exact_spearman_p(np.arange(11), np.arange(11))


def test_spearman_bootstrap_interval_from_ten_features_and_t_p_above() -> None:
    rng = np.random.default_rng(0)
    x = rng.random(12)
    res = correlation.spearman_bootstrap(x, x + rng.random(12) * 0.5, n_boot=300, seed=1)
    assert res.p_method == "t approximation" and -1 <= res.ci_low <= res.rho <= res.ci_high <= 1
    res10 = correlation.spearman_bootstrap(x[:10], x[:10] + rng.random(10) * 0.5, n_boot=300, seed=1)
    assert res10.p_method == "exact permutation" and np.isfinite(res10.ci_low) and res10.note == ""


def test_fleiss_kappa_tiny_table_by_hand() -> None:
    # 3 items × 2 raters: (on, on), (off, off), (on, off). P_i = 1, 1, 0 → P̄ = 2/3;
    # p_on = p_off = 1/2 → P_e = 1/2; κ = (2/3 − 1/2)/(1 − 1/2) = 1/3.
    ratings = pd.DataFrame({"item": [1, 1, 2, 2, 3, 3], "rater": ["a", "b"] * 3,
                            "label": ["on", "on", "off", "off", "on", "off"]})
    f = agreement.fleiss_kappa(ratings)
    assert f["value"] == pytest.approx(1 / 3)
    assert (f["n_items"], f["raters_per_item"]) == (3, 2)


def test_krippendorff_alpha_nominal_by_hand() -> None:
    # Same 3 units. Coincidences: o_on,on = 2, o_off,off = 2, o_on,off = o_off,on = 1; n = 6,
    # n_on = n_off = 3. α = 1 − (n − 1)·Σ_{c≠k} o_ck / Σ_{c≠k} n_c n_k = 1 − 5·2/18 = 4/9.
    units = [["on", "on"], ["off", "off"], ["on", "off"]]
    assert agreement.krippendorff_alpha_nominal(units) == pytest.approx(4 / 9)
    # an unpaired value (None) does not count; a unit with one value drops out
    assert agreement.krippendorff_alpha_nominal([*units, ["on", None], ["off"]]) == pytest.approx(4 / 9)
    # perfect agreement
    assert agreement.krippendorff_alpha_nominal([["on", "on"], ["off", "off"]]) == pytest.approx(1.0)


def test_binomial_test_and_multiplicity_by_hand() -> None:
    # P(X ≥ 3 | n = 10, p0 = 0.05) = 1 − 0.95¹⁰ − 10·0.05·0.95⁹ − 45·0.05²·0.95⁸
    #                               = 1 − 0.598737 − 0.315125 − 0.074635 = 0.011504
    cells = pd.DataFrame({"method": "m", "feature_id": ["a", "b", "c"], "direction": 1, "abs_alpha": 5.0,
                          "n": [10, 10, 10], "n_on_target": [3, 0, 10], "p_on_target": [0.3, 0.0, 1.0]})
    t = multiplicity.feature_tests(cells, null_rate=0.05, correction="holm")
    assert t.p_value.iloc[0] == pytest.approx(0.011504, abs=1e-6)
    assert t.p_value.iloc[1] == pytest.approx(1.0)
    assert t.p_value.iloc[2] == pytest.approx(0.05**10)
    assert list(t.reject) == [True, False, True]
    # Holm on (0.01, 0.04, 0.03): sorted ×3, ×2, ×1 = 0.03, 0.06, 0.04 → monotone 0.03, 0.06, 0.06.
    # BH: sorted ×3/1, ×3/2, ×3/3 = 0.03, 0.045, 0.04 → monotone from the top 0.03, 0.04, 0.04.
    p = np.array([0.01, 0.04, 0.03])
    assert multiplicity.adjust(p, "holm") == pytest.approx([0.03, 0.06, 0.06])
    assert multiplicity.adjust(p, "fdr_bh") == pytest.approx([0.03, 0.04, 0.04])
    for method in ("holm", "fdr_bh"):
        assert multiplicity.adjust(p, method) == pytest.approx(multipletests(p, method=method)[1])
    assert multiplicity.adjust(t.p_value.to_numpy(), "holm") == pytest.approx(t.p_holm.to_numpy())
    with_nan = multiplicity.adjust(np.array([0.01, np.nan, 0.03]), "holm")
    assert np.isnan(with_nan[1]) and with_nan[0] == pytest.approx(0.02)
    with pytest.raises(ValueError, match="correction"):
        multiplicity.adjust(p, "bonferroni")


# ---- against statsmodels ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("syn") / "study"
    make_synthetic_study(run_dir, n_cases=20, n_features=5, seed=3)
    return run_dir


def _statsmodels_gee(sub: pd.DataFrame, cov_type: str):
    y = sub.on_target.to_numpy(float)
    x = sub.abs_alpha.to_numpy(float)
    groups = pd.factorize(sub.case_id)[0]
    model = sm.GEE(y, sm.add_constant(x), groups=groups, family=sm.families.Binomial(),
                   cov_struct=sm.cov_struct.Exchangeable())
    return model.fit(cov_type=cov_type)


@pytest.mark.parametrize(("few", "cov_type"), [(40, "bias_reduced"), (0, "robust")])
def test_gee_matches_statsmodels_called_directly(synthetic, few: int, cov_type: str) -> None:
    labels = load_study(synthetic).labels
    fit = dose_response.fit_dose_response(labels, "combined", 1, few_clusters=few)
    sub = labels[(labels.method == "combined") & (labels.direction == 1)]
    ref = _statsmodels_gee(sub, cov_type)
    assert fit.cov_type == cov_type and fit.cov_struct == "exchangeable"
    assert (fit.n, fit.n_clusters, fit.n_levels) == (len(sub), 20, 2)
    assert fit.intercept == pytest.approx(ref.params[0], rel=1e-8)
    assert fit.slope == pytest.approx(ref.params[1], rel=1e-8)
    assert fit.slope_se == pytest.approx(ref.bse[1], rel=1e-8)
    assert fit.p_value == pytest.approx(ref.pvalues[1], rel=1e-6)
    assert fit.odds_ratio_per_unit == pytest.approx(np.exp(ref.params[1]))
    # the fitted curve is the model's prediction at each observed |α|
    pred = ref.predict(sm.add_constant(fit.curve.abs_alpha.to_numpy(float)))
    assert fit.curve.fitted.to_numpy() == pytest.approx(pred)


def test_statistics_find_what_was_planted(synthetic) -> None:
    s = compute_statistics(synthetic, n_boot=300)
    assert s.primary_method == "combined"
    # rates rise with |α| (planted slope 0.25 per unit) in the + direction
    plus = next(f for f in s.dose_fits if f.method == "combined" and f.direction == 1)
    assert plus.slope > 0
    assert s.spearman.rho > 0.5  # planted: a_f shared by both directions
    frames = s.to_frames()
    assert {"rates_by_cell", "feature_tests", "kappa_vs_radiologist", "inter_rater"} <= set(frames)
    assert set(s.kappa_vs_radiologist.method) == {"entity_diff", "llm_judge", "combined"}
    assert np.isfinite(s.inter_rater.value).all()
    assert "Wilson" in s.summary() and "Holm" in s.summary()


# ---- degenerate data: reported, never crashed on -------------------------------------------


def _report_ok(run_dir, tmp_path, stats=None) -> str:
    res = build_report(run_dir, tmp_path / "r.html", stats=stats, n_boot=100)
    assert (res.tables_dir / "rates_by_cell.parquet").exists()
    return res.html_path.read_text(encoding="utf-8")


def test_feature_with_no_on_target_change(tmp_path) -> None:
    run_dir = tmp_path / "study"
    make_synthetic_study(run_dir, n_cases=6, n_features=3, annotators=(), seed=1)
    data = load_study(run_dir)
    ids = set(data.steered.loc[data.steered.feature_id == "feat000", "generation_id"].astype(int))
    v = data.verdicts[data.verdicts.generation_id.isin(ids) & data.verdicts.label.notna()]
    store = StudyStore.open(run_dir)
    try:
        store.upsert("verdicts", [dict(generation_id=int(g), method=m, on_target=False, off_target=False,
                                       label="none", evidence={}, error=None)
                                  for g, m in zip(v.generation_id, v.method, strict=True)],
                     key=["generation_id", "method"])
    finally:
        store.close()
    s = compute_statistics(run_dir, n_boot=100)
    fr = s.feature_rates[(s.feature_rates.feature_id == "feat000") & (s.feature_rates.method == "combined")]
    assert (fr.n_on_target == 0).all() and (fr.p_on_target_low == 0.0).all()
    t = s.tests[(s.tests.feature_id == "feat000") & (s.tests.method == "combined")]
    assert (t.p_value == 1.0).all() and not t.reject.any()
    labels = load_study(run_dir).labels
    only = labels[labels.feature_id == "feat000"]
    fit = dose_response.fit_dose_response(only, "combined", 1)
    assert np.isnan(fit.slope) and fit.note == "no on-target change at any |α|"
    assert "feat000" in _report_ok(run_dir, tmp_path, s)


def test_one_annotator(tmp_path) -> None:
    run_dir = tmp_path / "study"
    make_synthetic_study(run_dir, n_cases=8, n_features=3, annotators=("rad1",), seed=2)
    s = compute_statistics(run_dir, n_boot=100)
    assert "one annotator: no agreement between radiologists" in s.notes
    assert s.inter_rater.value.isna().all()
    assert (s.inter_rater.note == "one annotator: no agreement between radiologists").all()
    assert not s.kappa_vs_radiologist.empty  # automated vs the single reader still works
    assert "one annotator" in _report_ok(run_dir, tmp_path, s)


def test_no_double_reads(tmp_path) -> None:
    run_dir = tmp_path / "study"
    make_synthetic_study(run_dir, n_cases=8, n_features=3, double_read_fraction=0.0, seed=4)
    s = compute_statistics(run_dir, n_boot=100)
    assert "no double reads: no agreement between radiologists" in s.notes
    assert s.inter_rater.value.isna().all()
    assert "no double reads" in _report_ok(run_dir, tmp_path, s)


def test_single_alpha(tmp_path) -> None:
    run_dir = tmp_path / "study"
    make_synthetic_study(run_dir, n_cases=8, n_features=4, alphas=(5.0,), seed=5)
    s = compute_statistics(run_dir, n_boot=100)
    assert s.dose_fits and all(np.isnan(f.slope) for f in s.dose_fits)
    assert all(f.note == "a single |α|: no dose–response can be estimated" for f in s.dose_fits)
    assert np.isnan(s.spearman.rho) and "both directions" in s.spearman.note
    html = _report_ok(run_dir, tmp_path, s)
    assert "a single |α|" in html


def test_empty_study(tmp_path) -> None:
    run_dir = tmp_path / "empty"
    StudyStore.open(run_dir).close()
    s = compute_statistics(run_dir, n_boot=100)
    assert "empty study: no generations stored" in s.notes
    assert s.cell_rates.empty and s.tests.empty and not s.dose_fits
    assert np.isnan(s.spearman.rho)
    assert "no labelled rows" in s.summary()
    html = _report_ok(run_dir, tmp_path, s)
    assert "empty study" in html
    assert main(["stats", str(run_dir)]) == 0
    assert (run_dir / "stats" / "flow.csv").exists()


# ---- the CLI -----------------------------------------------------------------------------------


def test_stats_and_report_cli(synthetic, tmp_path, capsys) -> None:
    assert main(["stats", str(synthetic), "--bootstrap", "200", "--out", str(tmp_path / "st")]) == 0
    out = capsys.readouterr().out
    assert "Spearman ρ" in out and "Cohen's κ" in out
    assert (tmp_path / "st" / "rates_by_feature.parquet").exists()
    html = tmp_path / "rep" / "study.html"
    assert main(["report", str(synthetic), "-o", str(html), "--bootstrap", "200",
                 "--title", "Pilot <b>one</b>"]) == 0
    text = html.read_text(encoding="utf-8")
    assert "Pilot &lt;b&gt;one&lt;/b&gt;" in text and "<b>one</b>" not in text
    assert (tmp_path / "rep" / "study_tables" / "annotations_long.csv").exists()
    assert main(["stats", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert main(["stats", str(synthetic), "--null-rate", "1.5"]) == 2


def test_krippendorff_alpha_equals_the_coincidence_matrix_formula() -> None:
    """The `krippendorff` package gives what the hand-written coincidence-matrix α gave, and handles
    interval and ordinal data too (Krippendorff 2011's worked example: α_interval = 0.849)."""
    import numpy as np

    rng = np.random.default_rng(0)
    labels = ["on", "off", "both", "none"]
    for _ in range(20):
        units = [[labels[i] if rng.random() > 0.2 else None for i in rng.integers(0, 4, rng.integers(1, 5))]
                 for _ in range(30)]
        vals = [[v for v in u if v is not None] for u in units]
        vals = [v for v in vals if len(v) >= 2]
        cats = sorted({x for v in vals for x in v})
        index = {c: i for i, c in enumerate(cats)}
        o = np.zeros((len(cats), len(cats)))
        for v in vals:
            cnt = np.bincount([index[x] for x in v], minlength=len(cats)).astype(float)
            o += (np.outer(cnt, cnt) - np.diag(cnt)) / (len(v) - 1)
        n_c, n = o.sum(1), o.sum()
        by_hand = 1.0 - (o.sum() - np.trace(o)) / ((n**2 - (n_c**2).sum()) / (n - 1))
        assert agreement.krippendorff_alpha_nominal(units) == pytest.approx(by_hand, abs=1e-12)
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", 4 coders × 12 units
    data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
            [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]
    units = [list(col) for col in zip(*data)]
    assert agreement.krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert agreement.krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)
