"""The shareable study report: one self-contained HTML file (and, on request, its PDF) plus every table.

Self-contained means it loads nothing: CSS inline, figures as inline SVG, tables downloadable as CSV
data URIs, no scripts, and a Content-Security-Policy that forbids every fetch — the file can be mailed
to a reviewer or archived with a paper. Every string that came from a model, a protocol or an
annotator is HTML-escaped (`html.escape`, pandas' escaping `to_html`, textdiff.render_side).

The report is a list of sections (`SECTIONS`); a section is one function `render(ctx) -> str | None`
(None leaves it out) and one `Section(id, title, render)` line in that list. `ctx` (ReportContext)
holds the study's data and statistics and `ctx.table(df, name)`, which renders a table with its
CSV download link.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation import multiplicity, plots
from evaluation.correlation import EXACT_MAX, MIN_CI_N
from evaluation.dose_response import MIN_CLUSTERS
from evaluation.stats import StudyStatistics, compute_statistics, write_tables
from evaluation.study_data import LABELS, METHODS, StudyData, load_study
from evaluation.textdiff import DIFF_CSS, render_side, word_diff
from steering.errors import RadsteerError
from steering.store.files import claim_dir, only_files_like, write_atomic

MAX_HTML_ROWS = 400
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; base-uri 'none'"
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;max-width:1100px;
padding:1rem 2rem;color:#222;line-height:1.4}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.82rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.2rem .45rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}
table.headline{font-size:.95rem}table.headline td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
pre{background:#f7f7f7;padding:.6rem;overflow-x:auto;font-size:.8rem;white-space:pre-wrap}
.rs-fig{max-width:100%;height:auto}.note{color:#8a4b00}.muted{color:#666;font-size:.85rem}
figure{margin:.6rem 0}figcaption{font-size:.85rem;color:#444}
a.dl{font-size:.8rem;margin-left:.3rem}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:.8rem;margin:.4rem 0 1.4rem}
.pair div{border:1px solid #ddd;padding:.5rem;white-space:pre-wrap;font-size:.88rem}
nav a{margin-right:.8rem}
dl.checklist dt{font-weight:600;margin-top:.5rem}dl.checklist dd{margin-left:1.2rem}
@media print{nav,a.dl{display:none}body{max-width:none;padding:0;font-size:10pt}
table{font-size:7pt;width:100%;table-layout:fixed}td,th{overflow-wrap:anywhere}
table.headline{table-layout:auto;font-size:9pt}}
@page{size:A4;margin:16mm 14mm}
figure,svg,.pair,tr,dl.checklist dd{break-inside:avoid}h2,h3{break-after:avoid}
thead{display:table-header-group}
"""


@dataclass
class ReportResult:
    html_path: Path
    tables_dir: Path
    files: list[Path] = field(default_factory=list)
    pdf_path: Path | None = None


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _finite(x: Any) -> bool:
    try:
        return x is not None and bool(np.isfinite(float(x)))
    except (TypeError, ValueError):
        return False


def _pct(x: Any) -> str:
    return f"{100 * float(x):.1f}%" if _finite(x) else "–"


def _pct_ci(p: float, lo: float, hi: float) -> str:
    if not _finite(p):
        return "–"
    return f"{100 * p:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]" if _finite(lo) and _finite(hi) else f"{100 * p:.1f}%"


def _p(p: Any) -> str:
    if not _finite(p):
        return "n/a"
    return "< 0.001" if float(p) < 0.001 else f"{float(p):.3f}"


def _csv_uri(df: pd.DataFrame) -> str:
    data = df.to_csv(index=False).encode("utf-8")
    return "data:text/csv;charset=utf-8;base64," + base64.b64encode(data).decode("ascii")


def download_link(df: pd.DataFrame, name: str) -> str:
    """A link that downloads `df` as `<name>.csv` from a data URI (no request, no file beside the page)."""
    return (f'<a class="dl" download="{_e(name)}.csv" href="{_csv_uri(df)}">download {_e(name)}.csv '
            f"({len(df)} rows)</a>")


def table_html(df: pd.DataFrame | None, name: str | None = None, *, max_rows: int = MAX_HTML_ROWS,
               floats: str = "{:.3f}", css_class: str = "") -> str:
    """A table (escaped) and, when `name` is given, its CSV download link (all rows)."""
    if df is None or df.empty:
        return '<p class="muted">(no rows)</p>'
    shown = df.head(max_rows)
    out = shown.to_html(index=False, escape=True, na_rep="–", border=0, classes=css_class or None,
                        float_format=lambda v: floats.format(v))
    if len(df) > max_rows:
        out += f'<p class="muted">first {max_rows} of {len(df)} rows; all rows are in the CSV download</p>'
    return out + (f"<p>{download_link(df, name)}</p>" if name else "")


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(obj, dict):
        rows: list[tuple[str, str]] = []
        for k in sorted(obj, key=str):
            rows += _flatten(obj[k], f"{prefix}.{k}" if prefix else str(k))
        return rows
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        return [r for i, v in enumerate(obj) for r in _flatten(v, f"{prefix}[{i}]")]
    return [(prefix, json.dumps(obj, default=str) if isinstance(obj, list) else str(obj))]


def _dir(d: int) -> str:
    return "+α" if d > 0 else "−α"


@dataclass
class ReportContext:
    """What every section sees."""

    data: StudyData
    stats: StudyStatistics
    name: str
    n_examples: int = 12
    deviations: list[str] = field(default_factory=list)
    created: str = ""

    @property
    def method(self) -> str:
        return self.stats.primary_method

    def table(self, df: pd.DataFrame | None, name: str | None = None, **kw: Any) -> str:
        return table_html(df, name, **kw)

    def flow_count(self, stage: str) -> str | None:
        f = self.stats.flow
        hit = f[f.stage == stage] if not f.empty else f
        return None if hit.empty else str(hit["count"].iloc[0])


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    render: Callable[[ReportContext], str | None]


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


def headline_table(ctx: ReportContext) -> pd.DataFrame:
    """The summary's numbers: measure, value as shown, and the numbers behind it (for the CSV)."""
    st, data = ctx.stats, ctx.data
    rows: list[dict[str, Any]] = []

    def add(measure: str, shown: str, value: Any = None, low: Any = None, high: Any = None, n: Any = None) -> None:
        rows.append({"measure": measure, "value": shown, "estimate": value, "ci_low": low, "ci_high": high, "n": n})

    add("cases", str(len(data.cases)), len(data.cases))
    add("features", str(len(data.features)), len(data.features))
    planned = ctx.flow_count("rows planned (protocol)")
    stored = len(data.generations)
    add("rows planned / stored", f"{planned if planned is not None else 'n/a'} / {stored}",
        int(planned) if planned and planned.isdigit() else None, n=stored)
    add("primary labelling method", ctx.method)
    mr = st.method_rates[st.method_rates.method == ctx.method] if not st.method_rates.empty else st.method_rates
    for r in mr.sort_values("direction", ascending=False).itertuples(index=False):
        add(f"on-target rate, {_dir(r.direction)} (Wilson 95% CI)", f"{_pct_ci(r.p_on_target, r.p_on_target_low, r.p_on_target_high)} (n = {r.n})",
            r.p_on_target, r.p_on_target_low, r.p_on_target_high, r.n)
        add(f"off-target rate, {_dir(r.direction)} (Wilson 95% CI)", f"{_pct_ci(r.p_off_target, r.p_off_target_low, r.p_off_target_high)} (n = {r.n})",
            r.p_off_target, r.p_off_target_low, r.p_off_target_high, r.n)
    if mr.empty:
        add("on-/off-target rates", "no labelled steered reports")
    s = st.spearman
    if _finite(s.rho):
        ci = f", bootstrap 95% CI {s.ci_low:.2f} to {s.ci_high:.2f}" if _finite(s.ci_low) else ", no interval (n < 10)"
        add("positive vs negative on-target, Spearman ρ", f"{s.rho:.2f} (p = {_p(s.p_value)}, {s.p_method}{ci}; "
            f"{s.n} features)", s.rho, s.ci_low if _finite(s.ci_low) else None, s.ci_high if _finite(s.ci_high) else None, s.n)
    else:
        add("positive vs negative on-target, Spearman ρ", f"not estimable: {s.note}")
    rs = st.reader
    c = rs.coherence[rs.coherence.feature_id == "(all)"] if rs is not None and not rs.coherence.empty else None
    if c is not None and not c.empty:
        r = c.iloc[0]
        add("incoherent steered reports, radiologists (Wilson 95% CI)", f"{_pct_ci(r.p_incoherent, r.p_incoherent_low, r.p_incoherent_high)} (n = {r.n_coherence})",
            r.p_incoherent, r.p_incoherent_low, r.p_incoherent_high, r.n_coherence)
    kv = st.kappa_vs_radiologist
    if kv.empty:
        add("agreement with radiologists", "no radiologist reads" if data.reads.empty else "no items with both labels")
    for r in kv.itertuples(index=False):
        shown = (f"κ = {r.kappa:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}] (n = {r.n})" if _finite(r.kappa)
                 else f"not estimable (n = {r.n})")
        add(f"agreement with radiologists: {r.method} (Cohen's κ)", shown, r.kappa, r.ci_low, r.ci_high, r.n)
    for r in st.inter_rater.itertuples(index=False):
        if _finite(r.value):
            add(f"between radiologists: {r.statistic}", f"{r.value:.2f} ({r.n_items} items)", r.value, n=r.n_items)
    return pd.DataFrame(rows)


# ---- sections --------------------------------------------------------------------------------------


def render_summary(ctx: ReportContext) -> str:
    df = headline_table(ctx)
    shown = df[["measure", "value"]]
    body = shown.to_html(index=False, escape=True, border=0, classes="headline", header=False)
    notes = "".join(f'<li class="note">{_e(n)}</li>' for n in ctx.stats.notes[:6])
    more = ('<p class="muted">All notes: see "Deviations, degenerate data and notes".</p>'
            if len(ctx.stats.notes) > 6 else "")
    return (body + f"<p>{download_link(df, 'summary')}</p>"
            + (f"<ul>{notes}</ul>{more}" if notes else ""))


def render_outcomes(ctx: ReportContext) -> str:
    fr = ctx.stats.feature_rates
    return ("<figure>" + plots.stacked_bars(fr, ctx.method)
            + f"<figcaption>Share of steered reports labelled on-target only, both, off-target only and "
              f"no change, per feature and steering direction ({_e(ctx.method)}, pooled over |α|).</figcaption>"
              "</figure>" + ctx.table(per_feature_table(ctx.stats, ctx.data), "per_feature"))


def _spearman_text(ctx: ReportContext) -> str:
    s = ctx.stats.spearman
    if not _finite(s.rho):
        return f"Spearman ρ not estimable: {s.note}"
    ci = (f"bootstrap 95% CI {s.ci_low:.2f} to {s.ci_high:.2f}" if _finite(s.ci_low)
          else f"no interval with fewer than {MIN_CI_N} features")
    how = f"exact permutation p (n ≤ {EXACT_MAX})" if s.p_method == "exact permutation" else s.p_method
    return f"Spearman ρ = {s.rho:.2f} ({ci}; {s.n} features; p = {_p(s.p_value)}, {how})"


def render_posneg(ctx: ReportContext) -> str:
    txt = _spearman_text(ctx)
    return (f"<p>{_e(txt)}</p><figure>" + plots.pos_neg_scatter(ctx.stats.pos_neg, txt.split(" (")[0])
            + "<figcaption>Each point is one feature: its on-target rate when steered towards (+α) and away "
              "from (−α) its concept. Dotted: equal rates.</figcaption></figure>"
            + ctx.table(ctx.stats.pos_neg, "positive_vs_negative")
            + f"<p>{download_link(pd.DataFrame([ctx.stats.spearman.to_dict()]), 'spearman')}</p>")


def render_forest(ctx: ReportContext) -> str:
    return ("<figure>" + plots.forest_plot(ctx.stats.feature_rates, ctx.method)
            + f"<figcaption>On-target rate with its Wilson 95% interval per feature and direction "
              f"({_e(ctx.method)}).</figcaption></figure>")


def render_dose(ctx: ReportContext) -> str:
    labels = ctx.data.labels
    levels = sorted(labels.abs_alpha.unique()) if not labels.empty else []
    if len(levels) < 2:
        only = f" (|α| = {levels[0]:g})" if levels else ""
        return (f"<p>No dose–response: the study steered at a single strength{_e(only)}, and a trend over |α| "
                f"needs at least two.</p>")
    dr = ctx.stats.dose_response
    shown = pd.DataFrame()
    if not dr.empty:
        est = dr.slope.map(_finite) & (dr.n_clusters >= MIN_CLUSTERS)
        shown = pd.DataFrame({
            "method": dr.method, "direction": dr.direction.map(_dir), "n": dr.n, "cases": dr.n_clusters,
            "|α| levels": dr.n_levels,
            "slope per unit |α| [95% CI]": [f"{r.slope:+.3f} [{r.slope_low:+.3f}, {r.slope_high:+.3f}]" if ok
                                             else "not estimable" for r, ok in zip(dr.itertuples(), est, strict=True)],
            "odds ratio": [f"{r.odds_ratio_per_unit:.3g}" if ok else "–" for r, ok in zip(dr.itertuples(), est, strict=True)],
            "p": [_p(r.p_value) if ok else "–" for r, ok in zip(dr.itertuples(), est, strict=True)],
            "note": dr.note,
        })
    return (ctx.table(shown) + f"<p>{download_link(dr, 'dose_response')}</p>" + "<figure>"
            + plots.dose_response_plot(ctx.stats.dose_curves, ctx.method)
            + f"<figcaption>Observed on-target rate per |α| and the GEE fit with its 95% band ({_e(ctx.method)}); "
              f"fits with fewer than {MIN_CLUSTERS} cases as clusters are not estimable and not drawn."
              "</figcaption></figure>" + ctx.table(ctx.stats.dose_curves, "dose_response_curves"))


def render_method_rates(ctx: ReportContext) -> str:
    mr = ctx.stats.method_rates
    cols = ["method", "direction", "n", "p_on_target", "p_on_target_low", "p_on_target_high", "p_off_target",
            "p_off_target_low", "p_off_target_high", "p_both", "p_none", "ci_method"]
    return ctx.table(mr[cols] if not mr.empty else mr, "rates_by_method")


def render_tests(ctx: ReportContext) -> str:
    t = ctx.stats.tests
    t = t[t.method == ctx.method] if not t.empty else t
    return ctx.table(t, "feature_tests", floats="{:.4g}")


def render_agreement(ctx: ReportContext) -> str:
    st = ctx.stats
    conf = "".join(f"<h3>{_e(k)} (rows) vs radiologist majority (columns)</h3>"
                   + ctx.table(v.reset_index(), f"confusion_{k}") for k, v in st.confusions.items())
    return ("<h3>Automated vs radiologist majority (Cohen's κ)</h3>" + ctx.table(st.kappa_vs_radiologist,
            "kappa_vs_radiologist") + "<h3>Between radiologists</h3>" + ctx.table(st.inter_rater, "inter_rater")
            + (conf or '<p class="muted">(no items with both labels)</p>'))


def render_flow(ctx: ReportContext) -> str:
    return ctx.table(ctx.stats.flow, "flow")


def render_notes(ctx: ReportContext) -> str:
    items = [*ctx.deviations, *ctx.stats.notes]
    return "<ul>" + ("".join(f'<li class="note">{_e(n)}</li>' for n in items) or "<li>none</li>") + "</ul>"


def render_examples(ctx: ReportContext) -> str:
    return _examples_html(choose_examples(ctx.data, ctx.method, ctx.n_examples))


def render_checklist(ctx: ReportContext) -> str:
    from evaluation.report_checklist import checklist_items

    return '<dl class="checklist">' + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in checklist_items(ctx)) + "</dl>"


def render_protocol(ctx: ReportContext) -> str:
    data = ctx.data
    proto = (f"<pre>{_e(data.protocol_text)}</pre>" if data.protocol_text is not None
             else '<p class="note">protocol.yaml not found in the run directory.</p>')
    return (f'<p class="note">{_e(data.protocol_error)}</p>' if data.protocol_error else "") + proto


def render_manifest(ctx: ReportContext) -> str:
    m = ctx.data.manifest
    if not m:
        return '<p class="note">manifest.json not found.</p>'
    return ctx.table(pd.DataFrame(_flatten(m), columns=["field", "value"]), "manifest")


def render_methods(ctx: ReportContext) -> str:
    return _methods_html(ctx.stats)


SECTIONS: list[Section] = [
    Section("summary", "Summary", render_summary),
    Section("outcomes", "Outcomes per feature and direction", render_outcomes),
    Section("posneg", "Positive versus negative steering", render_posneg),
    Section("forest", "On-target rates by feature (forest plot)", render_forest),
    Section("dose", "Dose–response over |α|", render_dose),
    Section("methods-rates", "Rates by labelling method and direction", render_method_rates),
    Section("tests", "Per-feature tests", render_tests),
    Section("agreement", "Agreement", render_agreement),
    Section("interpretations", "Feature interpretations (detection F1)", lambda ctx: render_interpretation(ctx)),
    Section("reader-study", "Reader study: every answer, coherence, completion", lambda ctx: render_reader_study(ctx)),
    Section("flow", "Flow of cases and rows", render_flow),
    Section("checklist", "Reporting checklist", render_checklist),
    Section("notes", "Deviations, degenerate data and notes", render_notes),
    Section("examples", "Example baseline / steered pairs", render_examples),
    Section("protocol", "Protocol (frozen protocol.yaml)", render_protocol),
    Section("manifest", "Manifest (model and SAE hashes, versions, seeds)", render_manifest),
    Section("methods", "Statistical methods", render_methods),
]
"""The report's sections in order. To add one: write `render_x(ctx) -> str | None` and insert
`Section("x", "Title", render_x)` where it belongs (ids are the page's anchors)."""


def choose_examples(data: StudyData, method: str, n: int = 12, seed: int = 0) -> pd.DataFrame:
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
(pooled over |α|). With at most {EXACT_MAX} features the two-sided p-value is exact: the share of all n!
pairings of the two rate vectors whose |ρ| reaches the observed one; above that, scipy's t approximation.
A percentile bootstrap 95% interval over features ({s.get('n_boot')} resamples, seed {s.get('seed')}) is
given from {MIN_CI_N} features up, and is not estimable below.</li>
<li>Dose–response (only with two or more |α|): GEE logistic regression of on-target on |α| per method and
direction, cases as clusters, {_e(s.get('cov_struct'))} working correlation (independence if that fails);
bias-reduced (Mancl–DeRouen) covariance with fewer than 40 cases, robust sandwich otherwise; with fewer than
{MIN_CLUSTERS} cases the fit is reported as not estimable. Only steered rows enter.</li>
<li>Agreement: Cohen's κ of each automated method against the radiologist majority, asymptotic
(Fleiss–Cohen–Everitt) standard error, Wald 95% interval; between radiologists Fleiss' κ over items with the
most common number of reads (≥ 2) and Krippendorff's α (nominal) over all items read twice or more.</li>
<li>Per-feature tests: {_e(multiplicity.TEST_NAME)} with p0 = {s.get('null_rate')}, one test per method ×
feature × direction × |α| cell; p-values adjusted over all cells of a method by Holm and by
Benjamini–Hochberg; significance at {s.get('level')} uses <b>{_e(multiplicity.CORRECTIONS[s.get('correction', 'holm')])}</b>.</li>
</ul>"""


def render_html(data: StudyData, stats: StudyStatistics, *, title: str | None = None, n_examples: int = 12,
                deviations: list[str] | None = None, created: str | None = None,
                sections: list[Section] | None = None) -> str:
    """The report as one HTML string."""
    name = title or (data.run_dir.name if data.run_dir is not None else "study")
    created = created or datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    ctx = ReportContext(data, stats, name, n_examples, list(deviations or []), created)
    parts = []
    for sec in sections if sections is not None else SECTIONS:
        content = sec.render(ctx)
        if content is not None:
            parts.append((sec, content))
    nav = "".join(f'<a href="#{_e(sec.id)}">{_e(sec.title.split(" (")[0])}</a>' for sec, _ in parts)
    body = "".join(f'<section id="{_e(sec.id)}"><h2>{_e(sec.title)}</h2>{content}</section>' for sec, content in parts)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>radsteer report — {_e(name)}</title><style>{_CSS}{DIFF_CSS}</style></head><body>"
        f"<h1>Steering study report — {_e(name)}</h1>"
        f'<p class="muted">Created <span class="created">{_e(created)}</span> by radsteer.</p><nav>{nav}</nav>{body}'
        '<p class="muted">Tables: CSV downloads above, and CSV and Parquet files beside this report.</p>'
        "</body></html>\n"
    )


def render_reader_study(ctx: ReportContext) -> str | None:
    """The reader study's answers, agreement, coherence and completion (left out without reads)."""
    from evaluation.reader_report import render_reader_study as render

    return render(ctx)


def render_interpretation(ctx: ReportContext) -> str | None:
    """Feature interpretations (radsteer interpret / features.select): counts, F1 histogram, precision vs
    recall, ρ, categories, validity. Left out when the study has none."""
    it = ctx.stats.interpretation
    if it is None:
        return None
    frames = it.to_frames()
    best = it.features.dropna(subset=["f1"]).sort_values("f1", ascending=False)
    return (f"<pre>{_e(it.summary())}</pre>"
            + "<figure>" + plots.f1_histogram(it.histogram, f"{it.counts['n_scored']} features ({it.counts['explainer']})")
            + "</figure><figure>" + plots.precision_recall_scatter(it.features) + "</figure>"
            + "<h3>Counts</h3>" + ctx.table(frames["interpretation_counts"], "interpretation_counts")
            + "<h3>Activation frequency vs F1 (Spearman, bootstrap 95% CI)</h3>"
            + ctx.table(frames["interpretation_frequency_spearman"], "interpretation_frequency_spearman")
            + "<h3>By target concept category</h3>" + ctx.table(it.by_category, "interpretation_by_category")
            + "<h3>Radiologists' validity vs F1 (AUROC)</h3>"
            + ctx.table(frames["interpretation_validity_auroc"], "interpretation_validity_auroc")
            + "<h3>Features by F1</h3>"
            + ctx.table(best[["feature_id", "explainer", "f1", "precision", "recall", "frequency"]],
                        "interpretation_features"))


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
                 deviations: list[str] | None = None, pdf: bool = False, created: str | None = None,
                 **stat_kw: Any) -> ReportResult:
    """Write `out` (default RUN_DIR/report.html), its tables to `<out stem>_tables/` beside it and, with
    `pdf`, the same report as `<out stem>.pdf`. Every file is written beside and renamed into place."""
    run_dir = Path(run_dir)
    data = data if data is not None else load_study(run_dir)
    stats = stats if stats is not None else compute_statistics(data, **stat_kw)
    out = Path(out) if out is not None else run_dir / "report.html"
    if out.exists() and not _is_radsteer_report(out):
        raise RadsteerError(f"{out} exists and is not a radsteer report; radsteer will not overwrite it: "
                            f"choose another output file")
    if pdf:  # checked before anything is written
        from evaluation.report_pdf import check_pdf_target

        check_pdf_target(out.with_suffix(".pdf"))
    out.parent.mkdir(parents=True, exist_ok=True)
    tables_dir = claim_dir(out.parent / f"{out.stem}_tables", "report_tables", what="the report's tables",
                           recognise=lambda d: _is_radsteer_report(out) and only_files_like(d, ".csv", ".parquet"))
    frames = stats.to_frames()
    frames["per_feature"] = per_feature_table(stats, data)
    frames["annotations_long"] = annotations_long(data)
    files = write_tables(frames, tables_dir)
    write_atomic(out, render_html(data, stats, title=title, n_examples=n_examples, deviations=deviations,
                                  created=created))
    pdf_path = None
    if pdf:
        from evaluation.report_pdf import write_pdf

        pdf_path = write_pdf(out.read_text(encoding="utf-8"), out.with_suffix(".pdf"))
        files.append(pdf_path)
    return ReportResult(out, tables_dir, [out, *files], pdf_path)


def _is_radsteer_report(path: Path) -> bool:
    """A file radsteer's `render_html` wrote (its <title> says so), which it may replace."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return b"<title>radsteer report" in head
