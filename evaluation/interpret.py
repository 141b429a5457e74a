"""Feature interpretation: explain every mined feature, then score each explanation by detection.

The first half of the MAIRA-2 SAE study (which features are interpretable at all), built on the
contexts `radsteer mine` stored. Per feature:

1. split its stored contexts into evidence shown to the explainer and held-out examples
   (`evaluation.interpret_examples`);
2. an explainer (`lexicon` offline, or `llm` through the judge's client) writes a short
   description and target concepts from the shown evidence;
3. a scorer (`lexicon`, or `llm`) predicts, from the description alone, which held-out examples
   are active: active contexts across activation quantiles, random and hard inactive ones;
4. precision, recall, F1, balanced accuracy and recall per quantile are stored
   (`feature_interpretations`), with every raw exchange (`interpretation_exchanges`), and the
   `features` table gets the description, targets, explainer and F1.

Resumable: features are stored a chunk at a time, and a feature whose interpretation by this
explainer was stored with the same settings hash is skipped; the LLM path also sits behind the
judge's response cache, so a re-run sends no request at all.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.detection import detection_scores
from evaluation.interpret_examples import FeatureEvidence, SplitSettings, description_words, split_evidence
from evaluation.interpret_lexicon import (
    Explanation,
    LexiconExplainer,
    LexiconScorer,
    concepts_in,
    mentions_any,
)
from steering.errors import RadsteerError
from steering.store import StudyStore, stable_hash
from steering.store.files import write_atomic

INTERPRET_VERSION = "interpret-v1"
CSV_COLUMNS = ("feature_id", "description", "targets", "explainer", "f1", "precision", "recall",
               "n_active", "n_inactive", "balanced_accuracy", "frequency", "scorer")
EXPLAINERS = ("lexicon", "llm")


@dataclass
class InterpretReport:
    features: int = 0
    skipped: int = 0  # already interpreted with the same settings
    interpreted: int = 0
    errors: int = 0
    no_contexts: int = 0
    unscored: int = 0  # explained, but too few contexts to hold any out for detection scoring
    seconds: float = 0.0
    requests: int = 0  # HTTP requests sent (LLM paths)
    cached: int = 0
    f1: list[float] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.interpreted} of {self.features} features interpreted"]
        if self.skipped:
            parts.append(f"{self.skipped} already done")
        if self.errors:
            parts.append(f"{self.errors} errors (stored; run again to retry)")
        if self.no_contexts:
            parts.append(f"{self.no_contexts} never active")
        if self.unscored:
            parts.append(f"{self.unscored} too rare to score (no held-out context)")
        if self.f1:
            above = sum(f > 0.75 for f in self.f1)
            below = sum(f < 0.5 for f in self.f1)
            parts.append(f"F1 > 0.75: {above}, F1 < 0.5: {below}")
        if self.requests or self.cached:
            parts.append(f"{self.requests} requests, {self.cached} cached answers")
        parts.append(f"{self.seconds:.1f} s")
        return "; ".join(parts)


@dataclass
class Interpreter:
    """Explainer + scorer + split settings; `run` interprets features of a study store."""

    explainer: Any  # LexiconExplainer | LLMExplainer
    scorer: Any  # LexiconScorer | LLMScorer
    split: SplitSettings = field(default_factory=SplitSettings)
    chunk: int = 64  # features explained, scored and stored together

    @property
    def llm_judge(self) -> Any:
        """The judge client the llm explainer/scorer share (None on the offline lexicon path): its
        `outcome_line()` and `failure()` are what every judge-using command reports."""
        channel = getattr(self.explainer, "channel", None) or getattr(self.scorer, "channel", None)
        return channel.judge if channel is not None else None

    def settings_hash(self) -> str:
        return stable_hash({"version": INTERPRET_VERSION, "explainer": self.explainer.describe(),
                            "scorer": self.scorer.describe(), "split": self.split.describe()})

    def examples(self, ev: FeatureEvidence, explanation: Explanation) -> list:
        """Held-out examples for one explanation: every active one, hard and random negatives."""
        words = description_words(explanation.description)
        targets = explanation.targets

        def is_hard(c) -> bool:
            if targets and (mentions_any(c.text, targets) or set(targets) & concepts_in(c.text)):
                return True
            return bool(words) and bool(words & description_words(c.text))

        return [*ev.heldout_active, *ev.negatives(is_hard)]

    def run(
        self,
        store: StudyStore,
        feature_ids: Sequence[str] | None = None,
        *,
        feature_meta: dict[str, tuple[str, int]] | None = None,
        keep_description: set[str] | frozenset[str] = frozenset(),
        force: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> InterpretReport:
        """Interpret `feature_ids` (default: every mined feature).

        feature_meta: feature_id → (source, bank_index) for `features` rows not yet in the store;
        keep_description: features whose description/targets the protocol gives (left as they are).
        """
        start = time.perf_counter()
        mined = store.mined_feature_ids()
        ids = list(mined if feature_ids is None else feature_ids)
        missing = sorted(set(ids) - set(mined))
        if not mined:
            raise RadsteerError("no mined contexts in this study: run `radsteer mine PROTOCOL --corpus REPORTS.jsonl` first")
        if missing:
            raise RadsteerError(f"{len(missing)} feature(s) have no mined contexts (e.g. {', '.join(missing[:5])}): "
                                f"run `radsteer mine` with these features first")
        report = InterpretReport(features=len(ids))
        h = self.settings_hash()
        done = {} if force else store.interpretation_hashes(self.explainer.name)
        todo = [f for f in ids if done.get(f) != h]
        report.skipped = len(ids) - len(todo)
        stats = store.feature_stats_by_feature()
        known = {r["feature_id"]: r for r in store.rows("features")}
        meta = feature_meta or {}
        for i in range(0, len(todo), self.chunk):
            part = todo[i : i + self.chunk]
            contexts = store.feature_contexts_by_feature(part)
            evidence = [split_evidence(f, contexts[f], stats.get(f), self.split) for f in part]
            rows, exchanges, feats = self._interpret_chunk(evidence, h, report)
            for r in feats:
                fid = r["feature_id"]
                if fid in known:
                    r["source"], r["bank_index"] = known[fid]["source"], known[fid]["bank_index"]
                elif fid in meta:
                    r["source"], r["bank_index"] = meta[fid]
                else:
                    r["source"], r["bank_index"] = "sae", _index_of(fid)
                if fid in keep_description:  # the protocol's wording stays; its score is not this one
                    for col in ("description", "target_concepts", "interpretability", "explainer"):
                        r.pop(col, None)
            store.add_interpretations(rows, exchanges, feats)
            if progress is not None:
                progress(min(i + self.chunk, len(todo)), len(todo))
        report.seconds = time.perf_counter() - start
        return report

    def _interpret_chunk(self, evidence: list[FeatureEvidence], h: str, report: InterpretReport):
        active = [ev for ev in evidence if ev.shown_active]
        explanations = {e.feature_id: e for e in self.explainer.explain_many(active)}
        jobs, job_ids = [], []
        examples: dict[str, list] = {}
        for ev in active:
            ex = explanations[ev.feature_id]
            if ex.error is None:
                examples[ev.feature_id] = self.examples(ev, ex)
                jobs.append((ex, examples[ev.feature_id]))
                job_ids.append(ev.feature_id)
        scored = dict(zip(job_ids, self.scorer.score_many(jobs), strict=True))
        report.requests += getattr(self.explainer, "requests", 0) + getattr(self.scorer, "requests", 0)
        report.cached += getattr(self.explainer, "cached", 0) + getattr(self.scorer, "cached", 0)
        rows, exchanges, feats = [], [], []
        for ev in evidence:
            fid = ev.feature_id
            base = {"feature_id": fid, "explainer": self.explainer.name, "scorer": self.scorer.name,
                    "settings_hash": h}
            details: dict[str, Any] = {"split": self.split.describe(), "frequency": ev.frequency,
                                       "notes": ev.notes, "explainer": self.explainer.describe(),
                                       "scorer": self.scorer.describe()}
            if not ev.shown_active:
                report.no_contexts += 1
                report.interpreted += 1
                rows.append({**base, "description": "never active in the mined corpus", "targets": [],
                             "precision": None, "recall": None, "f1": None, "balanced_accuracy": None,
                             "recall_by_quantile": {}, "n_active": 0, "n_inactive": 0, "examples": [],
                             "details": details, "error": None})
                continue
            ex = explanations[fid]
            details.update(ex.details)
            for j, x in enumerate(ex.exchanges):
                exchanges.append({"feature_id": fid, "explainer": self.explainer.name, "stage": "explain",
                                  "batch": j, **x})
            if ex.error is not None:
                report.errors += 1
                rows.append({**base, "description": "", "targets": [], "precision": None, "recall": None,
                             "f1": None, "balanced_accuracy": None, "recall_by_quantile": {}, "n_active": 0,
                             "n_inactive": 0, "examples": [], "details": details, "error": ex.error})
                continue
            preds, score_exchanges, error = scored[fid]
            for j, x in enumerate(score_exchanges):
                exchanges.append({"feature_id": fid, "explainer": self.explainer.name, "stage": "score",
                                  "batch": j, **x})
            exs = examples[fid]
            if not exs:  # a fact of the mined corpus, not a failure: re-running cannot change it
                report.unscored += 1
                report.interpreted += 1
                details["note"] = "too few mined contexts to hold any out for detection scoring"
                rows.append({**base, "description": ex.description, "targets": ex.targets, "precision": None,
                             "recall": None, "f1": None, "balanced_accuracy": None, "recall_by_quantile": {},
                             "n_active": 0, "n_inactive": 0, "examples": [], "details": details, "error": None})
                feats.append({"feature_id": fid, "description": ex.description, "target_concepts": ex.targets,
                              "interpretability": None, "explainer": self.explainer.name})
                continue
            kept = [(e, p) for e, p in zip(exs, preds) if p is not None]
            if error is not None or not kept:
                report.errors += 1
                rows.append({**base, "description": ex.description, "targets": ex.targets, "precision": None,
                             "recall": None, "f1": None, "balanced_accuracy": None, "recall_by_quantile": {},
                             "n_active": 0, "n_inactive": 0, "examples": [e.to_json() for e in exs],
                             "details": details, "error": error or "the scorer answered no example"})
                continue
            sc = detection_scores([e.label for e, _ in kept], [bool(p) for _, p in kept],
                                  [e.quantile for e, _ in kept], [e.kind for e, _ in kept])
            details.update(tp=sc.tp, fp=sc.fp, fn=sc.fn, tn=sc.tn, specificity_by_kind=sc.recall_by_kind,
                           n_unanswered=len(exs) - len(kept),
                           n_hard=sum(e.kind == "hard" for e in exs), n_random=sum(e.kind == "random" for e in exs))
            report.interpreted += 1
            if sc.f1 is not None:
                report.f1.append(sc.f1)
            rows.append({**base, "description": ex.description, "targets": ex.targets, "precision": sc.precision,
                         "recall": sc.recall, "f1": sc.f1, "balanced_accuracy": sc.balanced_accuracy,
                         "recall_by_quantile": sc.recall_by_quantile, "n_active": sc.n_active,
                         "n_inactive": sc.n_inactive,
                         "examples": [e.to_json(bool(p) if p is not None else None) for e, p in zip(exs, preds)],
                         "details": details, "error": None})
            feats.append({"feature_id": fid, "description": ex.description, "target_concepts": ex.targets,
                          "interpretability": sc.f1, "explainer": self.explainer.name})
        return rows, exchanges, feats


def _index_of(feature_id: str) -> int:
    digits = feature_id[1:] if feature_id[:1] in ("f", "F") else feature_id
    return int(digits) if digits.isdigit() else -1


def make_interpreter(explainer: str, *, scorer: str | None = None, judge_config: Any = None, cache: Any = None,
                     split: SplitSettings | None = None, lexicon_settings: Any = None,
                     llm_settings: Any = None) -> Interpreter:
    """The one place explainer/scorer names become objects (`radsteer interpret`, tests, benchmarks)."""
    scorer = scorer or explainer
    for what, name in (("--explainer", explainer), ("--scorer", scorer)):
        if name not in EXPLAINERS:
            raise RadsteerError(f"{what} must be one of {', '.join(EXPLAINERS)}, not {name!r}")
    if "llm" in (explainer, scorer):
        if judge_config is None:
            raise RadsteerError("the llm explainer/scorer needs an OpenAI-compatible server: give --judge-model "
                                "(and --judge-base-url) or evaluation.judge in the protocol")
        from evaluation.interpret_llm import LLMChannel, LLMExplainer, LLMScorer, LLMSettings

        llm_settings = llm_settings or LLMSettings()
        channel = LLMChannel(judge_config, cache)  # one client and one budget for the whole run
    exp = (LexiconExplainer(lexicon_settings) if explainer == "lexicon"
           else LLMExplainer(judge_config, cache=cache, settings=llm_settings, channel=channel))
    sco = (LexiconScorer() if scorer == "lexicon"
           else LLMScorer(judge_config, cache=cache, settings=llm_settings, channel=channel))
    return Interpreter(exp, sco, split or SplitSettings())


def _fmt(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4f}"
    return v


def write_interpretations_csv(store: StudyStore, path: str | os.PathLike[str], explainer: str | None = None) -> int:
    """`stats/interpretations.csv`: one row per feature (this explainer's, else the latest stored),
    written beside and renamed into place. Returns the number of rows."""
    df = store.interpretations(explainer)
    stats = store.feature_stats_by_feature()
    if not df.empty:
        df = df.sort_values("created_at").drop_duplicates("feature_id", keep="last").sort_values("feature_id")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(CSV_COLUMNS)
            for r in df.itertuples(index=False):
                freq = stats.get(r.feature_id, {}).get("frequency")
                w.writerow([r.feature_id, r.description, ";".join(r.targets or []), r.explainer, _fmt(r.f1),
                            _fmt(r.precision), _fmt(r.recall), r.n_active, r.n_inactive,
                            _fmt(r.balanced_accuracy), _fmt(freq), r.scorer])

    write_atomic(path, write)
    return len(df)
