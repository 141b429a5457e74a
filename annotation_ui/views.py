"""HTML for one item. All study text (reports, descriptions, tokens) is escaped here: it is
model output or free text and must render as text, never as markup."""

from __future__ import annotations

import html
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
