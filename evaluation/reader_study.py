"""The radiologists' reader study counted answer by answer.

Every question the app asks (the change label, interpretation validity, coherence of the
steered report, feature validity, clinical relevance) gets per-feature and pooled proportions
with Wilson intervals, inter-reader agreement, and a final answer per item: the adjudicated
answer where an adjudicator recorded one, else the majority of the non-skipped reads (a tie
stays unresolved rather than being broken by an arbitrary order). `reads_table` is the one
tidy export (one row per read), shared by `radsteer annotate --export` and `radsteer stats`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from evaluation import agreement
from evaluation.rates import wilson_interval
from evaluation.study_data import AUTOMATED_METHODS, LABELS, StudyData

QUESTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "change": {"label": LABELS, "interpretation_valid": ("yes", "no", "unsure"), "coherent": ("yes", "no")},
    "feature": {"validity": ("valid", "partly", "invalid"), "clinically_relevant": ("yes", "no")},
}
"""The app's answer vocabularies (annotation_ui.persistence.CHOICES; a test keeps them equal)."""
ORDINAL: dict[str, tuple[str, ...]] = {"validity": ("invalid", "partly", "valid")}
"""Questions whose answers are ordered: Krippendorff's α uses the ordinal metric for them."""
ANSWER_COLUMNS = [q for qs in QUESTIONS.values() for q in qs]
POOLED = "(all)"
READ_COLUMNS = ["task", "item_key", "annotator", "generation_id", "case_id", "feature_id", "alpha",
                *ANSWER_COLUMNS, "comment", "flagged", "skipped", "blinded", "seconds", "shown_order",
                "adjudicated", *AUTOMATED_METHODS, "created_at", "updated_at"]


def reads_table(data: StudyData) -> pd.DataFrame:
    """One row per read (both tasks, skips included): answers spread into columns, time on task,
    blinded state (None where the app did not record it), whether the item was adjudicated, and
    the automated labels of the generation (entity_diff, llm_judge, combined) joined."""
    a = data.annotations
    if a.empty:
        return pd.DataFrame(columns=READ_COLUMNS)
    rows = []
    for r in a.to_dict("records"):
        ans = r["answers"] if isinstance(r["answers"], dict) else {}
        row = {k: r.get(k) for k in ("task", "item_key", "annotator", "generation_id", "feature_id", "seconds",
                                     "shown_order", "created_at", "updated_at")}
        for q in ANSWER_COLUMNS:
            row[q] = ans.get(q) if q in QUESTIONS.get(r["task"], {}) else None
        row["comment"] = ans.get("comment")
        row["flagged"] = bool(ans.get("flagged", False))
        row["skipped"] = bool(ans.get("skipped", False))
        row["blinded"] = ans.get("blinded") if isinstance(ans.get("blinded"), bool) else None
        rows.append(row)
    out = pd.DataFrame(rows)
    out["generation_id"] = pd.to_numeric(out.generation_id, errors="coerce").astype("Int64")
    g = data.generations
    if not g.empty:
        design = g.rename(columns={"id": "generation_id", "feature_id": "g_feature"})[
            ["generation_id", "case_id", "g_feature", "alpha"]].astype({"generation_id": "Int64"})
        out = out.merge(design, on="generation_id", how="left")
        out["feature_id"] = out.feature_id.where(out.feature_id.notna(), out.g_feature)
    else:
        out["case_id"], out["alpha"] = None, np.nan
    adj = data.adjudications
    keys = set(zip(adj.task, adj.item_key.astype(str), strict=True)) if not adj.empty else set()
    out["adjudicated"] = [(t, str(k)) in keys for t, k in zip(out.task, out.item_key, strict=True)]
    v = data.verdicts
    for m in AUTOMATED_METHODS:
        labs = {} if v.empty else dict(v[(v.method == m) & v.label.isin(LABELS)][["generation_id", "label"]]
                                      .itertuples(index=False, name=None))
        out[m] = [labs.get(int(x)) if not pd.isna(x) else None for x in out.generation_id]
    return out.sort_values(["task", "annotator", "shown_order", "item_key"], na_position="last") \
        .reset_index(drop=True)[READ_COLUMNS]


def _answered(reads: pd.DataFrame, task: str, question: str) -> pd.DataFrame:
    """Non-skipped reads of `task` that answer `question` with a word of its vocabulary."""
    if reads.empty:
        return reads
    r = reads[(reads.task == task) & ~reads.skipped.astype(bool)]
    return r[r[question].isin(QUESTIONS[task][question])]


def answer_rates(reads: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per task, question, feature (and pooled, feature_id "(all)") and answer: count of n reads,
    proportion and Wilson interval. Every answer of the vocabulary gets a row (zero counts too)."""
    cols = ["task", "question", "feature_id", "answer", "n", "count", "p", "p_low", "p_high"]
    rows = []
    for task, qs in QUESTIONS.items():
        for q, vocab in qs.items():
            r = _answered(reads, task, q)
            if r.empty:
                continue
            groups = [(str(f), g) for f, g in r.groupby(r.feature_id.fillna(r.item_key).astype(str), sort=True)]
            for feat, g in [*groups, (POOLED, r)]:
                counts = g[q].value_counts()
                for ans in vocab:
                    rows.append((task, q, feat, ans, len(g), int(counts.get(ans, 0))))
    out = pd.DataFrame(rows, columns=cols[:6])
    if out.empty:
        return pd.DataFrame(columns=cols)
    low, high = wilson_interval(out["count"].to_numpy(), out["n"].to_numpy(), level)
    out["p"] = out["count"] / out["n"]
    out["p_low"], out["p_high"] = low, high
    return out[cols]


def final_answers(reads: pd.DataFrame, adjudications: pd.DataFrame) -> pd.DataFrame:
    """One row per task × item × question: the adjudicated answer where present, else the
    majority of the non-skipped reads; source is "adjudicated", "majority" or "tie" (value None)."""
    cols = ["task", "item_key", "question", "value", "source", "n_reads"]
    adj: dict[tuple[str, str], dict] = {}
    if not adjudications.empty:
        for r in adjudications.itertuples(index=False):
            adj[(r.task, str(r.item_key))] = r.answers if isinstance(r.answers, dict) else {}
    rows = []
    for task, qs in QUESTIONS.items():
        for q, vocab in qs.items():
            r = _answered(reads, task, q)
            items = {str(k): list(g[q]) for k, g in r.groupby(r.item_key.astype(str))} if not r.empty else {}
            items.update({k: items.get(k, []) for (t, k), a in adj.items() if t == task and a.get(q) in vocab})
            for key in sorted(items):
                votes = items[key]
                final = adj.get((task, key), {}).get(q)
                if final in vocab:
                    rows.append((task, key, q, final, "adjudicated", len(votes)))
                    continue
                counts = Counter(votes).most_common()
                tie = len(counts) > 1 and counts[0][1] == counts[1][1]
                rows.append((task, key, q, None if tie else counts[0][0], "tie" if tie else "majority", len(votes)))
    return pd.DataFrame(rows, columns=cols)


def inter_reader(reads: pd.DataFrame) -> pd.DataFrame:
    """Fleiss' κ and Krippendorff's α (ordinal for feature validity, nominal otherwise) per question."""
    cols = ["task", "question", "statistic", "value", "n_items", "raters_per_item", "note"]
    rows = []
    for task, qs in QUESTIONS.items():
        for q, vocab in qs.items():
            r = _answered(reads, task, q)
            ratings = pd.DataFrame({"item": r.item_key.astype(str), "rater": r.annotator, "label": r[q]}) \
                if not r.empty else pd.DataFrame(columns=["item", "rater", "label"])
            fk = agreement.fleiss_kappa(ratings, vocab)
            rows.append({"task": task, "question": q, **fk})
            level = "ordinal" if q in ORDINAL else "nominal"
            ka = {"statistic": f"Krippendorff's alpha ({level})", "value": np.nan, "n_items": 0,
                  "raters_per_item": np.nan, "note": ""}
            units = [list(g) for _, g in ratings.groupby("item")["label"] if len(g) >= 2] if len(ratings) else []
            if ratings.empty:
                ka["note"] = "no reads"
            elif not units:
                ka["note"] = ("one annotator: no agreement between radiologists" if ratings.rater.nunique() < 2
                              else "no double reads")
            else:
                ka.update(n_items=len(units), raters_per_item=float(np.mean([len(u) for u in units])))
                ka["value"] = agreement.krippendorff_alpha(units, level, ORDINAL.get(q, vocab))
                if np.isnan(ka["value"]):
                    ka["note"] = "every read gave one answer: α is undefined"
            rows.append({"task": task, "question": q, **ka})
    return pd.DataFrame(rows, columns=cols)


def coherence_outcome(final: pd.DataFrame, data: StudyData, level: float = 0.95) -> pd.DataFrame:
    """Per feature × |α| (and per feature, and overall, with abs_alpha empty): the rate of steered
    reports the radiologists found incoherent beside their on-target rate (on ∪ both) and the rate
    on-target AND coherent — a feature on-target only by breaking the report is no success."""
    cols = ["feature_id", "abs_alpha", "n_coherence", "n_incoherent", "p_incoherent", "p_incoherent_low",
            "p_incoherent_high", "n_label", "n_on_target", "p_on_target", "p_on_target_low", "p_on_target_high",
            "n_both_answered", "n_on_target_coherent", "p_on_target_coherent", "p_on_target_coherent_low",
            "p_on_target_coherent_high"]
    ch = final[(final.task == "change") & final.value.notna()] if not final.empty else final
    if ch.empty or data.generations.empty:
        return pd.DataFrame(columns=cols)
    wide = ch.pivot(index="item_key", columns="question", values="value")
    wide = wide.reindex(columns=["label", "coherent"])
    wide.index = pd.to_numeric(wide.index, errors="coerce")
    g = data.generations.set_index("id")[["feature_id", "alpha"]]
    wide = wide.join(g, how="inner")
    wide = wide[wide.alpha.astype(float) != 0.0]
    if wide.empty:
        return pd.DataFrame(columns=cols)
    wide["abs_alpha"] = wide.alpha.astype(float).abs()

    def summarise(df: pd.DataFrame) -> dict:
        coh, lab = df.coherent.dropna(), df.label.dropna()
        both = df.dropna(subset=["coherent", "label"])
        return {"n_coherence": len(coh), "n_incoherent": int((coh == "no").sum()),
                "n_label": len(lab), "n_on_target": int(lab.isin(["on", "both"]).sum()),
                "n_both_answered": len(both),
                "n_on_target_coherent": int((both.label.isin(["on", "both"]) & (both.coherent == "yes")).sum())}

    rows = []
    for (f, a), df in wide.groupby(["feature_id", "abs_alpha"], sort=True):
        rows.append({"feature_id": f, "abs_alpha": float(a), **summarise(df)})
    for f, df in wide.groupby("feature_id", sort=True):
        rows.append({"feature_id": f, "abs_alpha": np.nan, **summarise(df)})
    rows.append({"feature_id": POOLED, "abs_alpha": np.nan, **summarise(wide)})
    out = pd.DataFrame(rows)
    for p, k, n in (("p_incoherent", "n_incoherent", "n_coherence"), ("p_on_target", "n_on_target", "n_label"),
                    ("p_on_target_coherent", "n_on_target_coherent", "n_both_answered")):
        kk, nn = out[k].to_numpy(float), out[n].to_numpy(float)
        out[p] = np.where(nn > 0, kk / np.where(nn > 0, nn, 1), np.nan)
        out[f"{p}_low"], out[f"{p}_high"] = wilson_interval(kk, nn, level)
    return out[cols]


def completion(reads: pd.DataFrame, queue: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Readers × items: (wide table task, item_key, one column per reader with "done", "skipped",
    "missing" (assigned, not read) or "" (not assigned); per-reader progress). Without stored
    queues an item counts as assigned to those who read it."""
    assigned: set[tuple[str, str, str]] = set()
    if not queue.empty:
        assigned = {(t, str(k), a) for t, k, a in zip(queue.task, queue.item_key, queue.annotator, strict=True)}
    status: dict[tuple[str, str, str], str] = {k: "missing" for k in assigned}
    if not reads.empty:
        for t, k, a, s in zip(reads.task, reads.item_key, reads.annotator, reads.skipped, strict=True):
            status[(t, str(k), a)] = "skipped" if s else "done"
    readers = sorted({a for _, _, a in status})
    prog_cols = ["task", "annotator", "assigned", "done", "skipped", "missing", "median_seconds"]
    if not status:
        return pd.DataFrame(columns=["task", "item_key", "n_done", "n_missing"]), pd.DataFrame(columns=prog_cols)
    items = sorted({(t, k) for t, k, _ in status}, key=lambda x: (x[0], _key_order(x[1])))
    wide = pd.DataFrame([{"task": t, "item_key": k, **{a: status.get((t, k, a), "") for a in readers}}
                         for t, k in items])
    wide["n_done"] = (wide[readers] == "done").sum(axis=1)
    wide["n_missing"] = (wide[readers] == "missing").sum(axis=1)
    prog = []
    secs = {} if reads.empty else {
        (t, a): g.seconds.dropna() for (t, a), g in reads[~reads.skipped.astype(bool)].groupby(["task", "annotator"])}
    for t, a in sorted({(t, a) for t, _, a in status}):
        c = Counter(s for (tt, _, aa), s in status.items() if tt == t and aa == a)
        s = secs.get((t, a), pd.Series(dtype=float))
        prog.append((t, a, sum(c.values()), c["done"], c["skipped"], c["missing"],
                     float(s.median()) if len(s) else np.nan))
    return wide, pd.DataFrame(prog, columns=prog_cols)


def _key_order(key: str) -> tuple[int, int | str]:
    return (0, int(key)) if key.isdigit() else (1, key)


@dataclass
class ReaderStudyStats:
    """Every table of the reader study; `to_frames()` names them as written under stats/."""

    reads: pd.DataFrame
    answers: pd.DataFrame
    final: pd.DataFrame
    agreement: pd.DataFrame
    coherence: pd.DataFrame
    completion: pd.DataFrame
    progress: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def to_frames(self) -> dict[str, pd.DataFrame]:
        return {"reader_reads": self.reads, "reader_answers": self.answers, "reader_final_answers": self.final,
                "reader_agreement": self.agreement, "reader_coherence": self.coherence,
                "reader_completion": self.completion, "reader_progress": self.progress}

    def summary(self) -> str:
        """Plain-text lines for `radsteer stats`."""
        lines = ["Reader study (adjudicated answer where present, else majority; ties unresolved):"]
        if self.reads.empty:
            return lines[0] + "\n  (no reads)"
        n_skip = int(self.reads.skipped.sum())
        lines.append(f"  {len(self.reads)} reads ({n_skip} skipped) by {self.reads.annotator.nunique()} readers; "
                     f"{int(self.progress.missing.sum())} assigned reads missing")
        pooled = self.answers[self.answers.feature_id == POOLED]
        for (task, q), g in pooled.groupby(["task", "question"], sort=False):
            parts = ", ".join(f"{r.answer} {100 * r.p:.0f}% [{100 * r.p_low:.0f}–{100 * r.p_high:.0f}]"
                              for r in g.itertuples(index=False))
            lines.append(f"  {task}/{q} (n={int(g.n.iloc[0])}): {parts}")
        for r in self.agreement.itertuples(index=False):
            val = f"{r.value:.2f}" if np.isfinite(r.value) else "undefined"
            lines.append(f"  agreement {r.question}: {r.statistic} = {val} ({r.n_items} items)"
                         + (f"  [{r.note}]" if r.note else ""))
        c = self.coherence[self.coherence.feature_id == POOLED]
        for r in c.itertuples(index=False):
            lines.append(f"  incoherent steered reports: {r.n_incoherent}/{r.n_coherence}; on-target "
                         f"{r.n_on_target}/{r.n_label}; on-target and coherent "
                         f"{r.n_on_target_coherent}/{r.n_both_answered}")
        src = self.final.source.value_counts() if not self.final.empty else pd.Series(dtype=int)
        lines.append("  final answers: " + ", ".join(f"{k} {int(v)}" for k, v in src.items()))
        return "\n".join(lines)


def compute_reader_stats(data: StudyData, level: float = 0.95) -> ReaderStudyStats:
    """All reader-study tables of a study (empty tables and a note when nobody has read yet)."""
    reads = reads_table(data)
    final = final_answers(reads, data.adjudications)
    wide, prog = completion(reads, data.queue)
    notes = []
    if reads.empty:
        notes.append("reader study: no reads stored")
    elif reads.annotator.nunique() < 2:
        notes.append("reader study: one reader, so no inter-reader agreement")
    return ReaderStudyStats(reads=reads, answers=answer_rates(reads, level), final=final,
                            agreement=inter_reader(reads), coherence=coherence_outcome(final, data, level),
                            completion=wide, progress=prog, notes=notes)
