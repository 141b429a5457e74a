"""HTML for one item. All study text (reports, descriptions, tokens) is escaped here: it is
model output or free text and must render as text, never as markup."""

from __future__ import annotations

import html
import math
from typing import Any

from evaluation.textdiff import DIFF_CSS, render_side, word_diff

CSS = DIFF_CSS + (
    ".rs-report{white-space:pre-wrap;font-family:ui-serif,Georgia,serif;font-size:1.02em;line-height:1.5;"
    "border:1px solid #ccc;border-radius:6px;padding:10px;min-height:6em}"
    ".rs-head{font-size:1.05em}.rs-muted{color:#666;font-size:.9em}"
    ".rs-ctx{font-family:ui-monospace,monospace;white-space:pre-wrap;margin:4px 0;padding:4px 6px;"
    "border-bottom:1px solid #eee}.rs-tok{border-radius:2px}"
    ".rs-keys{font-size:.85em;color:#444}.rs-keys kbd{border:1px solid #aaa;border-radius:3px;padding:0 4px;"
    "background:#f6f6f6}"
)

esc = html.escape


def direction(alpha: float) -> str:
    if alpha > 0:
        return f"amplified (+α, α = {alpha:g})"
    if alpha < 0:
        return f"suppressed (−α, α = {alpha:g})"
    return "not steered (α = 0)"


def change_header(item: dict[str, Any], automated: str | None) -> str:
    parts = [
        f'<div class="rs-head"><b>Feature</b> <code>{esc(item["feature_id"])}</code>: '
        f'{esc(item.get("description") or "(no description)")}</div>',
        f'<div><b>Steering direction:</b> {esc(direction(float(item["alpha"])))}</div>',
    ]
    if item.get("indication"):
        parts.append(f'<div class="rs-muted"><b>Indication:</b> {esc(str(item["indication"]))}</div>')
    if automated is not None:
        parts.append(f'<div class="rs-muted"><b>Automated label:</b> {esc(automated)}</div>')
    return "".join(parts)


def change_sides(baseline: str, steered: str) -> tuple[str, str]:
    segs = word_diff(baseline, steered)
    return (f'<div class="rs-report" id="rs-baseline">{render_side(segs, "baseline")}</div>',
            f'<div class="rs-report" id="rs-steered">{render_side(segs, "steered")}</div>')


def feature_header(feature: dict[str, Any], f1: float | None = None) -> str:
    """The feature, its description and targets; its detection F1 only when given (not blinded)."""
    targets = feature.get("target_concepts") or []
    out = (f'<div class="rs-head"><b>Feature</b> <code>{esc(feature["feature_id"])}</code> '
           f'<span class="rs-muted">({esc(str(feature.get("source", "")))} #{esc(str(feature.get("bank_index", "")))})'
           f'</span></div><div style="font-size:1.15em;margin:6px 0"><b>Description:</b> '
           f'{esc(feature.get("description") or "(no description)")}</div>')
    if targets:
        out += f'<div class="rs-muted"><b>Target concepts:</b> {esc(", ".join(map(str, targets)))}</div>'
    if f1 is not None:
        out += f'<div class="rs-muted" id="rs-f1"><b>Detection F1:</b> {float(f1):.2f}</div>'
    return out


MAX_HELDOUT = 8


def heldout_html(examples: list[dict[str, Any]], n: int = MAX_HELDOUT) -> str:
    """Held-out scoring examples (never shown to the explainer): half where the feature fires, half
    where it does not (hard negatives first), with that truth but never the scorer's prediction."""
    active = [e for e in examples if e.get("label")]
    inactive = sorted((e for e in examples if not e.get("label")), key=lambda e: e.get("kind") != "hard")
    picked = active[: n // 2] + inactive[: n - min(len(active), n // 2)]
    if not picked:
        return ""
    rows = []
    for e in picked:
        tag = "fires" if e.get("label") else ("does not fire (shares the description's words)"
                                             if e.get("kind") == "hard" else "does not fire")
        rows.append(f'<div class="rs-ctx"><span class="rs-muted">{esc(tag)}</span><br>{esc(str(e.get("text", "")))}</div>')
    return ('<div id="rs-heldout"><div class="rs-muted" style="margin-top:8px"><b>Held-out examples</b> '
            f'(not used to write the description)</div>{"".join(rows)}</div>')


def contexts_html(contexts: list[dict[str, Any]]) -> str:
    """Top-activating contexts, each token shaded by its activation relative to the maximum."""
    if not contexts:
        return ('<div class="rs-muted" id="rs-contexts">No top-activating contexts are stored for this '
                'feature (they come from <code>radsteer mine</code>); judge the description on its own.</div>')
    peak = max((max((float(a) for a in c["activations"]), default=0.0) for c in contexts), default=0.0) or 1.0
    rows = []
    for c in contexts:
        toks = []
        for tok, act in zip(c["tokens"], c["activations"]):
            alpha = max(0.0, min(1.0, float(act) / peak))
            toks.append(f'<span class="rs-tok" title="{float(act):.3g}" '
                        f'style="background:rgba(255,140,0,{alpha:.2f})">{esc(str(tok))}</span>')
        rows.append(f'<div class="rs-ctx"><span class="rs-muted">#{int(c["rank"]) + 1} '
                    f'max {float(c["activation"]):.3g} · {esc(str(c["doc_id"]))}</span><br>{"".join(toks)}</div>')
    return f'<div id="rs-contexts">{"".join(rows)}</div>'


def progress_html(done: int, total: int, position: int | None) -> str:
    pct = 100 * done / total if total else 100
    where = f" · item {position + 1} of {total}" if position is not None and position < total else ""
    return (f'<div id="rs-progress"><b>{done} / {total}</b> answered{where}'
            f'<div style="background:#eee;height:6px;border-radius:3px"><div style="background:#4a7;height:6px;'
            f'border-radius:3px;width:{pct:.0f}%"></div></div></div>')


def keys_html(keymap: dict[str, tuple[str, str]]) -> str:
    """The shortcut legend shown under the form (same map the page's script uses)."""
    items = [f"<kbd>{esc(k)}</kbd> {esc(what)}" for k, (_target, what) in keymap.items()]
    return '<div class="rs-keys">Keys: ' + " · ".join(items) + "</div>"


READER_FIELDS = {
    "change": ("label", "interpretation_valid", "coherent"),
    "feature": ("validity", "clinically_relevant"),
}


def readers_html(task: str, reason: str, readers: dict[str, dict[str, Any]]) -> str:
    """The adjudicator's table: each reader's answers (text escaped), disagreeing cells marked."""
    fields = READER_FIELDS[task]
    answered = [a for a in readers.values() if not a.get("skipped")]
    differs = {f for f in fields if len({a.get(f) for a in answered}) > 1}
    head = "".join(f"<th>{esc(f.replace('_', ' '))}</th>" for f in fields)
    rows = []
    for name, a in readers.items():
        if a.get("skipped"):
            cells = f'<td colspan="{len(fields)}"><i>skipped</i></td>'
        else:
            cells = "".join(f'<td class="{"rs-differs" if f in differs else ""}">{esc(str(a.get(f, "")))}</td>'
                            for f in fields)
        flag = "⚑ flagged" if a.get("flagged") else ""
        rows.append(f"<tr><td><b>{esc(name)}</b></td>{cells}<td>{flag}</td>"
                    f'<td class="rs-muted">{esc(str(a.get("comment") or ""))}</td></tr>')
    return (f'<div id="rs-readers"><div class="rs-head">Adjudication ({esc(reason)}): the readers answered</div>'
            f'<table class="rs-readers"><tr><th>reader</th>{head}<th></th><th>comment</th></tr>{"".join(rows)}</table>'
            "<div class=\"rs-muted\">Record the final answer below.</div></div>")


def images_html(images: list[tuple[str, str, str]], grounding: dict[str, Any] | None = None) -> str:
    """Image viewers: (view, label, url) each with zoom, pan and a window/level control; the
    frontal one also shows the grounded reports' boxes (`grounding_html`).

    The window/level is an SVG linear transfer function on the displayed greyscale values
    (slope 1/window, intercept 0.5 − level/window); the page script moves its sliders."""
    if not images:
        return ""
    boxes, legend = grounding_html(grounding)
    out = []
    for i, (view, label, url) in enumerate(images):
        fid = f"rs-wl-{i}"
        funcs = "".join(f'<feFunc{c} type="linear" slope="1" intercept="0"/>' for c in "RGB")
        frontal = view == "frontal"
        out.append(
            f'<figure class="rs-viewer" data-view="{esc(view)}" data-filter="{fid}">'
            f'<figcaption>{esc(label)}</figcaption>'
            f'<div class="rs-stage"><div class="rs-layer"><img class="rs-img" src="{esc(url)}" alt="{esc(label)} image" '
            f'draggable="false" style="filter:url(#{fid})">{boxes if frontal else ""}</div></div>'
            '<div class="rs-tools"><button type="button" data-act="in" title="zoom in (+)">+</button>'
            '<button type="button" data-act="out" title="zoom out (−)">−</button>'
            '<button type="button" data-act="reset" title="reset zoom, pan and window (0)">reset</button>'
            '<label>level <input type="range" data-wl="level" min="0" max="255" value="128"></label>'
            '<label>window <input type="range" data-wl="window" min="2" max="255" value="255"></label>'
            '<span class="rs-zoom">100%</span></div>'
            f'<svg width="0" height="0" style="position:absolute" aria-hidden="true"><filter id="{fid}" '
            f'color-interpolation-filters="sRGB"><feComponentTransfer>{funcs}</feComponentTransfer></filter></svg>'
            f'{legend if frontal else ""}</figure>')
    return f'<div class="rs-viewers" id="rs-viewers">{"".join(out)}</div>'


LAYOUT_CSS = (
    ".rs-readers{border-collapse:collapse;margin:6px 0}.rs-readers td,.rs-readers th{border:1px solid #ddd;"
    "padding:3px 8px;text-align:left}.rs-differs{background:#fde68a}"
    ".rs-viewers{display:flex;flex-direction:column;gap:10px}"
    ".rs-viewer{margin:0;border:1px solid #ccc;border-radius:6px;padding:6px;background:#111;color:#eee}"
    ".rs-viewer figcaption,.rs-tools label,.rs-zoom{color:#eee !important;font-size:.9em}"
    ".rs-viewer figcaption{margin-bottom:4px;font-weight:600}.rs-side-title{font-weight:600;margin-bottom:4px}"
    ".rs-stage{overflow:hidden;height:46vh;min-height:260px;cursor:grab;display:flex;align-items:center;"
    "justify-content:center;touch-action:none}"
    ".rs-layer{transform-origin:0 0;will-change:transform}.rs-img{max-width:100%;max-height:46vh;display:block;"
    "user-select:none}"
    ".rs-tools{display:flex;gap:6px;align-items:center;flex-wrap:wrap;font-size:.85em;margin-top:4px}"
    ".rs-tools button{background:#333;color:#eee;border:1px solid #666;border-radius:4px;padding:0 8px}"
    ".rs-tools input[type=range]{width:90px}"
    "#rs-images-col:not(:has(.rs-viewer)){display:none}"
    "body:not(:has(#rs-item[data-task=change][data-finished='0'])) #rs-q-change{display:none !important}"
    "body:not(:has(#rs-item[data-task=feature][data-finished='0'])) #rs-q-feature{display:none !important}"
    "@media (min-width:1400px){#rs-main{flex-wrap:nowrap}#rs-images-col{flex:3 1 0 !important}"
    "#rs-text-col{flex:2 1 0 !important}.rs-stage{height:62vh}.rs-img{max-height:62vh}}"
    "@media (max-width:1399px){#rs-main{flex-wrap:wrap}#rs-images-col,#rs-text-col{flex:1 1 100% !important}"
    ".rs-viewers{flex-direction:row;flex-wrap:wrap}.rs-viewer{flex:1 1 300px}}"
)


# ---- grounded reports (MAIRA-2 `model.grounded`) ------------------------------------------------
GROUNDING_SIDES = (("baseline", "Baseline", "B"), ("steered", "Steered", "S"))
"""(stored side, shown name, box tag prefix): B1, B2 … for the baseline's phrases, S1 … for the steered."""


def drawable_boxes(raw: Any) -> list[tuple[float, float, float, float]]:
    """The boxes of one stored phrase that can be drawn: four finite numbers, corners ordered,
    clamped to the image; a box wholly outside the image is dropped (stored JSON is model output)."""
    out: list[tuple[float, float, float, float]] = []
    for box in raw if isinstance(raw, list) else []:
        if not isinstance(box, (list, tuple)) or len(box) != 4 or any(isinstance(v, bool) for v in box):
            continue
        try:
            v = [float(x) for x in box]
        except (TypeError, ValueError):
            continue
        if not all(math.isfinite(x) for x in v):
            continue
        x0, x1 = sorted(v[0::2])
        y0, y1 = sorted(v[1::2])
        if x1 < 0 or y1 < 0 or x0 > 1 or y0 > 1:
            continue
        out.append((max(x0, 0.0), max(y0, 0.0), min(x1, 1.0), min(y1, 1.0)))
    return out


def grounding_html(grounding: dict[str, Any] | None) -> tuple[str, str]:
    """(SVG overlay, legend) of the grounded reports' boxes; ("", "") when no phrase has a box.

    The overlay sits in the frontal viewer's zoomed and panned layer, on top of the image, so it
    moves with it. MAIRA-2's boxes are normalised to the centre square it crops the frontal image
    to; `viewBox="0 0 1000 1000"` with `xMidYMid meet` is exactly that square of the displayed image.
    Each box carries its tag (B1, S2 …) and a hover title with its sentence; the legend lists the
    sentences and has a show/hide switch per report. The page script underlines the sentences that
    have boxes in the report texts (CSS highlights: no markup is added to the reports) and marks the
    one whose box or legend line is hovered."""
    shapes: list[str] = []
    lists: list[str] = []
    for side, name, prefix in GROUNDING_SIDES:
        phrases = (grounding or {}).get(side)
        items: list[str] = []
        for phrase in phrases if isinstance(phrases, list) else []:
            boxes = drawable_boxes(phrase.get("boxes")) if isinstance(phrase, dict) else []
            if not boxes:
                continue
            tag = f"{prefix}{len(items) + 1}"
            text = str(phrase.get("text") or "")
            for x0, y0, x1, y1 in boxes:  # in the overlay's 1000 × 1000 user units
                w, h = max(1000 * (x1 - x0), 4.0), max(1000 * (y1 - y0), 4.0)
                shapes.append(
                    f'<g class="rs-box rs-box-{side}" data-rs-box="{tag}"><title>{name} {tag}: {esc(text)}</title>'
                    f'<rect x="{1000 * x0:.1f}" y="{1000 * y0:.1f}" width="{w:.1f}" height="{h:.1f}" '
                    'vector-effect="non-scaling-stroke"/>'
                    f'<text x="{1000 * x0 + 6:.1f}" y="{1000 * y0 + 34:.1f}">{tag}</text></g>')
            items.append(f'<li data-rs-box="{tag}"><b>{tag}</b> <span class="rs-gt">{esc(text)}</span></li>')
        if items:
            lists.append(
                f'<div class="rs-gl rs-gl-{side}"><label><input type="checkbox" class="rs-show" data-side="{side}" '
                f'checked> <span class="rs-swatch"></span> {name} report</label><ol>{"".join(items)}</ol></div>')
    if not shapes:
        return "", ""
    svg = ('<svg class="rs-boxes" viewBox="0 0 1000 1000" preserveAspectRatio="xMidYMid meet" '
           f'role="img" aria-label="boxes of the grounded reports">{"".join(shapes)}</svg>')
    legend = ('<div class="rs-grounding" id="rs-grounding"><div class="rs-muted">Boxes of the grounded reports '
              f'(each finding where the model placed it on this image)</div>{"".join(lists)}</div>')
    return svg, legend


GROUNDING_CSS = (
    ".rs-layer{position:relative}"
    ".rs-boxes{position:absolute;left:0;top:0;width:100%;height:100%;overflow:visible;pointer-events:none}"
    ".rs-box rect{fill-opacity:.06;stroke-width:2;pointer-events:all}.rs-box text{font:bold 32px sans-serif;"
    "paint-order:stroke;stroke:#000;stroke-width:6px}"
    ".rs-box-baseline rect{stroke:#38bdf8;fill:#38bdf8;stroke-dasharray:6 3}.rs-box-baseline text{fill:#38bdf8}"
    ".rs-box-steered rect{stroke:#f97316;fill:#f97316}.rs-box-steered text{fill:#f97316}"
    ".rs-box.rs-hl rect{stroke-width:4;fill-opacity:.2}"
    ".rs-grounding{display:flex;flex-wrap:wrap;gap:4px 16px;font-size:.85em;margin-top:4px}"
    ".rs-grounding>.rs-muted{flex:1 1 100%;color:#bbb !important}.rs-gl label,.rs-gl li{color:#eee !important}"
    ".rs-gl ol{margin:2px 0 0 0;padding-left:0;list-style:none}.rs-gl li{cursor:default}"
    ".rs-gl li.rs-hl{text-decoration:underline}"
    ".rs-swatch{display:inline-block;width:14px;height:9px;border:2px solid;vertical-align:middle}"
    ".rs-gl-baseline .rs-swatch{border-color:#38bdf8;border-style:dashed}.rs-gl-baseline b{color:#38bdf8}"
    ".rs-gl-steered .rs-swatch{border-color:#f97316}.rs-gl-steered b{color:#f97316}"
    "::highlight(rs-g-b){text-decoration:underline dashed #0284c7 2px}"
    "::highlight(rs-g-s){text-decoration:underline solid #ea580c 2px}::highlight(rs-g-hl){background-color:#fde68a}"
    ".rs-viewer:has(.rs-show[data-side=baseline]:not(:checked)) .rs-box-baseline{display:none}"
    ".rs-viewer:has(.rs-show[data-side=steered]:not(:checked)) .rs-box-steered{display:none}"
)
