"""The report's reader-study section: every answer counted, agreement per question, coherence
beside the on-target rate, and who has not read what yet (tables from evaluation.reader_study)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from evaluation.reader_study import POOLED

if TYPE_CHECKING:  # pragma: no cover
    from evaluation.report import ReportContext


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _pct(p: float, lo: float, hi: float) -> str:
    if not np.isfinite(p):
        return "–"
    return f"{100 * p:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def pooled_answers(answers: pd.DataFrame) -> pd.DataFrame:
    """Pooled answers as shown: task, question, answer, count / n, % [Wilson 95% CI]."""
    p = answers[answers.feature_id == POOLED]
    return pd.DataFrame({"task": p.task, "question": p.question, "answer": p.answer,
                         "count / n": [f"{c} / {n}" for c, n in zip(p["count"], p.n, strict=True)],
                         "% [Wilson 95% CI]": [_pct(a, b, c) for a, b, c in zip(p.p, p.p_low, p.p_high, strict=True)]})


def render_reader_study(ctx: ReportContext) -> str | None:
    """None when the study has no reader study (no reads, no queues)."""
    rs = ctx.stats.reader
    if rs is None:
        return None
    reads = rs.reads
    src = rs.final.source.value_counts() if not rs.final.empty else pd.Series(dtype=int)
    missing = int(rs.progress.missing.sum()) if not rs.progress.empty else 0
    head = (f"<p>{len(reads)} reads ({int(reads.skipped.sum()) if len(reads) else 0} skipped) by "
            f"{reads.annotator.nunique() if len(reads) else 0} readers; {missing} assigned reads missing. "
            "Final answer per item: the adjudicated answer where an adjudicator recorded one, else the majority "
            "of the non-skipped reads; ties stay unresolved and are left out (final answers, item × question: "
            + _e(", ".join(f"{k}: {int(v)}" for k, v in src.items()) or "no items") + ").</p>")
    coh = rs.coherence.copy()
    if not coh.empty:
        coh.insert(2, "incoherent", [_pct(a, b, c) for a, b, c in
                                     zip(coh.p_incoherent, coh.p_incoherent_low, coh.p_incoherent_high, strict=True)])
        coh.insert(3, "on-target", [_pct(a, b, c) for a, b, c in
                                    zip(coh.p_on_target, coh.p_on_target_low, coh.p_on_target_high, strict=True)])
        coh.insert(4, "on-target and coherent", [_pct(a, b, c) for a, b, c in zip(
            coh.p_on_target_coherent, coh.p_on_target_coherent_low, coh.p_on_target_coherent_high, strict=True)])
        coh = coh.assign(abs_alpha=coh.abs_alpha.map(lambda a: "all" if pd.isna(a) else f"{a:g}"))
    return (head
            + "<h3>Every answer (pooled over features)</h3>"
            + ctx.table(pooled_answers(rs.answers), "reader_answers_pooled")
            + "<h3>Every answer per feature</h3>" + ctx.table(rs.answers, "reader_answers", max_rows=60)
            + "<h3>Coherence of the steered report beside the on-target rate (radiologists' final answers)</h3>"
            + ctx.table(coh.iloc[:, :8] if not coh.empty else coh, "reader_coherence")
            + "<h3>Agreement between readers, per question</h3>" + ctx.table(rs.agreement, "reader_agreement")
            + "<h3>Completion (readers × items)</h3>" + ctx.table(rs.progress, "reader_progress")
            + ctx.table(rs.completion, "reader_completion", max_rows=60))
