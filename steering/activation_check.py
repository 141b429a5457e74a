"""The mechanistic check: does a steered report itself activate the feature it was steered with?

For every steered generation of a study, its text is read back through the *unsteered* model
and the target feature's activation at the steering layer is recorded — its mean and its
maximum over the text's tokens — beside the same numbers for the case's baseline report.
A feature that works as described should read higher in reports steered towards it (α > 0)
and lower in reports steered away (α < 0), independently of any text-level verdict.

How a text is read (`with_prompt`):
- `True` (default): the case's prompt (with its images, for MAIRA-2) followed by the text —
  the text sits at the positions it was generated at; only the text's tokens are measured;
- `False`: the text alone (BOS + text); position 0 and special tokens are not measured,
  as in `radsteer mine`.
An empty text has mean and max 0.0. Activations are SAE encoder outputs, or signed projections
onto the unit-normalised concept vector (see `steering.feature_reader`).

Resumable: rows go to `activation_checks` case by case, one transaction each; generations
already checked are skipped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from steering.adapters import ModelAdapter, pad_batch
from steering.errors import RadsteerError
from steering.feature_bank import FeatureBank
from steering.feature_reader import FeatureReader, LayerReader
from steering.store import StudyStore


@dataclass
class ActivationCheckReport:
    planned: int = 0
    already_checked: int = 0
    checked: int = 0
    without_baseline: int = 0
    empty_texts: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        parts = [f"{self.checked} steered reports checked"]
        if self.already_checked:
            parts.append(f"{self.already_checked} already checked before")
        if self.without_baseline:
            parts.append(f"{self.without_baseline} skipped (no baseline report stored)")
        if self.empty_texts:
            parts.append(f"{self.empty_texts} empty texts read as 0")
        parts.append(f"{self.seconds:.1f} s")
        return "; ".join(parts)


class ActivationChecker:
    """Reads texts back through the unsteered model and measures chosen features on them."""

    def __init__(
        self,
        adapter: ModelAdapter,
        bank: FeatureBank,
        layer: int,
        *,
        with_prompt: bool = True,
        batch_size: int = 8,
    ) -> None:
        if batch_size < 1:
            raise RadsteerError(f"--batch-size must be at least 1, not {batch_size}")
        bank.check_width(adapter.hidden_size, adapter.name)
        self.adapter, self.bank, self.layer = adapter, bank, layer
        self.with_prompt, self.batch_size = with_prompt, batch_size
        self.layer_reader = LayerReader(adapter, layer)
        self.reader = FeatureReader(bank).to(adapter.device)
        self._excluded = torch.tensor(sorted(adapter.special_token_ids() | {adapter.pad_token_id}), dtype=torch.long)
        cfg = getattr(adapter.model.config, "text_config", None) or adapter.model.config
        self.max_positions = int(getattr(cfg, "max_position_embeddings", 0) or 0) or None

    def _sequence(self, prompt: list[int], text: str) -> tuple[list[int], int]:
        """Token ids to run and the index where the measured text starts."""
        tok = self.adapter.tokenizer
        if self.with_prompt:
            ids = prompt + [int(i) for i in tok(text, add_special_tokens=False)["input_ids"]]
            start = len(prompt)
        else:
            ids = [int(i) for i in tok(text, add_special_tokens=True)["input_ids"]]
            start = 1
        if self.max_positions is not None:
            ids = ids[: self.max_positions]
        return ids, start

    @torch.inference_mode()
    def measure(
        self,
        case: Mapping[str, Any],
        texts: Sequence[str],
        features: Sequence[Sequence[str]],
        extras: Mapping[str, Any] | None = None,
    ) -> list[dict[str, tuple[float, float]]]:
        """For each text, {feature_id: (mean, max)} over its measured tokens."""
        prompt = [int(i) for i in self.adapter.prompt_ids(case)] if self.with_prompt else []
        if self.with_prompt and extras is None:
            extras = self.adapter.case_extras(case)
        out: list[dict[str, tuple[float, float]]] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            seqs = [self._sequence(prompt, t) for t in chunk]
            input_ids, mask = pad_batch([s for s, _ in seqs], self.adapter.pad_token_id)
            width = input_ids.shape[1]
            hidden = self.layer_reader.hidden(input_ids, mask, [extras or {} for _ in seqs])
            for i, (s, first) in enumerate(seqs):
                wanted = list(features[start + i])
                measured = torch.zeros(width, dtype=torch.bool)
                measured[first : len(s)] = True
                measured &= ~torch.isin(input_ids[i], self._excluded)
                if not bool(measured.any()):
                    out.append({f: (0.0, 0.0) for f in wanted})
                    continue
                acts = self.reader(hidden[i, measured.to(hidden.device)])  # [n_tokens, n_features]
                cols = acts[:, [self.bank.index(f) for f in wanted]].cpu()
                out.append({f: (float(cols[:, k].mean()), float(cols[:, k].max())) for k, f in enumerate(wanted)})
        return out

    def run(
        self,
        store: StudyStore,
        cases: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        progress: bool = True,
    ) -> ActivationCheckReport:
        """Check every steered generation of the store not checked yet (cases default to the store's)."""
        start = time.perf_counter()
        report = ActivationCheckReport()
        pairs = store.generations_with_baselines()
        report.planned = len(pairs)
        done = {int(r["generation_id"]) for r in store.rows("activation_checks")}
        if not pairs.empty:
            report.already_checked = int(pairs.generation_id.isin(done).sum())
            pairs = pairs[~pairs.generation_id.isin(done)]
            missing = pairs.baseline_generation_id.isna()
            report.without_baseline = int(missing.sum())
            pairs = pairs[~missing]
        for fid in sorted(set(pairs.feature_id)) if not pairs.empty else []:
            self.bank.index(fid)  # unknown feature ids fail before any work
        if cases is None:
            cases = {r["case_id"]: r["inputs"] for r in store.rows("cases")}
        bar = tqdm(total=len(pairs), unit="report", desc="activations", disable=not progress, dynamic_ncols=True)
        try:
            for case_id, group in (pairs.groupby("case_id", sort=True) if not pairs.empty else []):
                if case_id not in cases:
                    raise RadsteerError(f"case {case_id!r} of the stored generations is not in the study's cases")
                rows = self._check_case(cases[case_id], group, report)
                store.insert_ignore("activation_checks", rows)
                report.checked += len(rows)
                bar.update(len(rows))
        finally:
            bar.close()
        report.seconds = time.perf_counter() - start
        return report

    def _check_case(self, case: Mapping[str, Any], group: pd.DataFrame,
                    report: ActivationCheckReport) -> list[dict[str, Any]]:
        # Each text once: the steered texts with their own feature, each baseline with every
        # feature steered against it.
        texts: dict[int, str] = {}
        wanted: dict[int, set[str]] = {}
        for r in group.itertuples():
            gid, bid = int(r.generation_id), int(r.baseline_generation_id)
            texts[gid], texts[bid] = r.text, r.baseline_text
            wanted.setdefault(gid, set()).add(r.feature_id)
            wanted.setdefault(bid, set()).add(r.feature_id)
        ids = list(texts)
        report.empty_texts += sum(1 for i in ids if not str(texts[i]).strip())
        extras = self.adapter.case_extras(case) if self.with_prompt else None
        measured = self.measure(case, [texts[i] for i in ids], [sorted(wanted[i]) for i in ids], extras)
        by_id = dict(zip(ids, measured))
        rows = []
        for r in group.itertuples():
            s_mean, s_max = by_id[int(r.generation_id)][r.feature_id]
            b_mean, b_max = by_id[int(r.baseline_generation_id)][r.feature_id]
            rows.append({"generation_id": int(r.generation_id), "feature_id": r.feature_id,
                         "steered_activation": s_mean, "baseline_activation": b_mean,
                         "steered_max": s_max, "baseline_max": b_max})
        return rows
