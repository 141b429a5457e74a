"""Feature interpretation on planted features: the lexicon explainer names the planted concept,
detection scoring separates it (F1 ≥ 0.9), a random feature scores low, runs resume."""

from __future__ import annotations

import csv

import pytest

from evaluation.detection import detection_scores
from evaluation.interpret import make_interpreter, write_interpretations_csv
from evaluation.interpret_examples import split_evidence
from steering.store import StudyStore
from tests.helpers_interpret import mined_planted_study


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
    return mined_planted_study(tmp_path_factory.mktemp("interp"))


@pytest.fixture
def store(mined, tmp_path):
    """A fresh copy of the mined study per test (interpretations never leak between tests)."""
    import shutil

    shutil.copytree(mined.run_dir, tmp_path / "run")
    with StudyStore.open(tmp_path / "run") as s:
        yield s


def test_lexicon_explainer_names_the_planted_concept_and_scores_it(mined, store) -> None:
    report = make_interpreter("lexicon").run(store)
    assert report.errors == 0 and report.interpreted == report.features
    rows = {r["feature_id"]: r for r in store.rows("feature_interpretations")}
    for fid, word in mined.planted.items():
        r = rows[fid]
        assert r["targets"] == [word], (fid, r["description"], r["details"]["enrichment"][:3])
        assert r["description"] == f"mentions of {word}"
        assert r["f1"] >= 0.9 and r["n_active"] >= 10 and r["n_inactive"] >= 10
        assert r["recall_by_quantile"] and set(r["recall_by_quantile"]) <= {"q1", "q2", "q3", "q4"}
        # every held-out example is stored for audit, with its label and prediction
        assert len(r["examples"]) == r["n_active"] + r["n_inactive"]
        assert all("prediction" in e and "label" in e for e in r["examples"])
    rnd = rows[mined.random_feature]
    assert rnd["f1"] is None or rnd["f1"] <= 0.6, (rnd["description"], rnd["f1"])
    feats = {r["feature_id"]: r for r in store.rows("features")}
    assert feats["f0"]["description"] == "mentions of pacemaker" and feats["f0"]["explainer"] == "lexicon"
    assert feats["f0"]["target_concepts"] == ["pacemaker"] and feats["f0"]["interpretability"] >= 0.9


def test_held_out_examples_were_never_shown_to_the_explainer(mined, store) -> None:
    ctx = store.feature_contexts_by_feature(["f0"])["f0"]
    ev = split_evidence("f0", ctx, store.feature_stats_by_feature()["f0"])
    shown = {(c.doc_id, c.token_index) for c in ev.shown_active + ev.shown_inactive}
    held = {(e.context.doc_id, e.context.token_index) for e in ev.heldout_active}
    held |= {(c.doc_id, c.token_index) for c in ev.heldout_inactive_pool}
    assert shown and held and not shown & held
    assert all(c.window_inactive for c in ev.heldout_inactive_pool)  # a negative has no active neighbour
    # windows of held-out actives do not overlap any shown active window
    for e in ev.heldout_active:
        a0, a1 = e.context.span
        for s in ev.shown_active:
            if s.doc_id == e.context.doc_id:
                b0, b1 = s.span
                assert a1 < b0 or b1 < a0


def test_rerun_skips_done_features_and_force_redoes_them(store) -> None:
    interp = make_interpreter("lexicon")
    first = interp.run(store)
    before = store.rows("feature_interpretations")
    again = interp.run(store)
    assert again.skipped == first.features and again.interpreted == 0
    assert store.rows("feature_interpretations") == before
    forced = interp.run(store, force=True)
    assert forced.interpreted == first.features
    assert len(store.rows("feature_interpretations")) == len(before)  # replaced, never duplicated


def test_interpretations_csv_has_the_documented_columns(mined, store, tmp_path) -> None:
    make_interpreter("lexicon").run(store)
    path = tmp_path / "stats" / "interpretations.csv"
    n = write_interpretations_csv(store, path, "lexicon")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert n == len(rows) == len(store.mined_feature_ids())
    assert list(rows[0])[:9] == ["feature_id", "description", "targets", "explainer", "f1", "precision",
                                 "recall", "n_active", "n_inactive"]
    f0 = next(r for r in rows if r["feature_id"] == "f0")
    assert f0["targets"] == "pacemaker" and float(f0["f1"]) >= 0.9 and f0["explainer"] == "lexicon"
    assert not list(path.parent.glob(".*tmp*"))  # written beside, renamed into place


def test_detection_scores_edge_cases() -> None:
    s = detection_scores([True, True, False, False], [True, False, True, False], ["q1", "q4", None, None],
                         ["active", "active", "hard", "random"])
    assert (s.precision, s.recall, s.f1, s.balanced_accuracy) == (0.5, 0.5, 0.5, 0.5)
    assert s.recall_by_quantile == {"q1": 1.0, "q4": 0.0}
    assert s.recall_by_kind == {"hard": 0.0, "random": 1.0}
    nothing = detection_scores([True, False], [False, False])
    assert nothing.precision is None and nothing.f1 == 0.0 and nothing.recall == 0.0
    with pytest.raises(ValueError):
        detection_scores([True], [])



def test_a_feature_too_rare_to_hold_out_is_unscored_not_an_error(tmp_path) -> None:
    """One mined context and no inactive ones: it is explained, its F1 is unknown, and a re-run does
    not retry it (only real failures are errors to retry)."""
    from tests.helpers_interpret import add_synthetic_feature

    with StudyStore.open(tmp_path) as store:
        add_synthetic_feature(store, "rare", "pacemaker", n_top=1, n_quantile=0, n_zero=0)
        interp = make_interpreter("lexicon")
        report = interp.run(store)
        assert (report.errors, report.unscored, report.interpreted) == (0, 1, 1)
        assert "too rare to score" in report.summary()
        row = store.rows("feature_interpretations")[0]
        assert row["error"] is None and row["f1"] is None and row["n_active"] == 0
        assert interp.run(store).skipped == 1
