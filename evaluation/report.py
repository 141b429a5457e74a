"""The shareable study report: one self-contained HTML file plus every table beside it.

Self-contained means it loads nothing: CSS inline, figures as inline SVG, no scripts, and a
Content-Security-Policy that forbids every fetch — the file can be mailed to a reviewer or
archived with a paper. Every string that came from a model, a protocol or an annotator is
HTML-escaped (`html.escape`, pandas' escaping `to_html`, textdiff.render_side).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation import multiplicity, plots
from evaluation.stats import StudyStatistics, compute_statistics, write_tables
from evaluation.study_data import LABELS, METHODS, StudyData, load_study
from evaluation.textdiff import DIFF_CSS, render_side, word_diff
from steering.errors import RadsteerError
from steering.store.files import claim_dir, only_files_like, write_atomic

MAX_HTML_ROWS = 400
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; base-uri 'none'"
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;
padding:1rem 2rem;color:#222;line-height:1.4}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.82rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.2rem .45rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}
pre{background:#f7f7f7;padding:.6rem;overflow-x:auto;font-size:.8rem;white-space:pre-wrap}
.rs-fig{max-width:100%;height:auto}.note{color:#8a4b00}.muted{color:#666;font-size:.85rem}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:.8rem;margin:.4rem 0 1.4rem}
.pair div{border:1px solid #ddd;padding:.5rem;white-space:pre-wrap;font-size:.88rem}
nav a{margin-right:.8rem}
"""


@dataclass
class ReportResult:
    html_path: Path
    tables_dir: Path
    files: list[Path] = field(default_factory=list)
    pdf_path: Path | None = None


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _table(df: pd.DataFrame, *, max_rows: int = MAX_HTML_ROWS, floats: str = "{:.3f}") -> str:
    if df is None or df.empty:
        return '<p class="muted">(no rows)</p>'
    shown = df.head(max_rows)
    out = shown.to_html(index=False, escape=True, na_rep="–", border=0,
                        float_format=lambda v: floats.format(v))
    if len(df) > max_rows:
        out += f'<p class="muted">first {max_rows} of {len(df)} rows; all rows are in the CSV/Parquet files</p>'
    return out


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(obj, dict):
        rows: list[tuple[str, str]] = []
        for k in sorted(obj, key=str):
            rows += _flatten(obj[k], f"{prefix}.{k}" if prefix else str(k))
        return rows
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        return [r for i, v in enumerate(obj) for r in _flatten(v, f"{prefix}[{i}]")]
    return [(prefix, json.dumps(obj, default=str) if isinstance(obj, list) else str(obj))]


def _pct_ci(p: float, lo: float, hi: float) -> str:
    if not np.isfinite(p):
        return "–"
    return f"{100 * p:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def per_feature_table(stats: StudyStatistics, data: StudyData) -> pd.DataFrame:
    """Primary method, per feature × direction: n, each outcome's rate with its Wilson CI."""
    fr = stats.feature_rates
    fr = fr[fr.method == stats.primary_method] if not fr.empty else fr
    if fr.empty:
        return pd.DataFrame()
    desc = dict(zip(data.features.feature_id, data.features.description, strict=False)) if not data.features.empty else {}
    out = pd.DataFrame({
        "feature": fr.feature_id, "description": fr.feature_id.map(desc).fillna(""),
        "direction": np.where(fr.direction > 0, "+α", "−α"), "n": fr.n,
        "on-target (on ∪ both)": [_pct_ci(*r) for r in fr[["p_on_target", "p_on_target_low", "p_on_target_high"]]
                                  .itertuples(index=False)],
    })
    for lab in LABELS:
        out[lab] = [_pct_ci(*r) for r in fr[[f"p_{lab}", f"p_{lab}_low", f"p_{lab}_high"]].itertuples(index=False)]
    return out


def choose_examples(data: StudyData, method: str, n: int = 8, seed: int = 0) -> pd.DataFrame:
    """Up to n steered/baseline pairs spread over the labels of `method` (seeded choice)."""
    lab = data.labels
    if lab.empty or data.steered.empty:
        return pd.DataFrame()
    primary = lab[lab.method == method]
    if primary.empty:
        primary = lab
    rng = np.random.default_rng(seed)
    picks: list[int] = []
    per = max(1, n // len(LABELS))
    for name in LABELS:
        ids = primary.loc[primary.label == name, "generation_id"].unique()
        if len(ids):
            picks += rng.choice(ids, size=min(per, len(ids)), replace=False).tolist()
    rest = [g for g in primary.generation_id.unique() if g not in set(picks)]
    if len(picks) < n and rest:
        picks += rng.choice(rest, size=min(n - len(picks), len(rest)), replace=False).tolist()
    ex = data.steered[data.steered.generation_id.isin(picks[:n])].copy()
    wide = lab[lab.generation_id.isin(ex.generation_id)].pivot_table(
        index="generation_id", columns="method", values="label", aggfunc="first")
    return ex.merge(wide, left_on="generation_id", right_index=True, how="left")


def _examples_html(ex: pd.DataFrame) -> str:
    if ex.empty:
        return '<p class="muted">(no labelled steered generations)</p>'
    parts = []
    for r in ex.to_dict("records"):
        base = r.get("baseline_text")
        base = "" if base is None or (isinstance(base, float) and np.isnan(base)) else str(base)
        seg = word_diff(base, str(r["text"]))
        labels = ", ".join(f"{_e(m)}: <b>{_e(r[m])}</b>" for m in METHODS if isinstance(r.get(m), str))
        parts.append(
            f"<h3>{_e(r['case_id'])} · {_e(r['feature_id'])} · α = {float(r['alpha']):+g}</h3>"
            f"<p class=\"muted\">{_e(r.get('description') or '')} — {labels}</p>"
            f'<div class="pair"><div><b>baseline</b>\n{render_side(seg, "baseline")}</div>'
            f'<div><b>steered</b>\n{render_side(seg, "steered")}</div></div>')
    return "".join(parts)


def _methods_html(stats: StudyStatistics) -> str:
    s = stats.settings
    return f"""<ul>
<li>Labels: <i>on</i> (on-target change only), <i>off</i> (off-target only), <i>both</i>, <i>none</i>.
The on-target rate counts <i>on</i> ∪ <i>both</i>; the off-target rate <i>off</i> ∪ <i>both</i>.
Primary labelling method: <b>{_e(stats.primary_method)}</b>.</li>
<li>Intervals for proportions: <b>Wilson score 95%</b> (statsmodels <code>proportion_confint(method="wilson")</code>).</li>
<li>Radiologist majority: the most frequent label among non-skipped reads; a tie for most frequent gives
no majority and the generation is left out of radiologist-majority statistics (counted in the flow).</li>
<li>Positive vs negative steering: Spearman ρ between each feature's on-target rate under +α and under −α
(pooled over |α|), percentile bootstrap 95% interval over features ({s.get('n_boot')} resamples, seed {s.get('seed')}).</li>
<li>Dose–response: GEE logistic regression of on-target on |α| per method and direction, cases as clusters,
{_e(s.get('cov_struct'))} working correlation (independence if that fails); bias-reduced (Mancl–DeRouen)
covariance with fewer than 40 cases, robust sandwich otherwise. Only steered rows enter.</li>
<li>Agreement: Cohen's κ of each automated method against the radiologist majority, asymptotic
(Fleiss–Cohen–Everitt) standard error, Wald 95% interval; between radiologists Fleiss' κ over items with the
most common number of reads (≥ 2) and Krippendorff's α (nominal) over all items read twice or more.</li>
<li>Per-feature tests: {_e(multiplicity.TEST_NAME)} with p0 = {s.get('null_rate')}, one test per method ×
feature × direction × |α| cell; p-values adjusted over all cells of a method by Holm and by
Benjamini–Hochberg; significance at {s.get('level')} uses <b>{_e(multiplicity.CORRECTIONS[s.get('correction', 'holm')])}</b>.</li>
</ul>"""


def interpretations_table(data: StudyData) -> pd.DataFrame | None:
    """The steered features' interpretations when the protocol selected them from a `radsteer
    interpret` run (manifest `feature_selection`): description, targets, detection F1 …; else None."""
    sel = (data.manifest or {}).get("feature_selection") or {}
    path = Path(str(sel.get("interpretations") or ""))
    if not sel or not path.is_file():
        return None
    try:
        interp = pd.read_csv(path, dtype={"feature_id": str})
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    steered = set(data.features.feature_id) if not data.features.empty else set()
    cols = [c for c in ("feature_id", "description", "targets", "explainer", "f1", "precision", "recall",
                        "n_active", "n_inactive", "frequency") if c in interp.columns]
    out = interp[interp.feature_id.isin(steered)][cols]
    return out.sort_values("f1", ascending=False) if "f1" in out.columns else out


def _interpretations_html(data: StudyData) -> str | None:
    table = interpretations_table(data)
    if table is None:
        return None
    sel = data.manifest.get("feature_selection") or {}
    rule = (f"F1 ≥ {sel.get('min_f1')}, at most {sel.get('max_features')} features"
            + (f", targets in {', '.join(sel['concepts'])}" if sel.get("concepts") else ""))
    return (f'<p>Selected from {_e(sel.get("interpretations"))} (sha256 {_e(str(sel.get("sha256"))[:12])}…) by '
            f"{_e(rule)}: each feature's explanation, and how well it detects the feature on held-out "
            f"activating vs non-activating contexts.</p>" + _table(table))


def render_html(data: StudyData, stats: StudyStatistics, *, title: str | None = None, n_examples: int = 8) -> str:
    """The report as one HTML string."""
    name = title or (data.run_dir.name if data.run_dir is not None else "study")
    m = stats.primary_method
    s = stats.spearman
    spear_txt = (f"Spearman ρ = {s.rho:.2f} (bootstrap 95% CI {s.ci_low:.2f} to {s.ci_high:.2f}; {s.n} features; "
                 f"p = {s.p_value:.3g})" if np.isfinite(s.rho) else f"ρ not estimable: {s.note}")
    manifest_rows = pd.DataFrame(_flatten(data.manifest), columns=["field", "value"]) if data.manifest else pd.DataFrame()
    proto = (f"<pre>{_e(data.protocol_text)}</pre>" if data.protocol_text is not None
             else '<p class="note">protocol.yaml not found in the run directory.</p>')
    if data.protocol_error:
        proto = f'<p class="note">{_e(data.protocol_error)}</p>' + proto
    notes = "".join(f'<li class="note">{_e(n)}</li>' for n in stats.notes) or "<li>none</li>"
    tests = stats.tests[stats.tests.method == m] if not stats.tests.empty else stats.tests
    dr = stats.dose_response
    conf_html = "".join(
        f"<h3>{_e(k)} (rows) vs radiologist majority (columns)</h3>{_table(v.reset_index())}"
        for k, v in stats.confusions.items()) or '<p class="muted">(no items with both labels)</p>'
    interp_html = _interpretations_html(data)
    sections = [
        ("summary", "Summary", f"<pre>{_e(stats.summary())}</pre>"),
        ("notes", "Deviations, degenerate data and notes", f"<ul>{notes}</ul>"),
        ("flow", "Flow of cases and rows", _table(stats.flow)),
        *([("interpretations", "Steered features and their interpretations (detection F1)", interp_html)]
          if interp_html is not None else []),
        ("rates", f"On-target rates by feature ({_e(m)}, Wilson 95% CI, pooled over |α|)",
         _table(per_feature_table(stats, data)) + plots.forest_plot(stats.feature_rates, m)),
        ("methods-rates", "Rates by labelling method and direction",
         _table(stats.method_rates[["method", "direction", "n", "p_on_target", "p_on_target_low", "p_on_target_high",
                                    "p_off_target", "p_both", "p_none", "ci_method"]]
                if not stats.method_rates.empty else stats.method_rates)),
        ("dose", "Dose–response over |α| (GEE, cases as clusters)",
         _table(dr) + plots.dose_response_plot(stats.dose_curves, m) + _table(stats.dose_curves)),
        ("posneg", "Positive vs negative steering",
         f"<p>{_e(spear_txt)}</p>" + plots.pos_neg_scatter(stats.pos_neg, spear_txt) + _table(stats.pos_neg)),
        ("tests", f"Per-feature tests ({_e(m)}; "
                  f"{_e(multiplicity.CORRECTIONS[stats.settings.get('correction', 'holm')])})", _table(tests, floats="{:.4g}")),
        ("agreement", "Agreement", "<h3>Automated vs radiologist majority (Cohen's κ)</h3>"
         + _table(stats.kappa_vs_radiologist) + "<h3>Between radiologists</h3>" + _table(stats.inter_rater)
         + conf_html),
        ("examples", "Example baseline / steered pairs", _examples_html(choose_examples(data, m, n_examples))),
        ("protocol", "Protocol (frozen protocol.yaml)", proto),
        ("manifest", "Manifest (model and SAE hashes, versions, seeds)",
         _table(manifest_rows) if not manifest_rows.empty else '<p class="note">manifest.json not found.</p>'),
        ("methods", "Statistical methods", _methods_html(stats)),
    ]
    if stats.interpretation is not None:  # feature interpretations (radsteer interpret / features.select)
        sections.insert(-3, ("interpretations", "Feature interpretations (detection F1)",
                             _interpretation_html(stats.interpretation)))
    nav = "".join(f'<a href="#{sid}">{_e(h.split(" (")[0])}</a>' for sid, h, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{h}</h2>{content}</section>' for sid, h, content in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>radsteer report — {_e(name)}</title><style>{_CSS}{DIFF_CSS}</style></head><body>"
        f"<h1>Steering study report — {_e(name)}</h1><nav>{nav}</nav>{body}"
        '<p class="muted">Written by radsteer. Tables: CSV and Parquet beside this file.</p></body></html>\n'
    )


def _interpretation_html(it: Any) -> str:
    """The interpretation section: counts, F1 histogram, precision vs recall, ρ, categories, validity."""
    frames = it.to_frames()
    best = it.features.dropna(subset=["f1"]).sort_values("f1", ascending=False).head(MAX_HTML_ROWS)
    return (f"<pre>{_e(it.summary())}</pre>"
            + plots.f1_histogram(it.histogram, f"{it.counts['n_scored']} features ({it.counts['explainer']})")
            + plots.precision_recall_scatter(it.features)
            + "<h3>Counts</h3>" + _table(frames["interpretation_counts"])
            + "<h3>Activation frequency vs F1 (Spearman, bootstrap 95% CI)</h3>"
            + _table(frames["interpretation_frequency_spearman"])
            + "<h3>By target concept category</h3>" + _table(it.by_category)
            + "<h3>Radiologists' validity vs F1 (AUROC)</h3>" + _table(frames["interpretation_validity_auroc"])
            + "<h3>Features by F1</h3>"
            + _table(best[["feature_id", "explainer", "f1", "precision", "recall", "frequency"]]))


def annotations_long(data: StudyData) -> pd.DataFrame:
    """One row per annotation × answered question, with the generation's design columns."""
    cols = ["task", "item_key", "generation_id", "case_id", "feature_id", "alpha", "annotator", "question",
            "answer", "seconds", "shown_order", "created_at"]
    a = data.annotations
    if a.empty:
        return pd.DataFrame(columns=cols)
    design = data.generations.rename(columns={"id": "generation_id", "feature_id": "g_feature"})[
        ["generation_id", "case_id", "g_feature", "alpha"]] if not data.generations.empty else None
    rows = []
    for r in a.to_dict("records"):
        answers = r["answers"] if isinstance(r["answers"], dict) else {"raw": r["answers"]}
        for q, v in answers.items():
            rows.append({**{k: r.get(k) for k in ("task", "item_key", "generation_id", "feature_id", "annotator",
                                                  "seconds", "shown_order", "created_at")},
                         "question": q, "answer": json.dumps(v) if not isinstance(v, str) else v})
    out = pd.DataFrame(rows)
    if design is not None:
        out["generation_id"] = pd.to_numeric(out.generation_id, errors="coerce").astype("Int64")
        design = design.assign(generation_id=design.generation_id.astype("Int64"))
        out = out.merge(design, on="generation_id", how="left")
        out["feature_id"] = out.feature_id.where(out.feature_id.notna(), out.g_feature)
    else:
        out["case_id"], out["alpha"] = None, None
    out["created_at"] = out.created_at.astype(str)
    return out.reindex(columns=cols)


def build_report(run_dir: str | Path, out: str | Path | None = None, *, stats: StudyStatistics | None = None,
                 data: StudyData | None = None, n_examples: int = 12, title: str | None = None,
                 deviations: list[str] | None = None, pdf: bool = False, **stat_kw: Any) -> ReportResult:
    """Write `out` (default RUN_DIR/report.html) and its tables to `<out stem>_tables/` beside it."""
    run_dir = Path(run_dir)
    data = data if data is not None else load_study(run_dir)
    stats = stats if stats is not None else compute_statistics(data, **stat_kw)
    out = Path(out) if out is not None else run_dir / "report.html"
    if out.exists() and not _is_radsteer_report(out):
        raise RadsteerError(f"{out} exists and is not a radsteer report; radsteer will not overwrite it: "
                            f"choose another output file")
    out.parent.mkdir(parents=True, exist_ok=True)
    tables_dir = claim_dir(out.parent / f"{out.stem}_tables", "report_tables", what="the report's tables",
                           recognise=lambda d: _is_radsteer_report(out) and only_files_like(d, ".csv", ".parquet"))
    frames = stats.to_frames()
    frames["per_feature"] = per_feature_table(stats, data)
    frames["annotations_long"] = annotations_long(data)
    files = write_tables(frames, tables_dir)
    write_atomic(out, render_html(data, stats, title=title, n_examples=n_examples))
    return ReportResult(out, tables_dir, [out, *files])


def _is_radsteer_report(path: Path) -> bool:
    """A file radsteer's `render_html` wrote (its <title> says so), which it may replace."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return b"<title>radsteer report" in head
