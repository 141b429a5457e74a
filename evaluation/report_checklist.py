"""The report's reporting checklist: what a reader-study report states, from what the run recorded.

Each item is one sentence or two built from the manifest (hashes, settings), the frozen protocol
(case selection, α, readers' blinding), the store (cases, reads, verdicts) and the run's deviations.
Where the run did not record something, the item says so rather than guessing.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evaluation.report import ReportContext


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _get(d: Any, *path: str) -> Any:
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _hash(h: Any) -> str:
    return f"<code>{_e(h)}</code>" if h else "not recorded"


def checklist_items(ctx: ReportContext) -> list[tuple[str, str]]:
    data, m, p = ctx.data, ctx.data.manifest or {}, ctx.data.protocol or {}
    items: list[tuple[str, str]] = []

    # cases and their selection
    splits = data.cases.split.value_counts().to_dict() if not data.cases.empty and "split" in data.cases else {}
    sel = _get(p, "cases") or {}
    split = sel.get("split") or {}
    limit = sel.get("limit")
    items.append(("Cases and their selection",
                  f"{len(data.cases)} imaging studies"
                  + (f" ({', '.join(f'{_e(k)}: {v}' for k, v in sorted(splits.items()))})" if splits else "")
                  + f" from <code>{_e(sel.get('path', 'not recorded'))}</code>"
                  + (f", the first {_e(limit)} kept" if limit else "")
                  + (f"; split seed {_e(split.get('seed'))}, tune fraction {_e(split.get('tune_fraction'))}, "
                     f"analysed split: {_e(split.get('use', 'all'))}" if split else "; no tune/test split")
                  + "."))

    # model and SAE
    model = m.get("model") or {}
    bank = m.get("feature_bank") or m.get("sae") or {}
    items.append(("Model and feature vectors",
                  f"Model {_e(model.get('kind', '?'))} {_e(model.get('name') or '')} (sha256 {_hash(model.get('sha256'))}); "
                  f"feature bank {_e(bank.get('source', ''))} {_e(bank.get('format') or '')} with "
                  f"{_e(bank.get('n_features', '?'))} features (sha256 {_hash(bank.get('sha256'))}); "
                  f"{len(data.features)} features steered."))

    # steering settings
    alphas = p.get("alphas")
    steer = p.get("steering") or {}
    gen = p.get("generation") or {}
    items.append(("Steering settings",
                  f"Layer {_e(m.get('layer', p.get('layer', '?')))} (module <code>{_e(m.get('layer_module', '?'))}</code>), "
                  f"vector space {_e(m.get('vector_space', steer.get('vector_space', '?')))}"
                  + (f" × {_e(m.get('normalisation_factor'))}" if m.get("normalisation_factor") else "")
                  + f", positions {_e(steer.get('positions', 'all'))}, α ∈ {{{_e(', '.join(f'{float(a):g}' for a in alphas)) if isinstance(alphas, list) else '?'}}}; "
                  f"{'sampling' if gen.get('do_sample') else 'greedy decoding'}, at most "
                  f"{_e(gen.get('max_new_tokens', '?'))} new tokens; settings hash {_hash(m.get('settings_hash'))}."))

    # labelling methods
    v = data.verdicts
    counts = v.groupby("method").size().to_dict() if not v.empty else {}
    judges = sorted({j for j in v.judge_model.dropna().unique()}) if not v.empty and "judge_model" in v else []
    ev = p.get("evaluation") or {}
    items.append(("Labelling methods",
                  (", ".join(f"{_e(k)} ({n} verdicts)" for k, n in sorted(counts.items())) or "no automated verdicts")
                  + f"; entity extraction: {_e(ev.get('extractor', 'lexicon'))}"
                  + (f"; LLM judge: {_e(', '.join(judges))}" if judges else "; no LLM judge")
                  + f". Primary method of this report: {_e(ctx.method)}."))

    # readers and blinding
    ann = p.get("annotation") or {}
    if data.reads.empty:
        readers = "No radiologist reads are stored."
    else:
        n_double = int((data.majority.n_reads >= 2).sum()) if not data.majority.empty else 0
        readers = (f"{data.reads.annotator.nunique()} readers, {len(data.reads)} reads of {len(data.majority)} "
                   f"steered reports ({n_double} read twice or more).")
    blinded = ann.get("blinded", True)
    items.append(("Readers and their blinding",
                  readers + (" Readers were blinded to the automated labels and read in a seeded random order"
                             if blinded else " Readers saw the automated labels (not blinded)")
                  + f" (overlap {_e(ann.get('overlap', 0.2))}, queue seed {_e(ann.get('seed', 0))}, per the protocol)."))

    # deviations
    flow = ctx.stats.flow
    excl = flow[flow.stage.str.startswith("excluded")] if not flow.empty else flow
    dev = [*ctx.deviations, *(f"{r.stage}: {r.count}" + (f" ({r.note})" if r.note else "") for r in excl.itertuples())]
    if data.protocol_error:
        dev.append(data.protocol_error)
    items.append(("Deviations from the protocol",
                  "<ul>" + "".join(f"<li>{_e(d)}</li>" for d in dev) + "</ul>" if dev
                  else "None recorded: every planned row was generated and labelled with the protocol's settings."))
    items.append(("Software and provenance",
                  f"radsteer git revision {_hash(m.get('git_revision'))}, Python {_e(m.get('python', '?'))}; "
                  f"protocol hash {_hash(m.get('protocol_hash'))}; run recorded {_e(m.get('created_at', '?'))}; "
                  f"report created {_e(ctx.created)}."))
    return items
