"""Reader-study statistics (issue 14): every answer counted, automated vs radiologists,
agreement per question, coherence as an outcome, completion, and the one export.

The seeded study (`seeded`) is small enough that every expected number below is worked out by
hand in the comments. Generation ids of `make_study(n_cases=2, n_features=2)`: case c0 → 1
baseline, 2 f0 +8, 3 f0 −8, 4 f1 +8, 5 f1 −8; case c1 → 6 baseline, 7 f0 +8, 8 f0 −8, 9 f1 +8,
10 f1 −8. The `combined` verdict is "on" for α > 0 and "none" for α < 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from annotation_ui.export import export_annotations
from annotation_ui.persistence import CHOICES
from evaluation.reader_study import QUESTIONS, READ_COLUMNS, compute_reader_stats
from evaluation.stats import compute_statistics
from evaluation.study_data import from_store, majority_labels
from protocols.cli import main
from steering.errors import RadsteerError
from steering.store import StudyStore
from tests.helpers_annotation import make_study

# (task, item, reader, answers, seconds)
CHANGE = [
    ("2", "alice", dict(label="on", interpretation_valid="yes", coherent="yes"), 10.0),
    ("2", "bob", dict(label="on", interpretation_valid="yes", coherent="no"), 5.0),
    ("3", "alice", dict(label="none", interpretation_valid="unsure", coherent="yes"), 20.0),
    ("3", "bob", dict(label="off", interpretation_valid="no", coherent="yes"), 15.0),
    ("7", "alice", dict(label="both", interpretation_valid="yes", coherent="no", blinded=False), 30.0),
    ("7", "bob", dict(skipped=True), 99.0),
    ("4", "alice", dict(label="on", interpretation_valid="yes", coherent="yes", blinded=True), 40.0),
    ("4", "bob", dict(label="on", interpretation_valid="yes", coherent="yes"), 25.0),
    ("5", "bob", dict(label="none", interpretation_valid="yes", coherent="yes", flagged=True), 35.0),
]
FEATURE = [
    ("f0", "alice", dict(validity="valid", clinically_relevant="yes"), 60.0),
    ("f0", "bob", dict(validity="partly", clinically_relevant="yes"), 50.0),
    ("f1", "alice", dict(validity="invalid", clinically_relevant="no"), 70.0),
    ("f1", "bob", dict(validity="invalid", clinically_relevant="no"), 80.0),
]
QUEUE = {("alice", "change"): ["2", "3", "7", "4"], ("bob", "change"): ["2", "3", "7", "4", "5", "8"],
         ("alice", "feature"): ["f0", "f1"], ("bob", "feature"): ["f0", "f1"]}


def _annotate(store: StudyStore, change=CHANGE, feature=FEATURE, queue=QUEUE, adjudicate: bool = True) -> None:
    rows = []
    for i, (key, who, ans, secs) in enumerate(change):
        rows.append(dict(task="change", item_key=key, generation_id=int(key), feature_id=None, annotator=who,
                         answers={"comment": "", "flagged": False, **ans}, seconds=secs, shown_order=i))
    for i, (key, who, ans, secs) in enumerate(feature):
        rows.append(dict(task="feature", item_key=key, generation_id=None, feature_id=key, annotator=who,
                         answers={"comment": "", "flagged": False, **ans}, seconds=secs, shown_order=i))
    if rows:
        store.insert_ignore("annotations", rows)
    q = [dict(annotator=a, task=t, position=p, item_key=k, double_read=False, seed=0)
         for (a, t), keys in queue.items() for p, k in enumerate(keys)]
    if q:
        store.insert_ignore("queue_items", q)
    if adjudicate:  # item 3: readers said none / off (a tie); the adjudicator decides off
        store.save_adjudication("change", "3", "carol", {"label": "off", "interpretation_valid": "no",
                                                         "coherent": "yes", "comment": "", "flagged": False},
                                reason="disagreement", readers={}, seconds=12.0)


@pytest.fixture
def seeded(tmp_path: Path) -> StudyStore:
    store = make_study(tmp_path, n_cases=2, n_features=2, contexts=False)
    _annotate(store)
    yield store
    store.close()


def _rate(answers: pd.DataFrame, task: str, q: str, feat: str, ans: str) -> pd.Series:
    r = answers[(answers.task == task) & (answers.question == q) & (answers.feature_id == feat)
                & (answers.answer == ans)]
    assert len(r) == 1, (task, q, feat, ans)
    return r.iloc[0]


def test_vocabularies_match_the_app() -> None:
    assert {t: dict(q) for t, q in QUESTIONS.items()} == {t: dict(q) for t, q in CHOICES.items()}


def test_every_answer_counted_with_wilson(seeded) -> None:
    rs = compute_reader_stats(from_store(seeded))
    a = rs.answers
    # change label, pooled over the 8 non-skipped reads: on = alice2, bob2, alice4, bob4 = 4/8.
    # Wilson 4/8: centre 0.5; half-width z·sqrt(0.25/8 + z²/256)/(1 + z²/8) = 1.959964·0.215072/1.480182 = 0.284784
    r = _rate(a, "change", "label", "(all)", "on")
    assert (r.n, r["count"], r.p) == (8, 4, 0.5)
    assert r.p_low == pytest.approx(0.215216, abs=2e-6) and r.p_high == pytest.approx(0.784784, abs=2e-6)
    assert (_rate(a, "change", "label", "(all)", "off")["count"], _rate(a, "change", "label", "(all)", "both")["count"],
            _rate(a, "change", "label", "(all)", "none")["count"]) == (1, 1, 2)
    # per feature: f0 reads = alice2 on, bob2 on, alice3 none, bob3 off, alice7 both (bob7 skipped) → n 5
    r = _rate(a, "change", "label", "f0", "on")
    assert (r.n, r["count"]) == (5, 2)
    assert (_rate(a, "change", "label", "f1", "none").n, _rate(a, "change", "label", "f1", "none")["count"]) == (3, 1)
    # coherence: "no" from bob2 and alice7 → 2/8; interpretation validity yes 6, no 1, unsure 1
    assert _rate(a, "change", "coherent", "(all)", "no")["count"] == 2
    assert [_rate(a, "change", "interpretation_valid", "(all)", x)["count"] for x in ("yes", "no", "unsure")] == [6, 1, 1]
    # feature task: validity of f0 valid 1/2, partly 1/2; pooled invalid 2/4; relevance yes 2/4
    assert _rate(a, "feature", "validity", "(all)", "invalid")["count"] == 2
    assert _rate(a, "feature", "validity", "f0", "partly").p == 0.5
    r = _rate(a, "feature", "clinically_relevant", "f1", "yes")  # zero counts are rows too: 0/2
    assert (r["count"], r.p, r.p_low) == (0, 0.0, 0.0)


def test_final_answers_adjudicated_else_majority(seeded) -> None:
    f = compute_reader_stats(from_store(seeded)).final.set_index(["task", "item_key", "question"])
    assert f.loc[("change", "3", "label")].tolist() == ["off", "adjudicated", 2]  # readers tied none/off
    assert f.loc[("change", "2", "label")].tolist() == ["on", "majority", 2]
    assert f.loc[("change", "7", "label")].tolist() == ["both", "majority", 1]  # bob skipped
    assert pd.isna(f.loc[("change", "2", "coherent")].value) and f.loc[("change", "2", "coherent")].source == "tie"
    assert f.loc[("feature", "f0", "validity")].source == "tie"
    assert f.loc[("feature", "f1", "validity")].value == "invalid"


def test_automated_vs_radiologists_kappa_and_confusion(seeded) -> None:
    st = compute_statistics(from_store(seeded), n_boot=50)
    # pairs (combined, radiologists): 2 (on,on), 3 (none,off adjudicated), 4 (on,on), 5 (none,none), 7 (on,both)
    # p_o = 3/5; combined marginals on .6 none .4; radiologists on .4 off .2 both .2 none .2
    # p_e = .6·.4 + .4·.2 = .32; κ = (.6 − .32)/(1 − .32) = .28/.68 = 0.411765
    k = st.kappa_vs_radiologist.set_index("method").loc["combined"]
    assert k.kappa == pytest.approx(0.411765, abs=1e-6) and k.n == 5
    assert (k.n_adjudicated, k.n_majority, k.n_ties) == (1, 4, 0)
    c = st.confusions["combined"]
    assert (c.loc["on", "on"], c.loc["on", "both"], c.loc["none", "off"], c.loc["none", "none"]) == (2, 1, 1, 1)
    assert int(c.to_numpy().sum()) == 5
    assert "1 adjudicated, 4 majority" in st.summary()


def test_inter_reader_agreement_per_question(seeded) -> None:
    ag = compute_reader_stats(from_store(seeded)).agreement
    got = {(r.question, r.statistic.split("'")[0]): r.value for r in ag.itertuples()}
    # label, double reads 2 (on,on), 3 (none,off), 4 (on,on): P̄ = (1 + 0 + 1)/3; p_j on 4/6, off 1/6, none 1/6
    # P_e = (16 + 1 + 1)/36 = .5 → κ = (2/3 − .5)/.5 = 1/3. α nominal: n = 6, disagreeing pairs Σo = 2,
    # Σ_{c≠k} n_c n_k = 36 − 18 = 18 → α = 1 − 5·2/18 = 4/9
    assert got[("label", "Fleiss")] == pytest.approx(1 / 3)
    assert got[("label", "Krippendorff")] == pytest.approx(4 / 9)
    assert got[("interpretation_valid", "Fleiss")] == pytest.approx(1 / 3)  # same pattern (yes,yes),(unsure,no)
    # coherent (yes,no),(yes,yes),(yes,yes): P̄ = 2/3; P_e = 25/36 + 1/36 → κ = (24/36 − 26/36)/(10/36) = −0.2
    # α: Σo = 2, Σ n_c n_k = 2·5·1 = 10 → α = 1 − 5·2/10 = 0
    assert got[("coherent", "Fleiss")] == pytest.approx(-0.2)
    assert got[("coherent", "Krippendorff")] == pytest.approx(0.0, abs=1e-12)
    # validity (valid,partly),(invalid,invalid): κ: P̄ = .5, P_e = (1 + 1 + 4)/16 → (.5 − .375)/.625 = 0.2.
    # α ordinal (invalid < partly < valid; n = 2, 1, 1): δ²(partly,valid) = (1 + 1 − 1)² = 1,
    # δ²(invalid,partly) = (2 + 1 − 1.5)² = 2.25, δ²(invalid,valid) = (2 + 1 + 1 − 1.5)² = 6.25;
    # α = 1 − (n−1)·Σo·δ²/Σn_c·n_k·δ² = 1 − 3·2/(2·(2·2.25 + 2·6.25 + 1)) = 1 − 6/36
    assert got[("validity", "Fleiss")] == pytest.approx(0.2)
    assert got[("validity", "Krippendorff")] == pytest.approx(5 / 6)
    assert got[("clinically_relevant", "Fleiss")] == pytest.approx(1.0)
    assert ag[ag.question == "validity"].statistic.str.contains("ordinal").any()


def test_coherence_beside_on_target(seeded) -> None:
    c = compute_reader_stats(from_store(seeded)).coherence
    f0 = c[(c.feature_id == "f0") & (c.abs_alpha == 8.0)].iloc[0]
    # f0: coherent finals 2 tie (left out), 3 yes (adjudicated), 7 no → 1/2; labels on, off, both → 2/3;
    # both answered 3 (off, yes), 7 (both, no) → on-target and coherent 0/2
    assert (f0.n_incoherent, f0.n_coherence, f0.n_on_target, f0.n_label) == (1, 2, 2, 3)
    assert (f0.n_on_target_coherent, f0.n_both_answered, f0.p_on_target_coherent) == (0, 2, 0.0)
    f1 = c[(c.feature_id == "f1") & (c.abs_alpha == 8.0)].iloc[0]
    assert (f1.n_incoherent, f1.n_on_target, f1.n_on_target_coherent) == (0, 1, 1)
    pooled = c[c.feature_id == "(all)"].iloc[0]
    assert (pooled.n_incoherent, pooled.n_coherence, pooled.n_on_target, pooled.n_label) == (1, 4, 3, 5)
    assert np.isnan(pooled.abs_alpha)
    # Wilson 1/4: centre (.25 + z²/8)/(1 + z²/4) = .730182/1.960365; half z·sqrt(.1875/4 + z²/64)/1.960365
    assert pooled.p_incoherent_low == pytest.approx(0.045586, abs=2e-6)


def test_completion_table(seeded) -> None:
    rs = compute_reader_stats(from_store(seeded))
    w = rs.completion.set_index(["task", "item_key"])
    assert w.loc[("change", "7"), "bob"] == "skipped" and w.loc[("change", "8"), "bob"] == "missing"
    assert w.loc[("change", "5"), "alice"] == "" and w.loc[("change", "5"), "bob"] == "done"
    assert list(w.index.get_level_values(1)[:6]) == ["2", "3", "4", "5", "7", "8"]  # numeric order
    p = rs.progress.set_index(["task", "annotator"])
    assert p.loc[("change", "bob")].tolist()[:4] == [6, 4, 1, 1]
    assert p.loc[("change", "alice"), "median_seconds"] == 25.0  # 10, 20, 30, 40
    assert p.loc[("change", "bob"), "median_seconds"] == 20.0  # 5, 15, 25, 35; the skip's 99 s not counted


def test_one_export_row_per_read(seeded, tmp_path: Path) -> None:
    out = tmp_path / "reads.csv"
    assert export_annotations(seeded, out) == 13
    df = pd.read_csv(out)
    assert list(df.columns) == READ_COLUMNS
    a4 = df[(df.item_key == "4") & (df.annotator == "alice")].iloc[0]
    assert (a4.label, a4.combined, a4.alpha, a4.case_id, a4.seconds, a4.blinded) == ("on", "on", 8.0, "c0", 40.0, True)
    assert df[(df.item_key == "3")].adjudicated.all() and not df[(df.item_key == "2")].adjudicated.any()
    assert df[df.task == "feature"].combined.isna().all()
    pq = tmp_path / "reads.parquet"
    assert export_annotations(seeded, pq) == 13
    back = pd.read_parquet(pq)
    assert len(back) == 13 and back.skipped.sum() == 1 and back.flagged.sum() == 1
    assert export_annotations(seeded, pq, task="feature") == 4  # an earlier export is replaced
    # a user's file is never overwritten
    mine = tmp_path / "mine.csv"
    mine.write_text("my,own\n1,2\n")
    with pytest.raises(RadsteerError, match="not a radsteer export"):
        export_annotations(seeded, mine)
    assert mine.read_text() == "my,own\n1,2\n"
    with pytest.raises(RadsteerError, match="--export"):
        export_annotations(seeded, tmp_path / "a.txt")


# ---- degenerate studies ---------------------------------------------------------------------


def test_no_reads(tmp_path: Path) -> None:
    store = make_study(tmp_path, n_cases=1, n_features=1, contexts=False)
    rs = compute_reader_stats(from_store(store))
    assert rs.reads.empty and rs.answers.empty and rs.final.empty and rs.coherence.empty and rs.completion.empty
    assert rs.agreement.value.isna().all() and set(rs.agreement.note) == {"no reads"}
    assert "(no reads)" in rs.summary()
    assert compute_statistics(from_store(store), n_boot=20).reader is None
    # queues dealt, nothing read yet: every assigned read is missing
    _annotate(store, change=[], feature=[], queue={("alice", "change"): ["2", "3"]}, adjudicate=False)
    rs = compute_reader_stats(from_store(store))
    assert rs.progress.iloc[0].tolist()[:6] == ["change", "alice", 2, 0, 0, 2]
    assert compute_statistics(from_store(store), n_boot=20).reader is not None
    store.close()


def test_one_reader(tmp_path: Path) -> None:
    store = make_study(tmp_path, n_cases=2, n_features=2, contexts=False)
    _annotate(store, change=[c for c in CHANGE if c[1] == "alice"], feature=FEATURE[:1], queue={},
              adjudicate=False)
    st = compute_statistics(from_store(store), n_boot=20)
    rs = st.reader
    assert rs.agreement.value.isna().all()
    assert set(rs.agreement.note) == {"one annotator: no agreement between radiologists"}
    assert _rate(rs.answers, "change", "label", "(all)", "on")["count"] == 2  # alice2, alice4 of 4
    assert (rs.final.source == "majority").all()
    assert "reader study: one reader, so no inter-reader agreement" in st.notes
    store.close()


def test_all_answers_equal(tmp_path: Path) -> None:
    store = make_study(tmp_path, n_cases=2, n_features=2, contexts=False)
    same = dict(label="on", interpretation_valid="yes", coherent="yes")
    _annotate(store, change=[(k, w, same, 1.0) for k in ("2", "4") for w in ("alice", "bob")],
              feature=[], queue={}, adjudicate=False)
    rs = compute_reader_stats(from_store(store))
    lab = rs.agreement[rs.agreement.question == "label"]
    assert lab.value.isna().all()  # one label only: κ and α undefined, said so
    assert lab.note.str.contains("one label|one answer").all()
    r = _rate(rs.answers, "change", "label", "(all)", "on")
    assert (r["count"], r.n, r.p_high) == (4, 4, 1.0)
    assert rs.coherence[rs.coherence.feature_id == "(all)"].iloc[0].p_incoherent == 0.0
    store.close()


def test_majority_labels_adjudication_overrides_a_tie() -> None:
    reads = pd.DataFrame({"generation_id": [1, 1, 2], "label": ["on", "off", "none"]})
    m = majority_labels(reads, {1: "both"}).set_index("generation_id")
    assert m.loc[1].tolist() == ["both", 2, False, "adjudicated"]
    assert m.loc[2].tolist() == ["none", 1, False, "majority"]
    tie = majority_labels(reads).set_index("generation_id").loc[1]
    assert pd.isna(tie.label) and (tie.n_reads, tie.tie, tie.source) == (2, True, "tie")


def test_radsteer_stats_cli_writes_reader_tables(seeded, tmp_path: Path, capsys) -> None:
    seeded.close()
    assert main(["stats", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Reader study" in out and "change/label (n=8): on 50%" in out
    assert "12 reads" not in out and "13 reads (1 skipped) by 2 readers; 1 assigned reads missing" in out
    for name in ("reader_reads", "reader_answers", "reader_agreement", "reader_coherence", "reader_completion",
                 "reader_progress", "reader_final_answers"):
        assert (tmp_path / "stats" / f"{name}.csv").is_file() and (tmp_path / "stats" / f"{name}.parquet").is_file()
    k = pd.read_csv(tmp_path / "stats" / "kappa_vs_radiologist.csv")
    assert k.n_adjudicated.tolist() == [1]


def test_report_section_and_headline(seeded, tmp_path: Path) -> None:
    from evaluation.report import build_report

    seeded.close()
    res = build_report(tmp_path, n_boot=20)
    page = res.html_path.read_text()
    assert 'id="reader-study"' in page and "Reader study" in page
    assert "13 reads (1 skipped) by 2 readers; 1 assigned reads missing" in page
    # final answers: label 1 adjudicated + 4 majority, interpretation 1 + 4, coherent 1 + 3 + 1 tie (item 2),
    # validity 1 majority + 1 tie (f0), relevance 2 majority
    assert "item × question: majority: 14, adjudicated: 3, tie: 2" in page
    assert "incoherent steered reports, radiologists" in page and "25.0% [4.6," in page  # 1/4 pooled
    assert "50.0% [21.5, 78.5]" in page  # change label "on" 4/8


def test_report_leaves_the_section_out_without_reads(tmp_path: Path) -> None:
    from evaluation.report import build_report

    make_study(tmp_path, n_cases=1, n_features=1, contexts=False).close()
    res = build_report(tmp_path, n_boot=20)
    page = res.html_path.read_text()
    assert 'id="reader-study"' not in page and "incoherent steered reports" not in page
