"""Report figures as inline SVG strings (matplotlib's Agg-free SVG canvas, glyphs as paths).

Inline SVG keeps the report one file that loads nothing: no image files, no fonts. Figures are
built on `matplotlib.figure.Figure` directly (no pyplot state, no GUI backend).
"""

from __future__ import annotations

import hashlib
import io
import re

import numpy as np
import pandas as pd

_COLORS = {1: "#1f77b4", -1: "#d62728"}
# on-target green, both amber, off-target red, none grey: the paper's stacked-bar reading order
LABEL_COLORS = {"on": "#2ca02c", "both": "#e6a817", "off": "#d62728", "none": "#c7c7c7"}


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _svg(fig, title: str) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "radsteer", "svg.id": None}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML declaration and DOCTYPE (which names a URL)
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)  # RDF licence boilerplate
    svg = re.sub(r'\s(width|height)="[\d.]+pt"', "", svg, count=2)  # scale with the page
    # ids unique per figure: several inline SVGs share one document (a content hash keeps reruns identical)
    prefix = "fig" + hashlib.sha1(svg.encode()).hexdigest()[:8] + "-"
    svg = re.sub(r'\bid="', f'id="{prefix}', svg)
    svg = svg.replace('href="#', f'href="#{prefix}').replace("url(#", f"url(#{prefix}")
    width_px = int(fig.get_size_inches()[0] * 96)  # its natural size at most, however wide the page
    return svg.replace("<svg ", f'<svg role="img" aria-label="{title}" class="rs-fig" '
                                f'style="width:100%;max-width:{width_px}px" ', 1)


def forest_plot(feature_rates: pd.DataFrame, method: str) -> str:
    """On-target rate per feature × direction with its Wilson interval."""
    df = feature_rates[feature_rates.method == method].sort_values(["feature_id", "direction"], ascending=[False, True])
    n = max(len(df), 1)
    fig = _figure(7.0, min(1.2 + 0.22 * n, 40.0))
    ax = fig.add_subplot()
    if df.empty:
        ax.text(0.5, 0.5, "no labelled rows", ha="center", va="center")
        ax.set_axis_off()
        return _svg(fig, "forest plot (empty)")
    y = np.arange(len(df))
    for d, marker in ((1, "o"), (-1, "s")):
        m = (df.direction == d).to_numpy()
        if not m.any():
            continue
        p = df.p_on_target.to_numpy()[m]
        lo, hi = df.p_on_target_low.to_numpy()[m], df.p_on_target_high.to_numpy()[m]
        # clip: an interval must never yield a negative error bar (matplotlib raises)
        err = np.nan_to_num(np.vstack([p - lo, hi - p]), nan=0.0).clip(min=0.0)
        ax.errorbar(p, y[m], xerr=err, fmt=marker, color=_COLORS[d], capsize=2, ms=4,
                    label="+α" if d > 0 else "−α")
    ax.set_yticks(y, [f"{f} ({'+' if d > 0 else '−'})" for f, d in zip(df.feature_id, df.direction, strict=True)],
                  fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"on-target rate, Wilson 95% CI ({method}, pooled over |α|)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _svg(fig, "forest plot of on-target rates")


def stacked_bars(feature_rates: pd.DataFrame, method: str) -> str:
    """Per feature × direction, the shares of on / both / off / none as one stacked horizontal bar."""
    df = feature_rates[feature_rates.method == method] if not feature_rates.empty else feature_rates
    df = df.sort_values(["feature_id", "direction"], ascending=[False, True]) if not df.empty else df
    fig = _figure(7.0, min(1.4 + 0.24 * max(len(df), 1), 40.0))
    ax = fig.add_subplot()
    if df.empty:
        ax.text(0.5, 0.5, "no labelled rows", ha="center", va="center")
        ax.set_axis_off()
        return _svg(fig, "stacked outcome bars (empty)")
    y = np.arange(len(df))
    left = np.zeros(len(df))
    for lab in ("on", "both", "off", "none"):
        width = df[f"p_{lab}"].to_numpy(dtype=float)
        ax.barh(y, width, left=left, color=LABEL_COLORS[lab], label=lab, height=0.75)
        left += width
    ax.set_yticks(y, [f"{f} ({'+' if d > 0 else '−'}α, n={n})" for f, d, n in
                      zip(df.feature_id, df.direction, df.n, strict=True)], fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of steered reports ({method}, pooled over |α|)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, fontsize=8, frameon=False)
    return _svg(fig, "outcomes per feature and direction (stacked bars)")


def dose_response_plot(curves: pd.DataFrame, method: str) -> str:
    """Observed on-target rate by |α| and the GEE fit with its 95% band, per direction."""
    fig = _figure(6.0, 3.6)
    ax = fig.add_subplot()
    df = curves[curves.method == method] if not curves.empty else curves
    if df.empty:
        ax.text(0.5, 0.5, "no dose–response data", ha="center", va="center")
        ax.set_axis_off()
        return _svg(fig, "dose-response (empty)")
    for d, sub in df.groupby("direction"):
        sub = sub.sort_values("abs_alpha")
        c = _COLORS[int(d)]
        tag = "+α" if d > 0 else "−α"
        ax.plot(sub.abs_alpha, sub.observed, "o", color=c, label=f"{tag} observed")
        if "fitted" in sub and sub.fitted.notna().any():
            ax.plot(sub.abs_alpha, sub.fitted, "-", color=c, label=f"{tag} GEE fit")
            ax.fill_between(sub.abs_alpha.to_numpy(float), sub.fitted_low.to_numpy(float),
                            sub.fitted_high.to_numpy(float), color=c, alpha=0.15)
    ax.set_ylim(0, 1)
    ax.set_xlabel("|α|")
    ax.set_ylabel(f"on-target rate ({method})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _svg(fig, "dose-response curves")


def pos_neg_scatter(pos_neg: pd.DataFrame, label: str) -> str:
    """Each feature's on-target rate under +α against −α."""
    fig = _figure(4.2, 4.2)
    ax = fig.add_subplot()
    df = pos_neg.dropna(subset=["p_on_target_pos", "p_on_target_neg"]) if not pos_neg.empty else pos_neg
    if df.empty:
        ax.text(0.5, 0.5, "needs both directions", ha="center", va="center")
        ax.set_axis_off()
        return _svg(fig, "positive vs negative (empty)")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.scatter(df.p_on_target_pos, df.p_on_target_neg, s=18, color="#444")
    if len(df) <= 20:  # few features: name each point
        for r in df.itertuples(index=False):
            ax.annotate(str(r.feature_id), (r.p_on_target_pos, r.p_on_target_neg), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("on-target rate, +α")
    ax.set_ylabel("on-target rate, −α")
    ax.set_title(label, fontsize=9)
    ax.grid(alpha=0.3)
    return _svg(fig, "positive versus negative steering")


def f1_histogram(hist: pd.DataFrame, label: str) -> str:
    """Feature interpretations: the distribution of detection F1 (bins of 0.1)."""
    fig = _figure(4.6, 2.8)
    ax = fig.add_subplot()
    if hist.empty or int(hist["count"].sum()) == 0:
        ax.text(0.5, 0.5, "no scored interpretations", ha="center", va="center")
        ax.set_axis_off()
        return _svg(fig, "F1 histogram (empty)")
    ax.bar(hist.bin_low, hist["count"], width=hist.bin_high - hist.bin_low, align="edge", color="#1f77b4",
           edgecolor="white")
    for x in (0.5, 0.75):
        ax.axvline(x, ls=":", color="grey")
    ax.set_xlim(0, 1)
    ax.set_xlabel("detection F1")
    ax.set_ylabel("features")
    ax.set_title(label, fontsize=9)
    return _svg(fig, "histogram of detection F1")


def precision_recall_scatter(features: pd.DataFrame) -> str:
    """Feature interpretations: each feature's detection precision against its recall."""
    fig = _figure(4.2, 4.2)
    ax = fig.add_subplot()
    df = features.dropna(subset=["precision", "recall"]) if not features.empty else features
    if df.empty:
        ax.text(0.5, 0.5, "no precision/recall", ha="center", va="center")
        ax.set_axis_off()
        return _svg(fig, "precision vs recall (empty)")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.scatter(df.recall, df.precision, s=12, color="#444", alpha=0.6)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    return _svg(fig, "precision versus recall of feature interpretations")
