"""`radsteer evaluate`: label every steered generation of a study, resumably.

Order of work, each step written to the store as it finishes so an interrupted run resumes:
1. entity extraction of every steered report and its baseline (batched; cached in
   `extractions` keyed by (generation, backend));
2. entity diff + target matching → `entity_diff` verdicts;
3. the LLM judge, if configured → `llm_judge` verdicts, each stored the moment it returns;
4. `combined` verdicts from the two (evaluation/combine.py).

A verdict already stored without an error (and made by the same extractor / judge model and
prompt) is kept; errored verdicts are retried on every run.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evaluation.combine import CombineRule, combine_verdicts
from evaluation.entities import Entity, EntityExtractor
from evaluation.extractors import ExtractorError, get_extractor
from evaluation.judge import JudgeResult, LLMJudge
from evaluation.judge_cache import StoreJudgeCache
from evaluation.judge_prompt import JudgeItem
from evaluation.labels import direction_of, label_of
from steering.errors import RadsteerError
from steering.store import StudyStore

VERDICT_KEY = ["generation_id", "method"]
# (baseline entities, steered entities, targets, direction) -> (on_target, off_target, evidence)
EntityVerdictFn = Callable[[list[Entity], list[Entity], Sequence[str], int], tuple[bool, bool, dict[str, Any]]]


@dataclass
class EvaluationSummary:
    """What one `evaluate_run` did; `str()` is the CLI's closing report."""

    generations: int = 0
    missing_baseline: int = 0
    texts_extracted: int = 0
    written: Counter[str] = field(default_factory=Counter)  # method -> verdicts written this run
    errors: Counter[str] = field(default_factory=Counter)  # method -> errored verdicts written
    kept: Counter[str] = field(default_factory=Counter)  # method -> verdicts already stored, kept
    disagreements: int = 0
    judge_stats: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, str] = field(default_factory=dict)  # method -> one error message

    def merge(self, other: EvaluationSummary) -> None:
        """Add a shard's summary (a Ray worker's) to this one."""
        self.missing_baseline += other.missing_baseline
        self.texts_extracted += other.texts_extracted
        for mine, theirs in ((self.written, other.written), (self.errors, other.errors), (self.kept, other.kept)):
            mine.update(theirs)
        for k, v in other.judge_stats.items():
            self.judge_stats[k] = self.judge_stats.get(k, 0) + v
        for m, msg in other.error_examples.items():
            self.error_examples.setdefault(m, msg)

    def __str__(self) -> str:
        lines = [f"{self.generations} steered generations; {self.texts_extracted} reports newly extracted"]
        if self.missing_baseline:
            lines.append(f"{self.missing_baseline} have no baseline generation (recorded as errors)")
        for m in ("entity_diff", "llm_judge", "combined"):
            if self.written[m] or self.kept[m]:
                lines.append(f"{m}: {self.written[m]} written ({self.errors[m]} errors), {self.kept[m]} kept")
        if self.judge_stats:
            s = self.judge_stats
            lines.append(f"judge: {s.get('requests', 0)} requests ({s.get('retries', 0)} retries), "
                         f"{s.get('cached', 0)} cached, {s.get('prompt_tokens', 0) + s.get('completion_tokens', 0)} tokens")
        lines.append(f"{self.disagreements} combined verdicts where the methods disagree")
        for m, msg in self.error_examples.items():
            lines.append(f"e.g. {m} error: {msg}")
        return "\n".join(lines)


def default_entity_verdict(
    base: list[Entity], steered: list[Entity], targets: Sequence[str], direction: int
) -> tuple[bool, bool, dict[str, Any]]:
    """Entity diff + target matching with the project's lexicon-normalised rules."""
    from evaluation.diff import diff_entities
    from evaluation.targets import match_targets

    match = match_targets(diff_entities(base, steered), targets, direction)
    return bool(match.on_target), bool(match.off_target), dict(match.evidence)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="it", disable=None if enabled else True, leave=False)


def _targets(value: Any) -> list[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        return [value]
    return [str(t) for t in value]


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


class Evaluator:
    """Runs the four steps over one store. See `evaluate_run` for the one-call form."""

    def __init__(
        self,
        store: StudyStore,
        *,
        extractor: EntityExtractor | str = "lexicon",
        extractor_options: Mapping[str, Any] | None = None,
        judge: LLMJudge | None = None,
        combine_rule: CombineRule = "agree",
        batch_size: int = 64,
        progress: bool = True,
        entity_verdict: EntityVerdictFn | None = None,
    ) -> None:
        self.store = store
        try:  # None: this evaluator only combines verdicts (a Ray driver), and loads no backend
            self.extractor = (
                get_extractor(extractor, **dict(extractor_options or {})) if isinstance(extractor, str) else extractor
            )
        except ExtractorError as exc:  # a misspelt name or a broken plugin: one line, not a traceback
            raise RadsteerError(str(exc)) from exc
        self.judge, self.combine_rule = judge, combine_rule
        self.batch_size, self.progress = max(1, batch_size), progress
        self.entity_verdict = entity_verdict or default_entity_verdict
        self.summary = EvaluationSummary()
        self._part = False  # run() on a shard's rows reads only their verdicts and extractions

    # ---- the run ------------------------------------------------------------------------------

    def run(self, rows: Sequence[dict[str, Any]] | None = None, *, combined: bool = True) -> EvaluationSummary:
        """Label `rows` (default: every steered generation of the store, with its baseline).

        A Ray worker passes its shard's rows and `combined=False`: the combined verdicts need both
        methods' verdicts of every row, so the driver makes them once all shards are done."""
        self._part = rows is not None  # a shard: read only its own verdicts and extractions
        if rows is None:
            rows = self.store.generations_with_baselines().to_dict("records")
        rows = list(rows)
        self.summary = EvaluationSummary(generations=len(rows))
        stored = (self.store.rows_in("verdicts", "generation_id", [int(r["generation_id"]) for r in rows])
                  if self._part else self.store.rows("verdicts"))
        existing = {(v["generation_id"], v["method"]): v for v in stored}
        failed = [r for r in rows if _has_baseline(r) and _generation_error(r)]
        with_base = [r for r in rows if _has_baseline(r) and not _generation_error(r)]
        self._missing_baselines([r for r in rows if not _has_baseline(r)], existing)
        self._failed_generations(failed, existing)
        self._entity_diffs(with_base, existing)
        if self.judge is not None:
            self._judge(with_base, existing)
        if combined:
            self._combined(rows)
        return self.summary

    def combine(self, rows: Sequence[dict[str, Any]]) -> EvaluationSummary:
        """Only the combined verdicts of `rows` (after Ray workers made the others)."""
        self._combined(list(rows))
        return self.summary

    def _write(self, verdicts: Sequence[Mapping[str, Any]]) -> None:
        if not verdicts:
            return
        self.store.upsert("verdicts", list(verdicts), key=VERDICT_KEY)
        for v in verdicts:
            self.summary.written[v["method"]] += 1
            if v.get("error"):
                self.summary.errors[v["method"]] += 1
                self.summary.error_examples.setdefault(v["method"], str(v["error"])[:300])

    def _missing_baselines(self, rows: list[dict[str, Any]], existing: dict) -> None:
        self.summary.missing_baseline = len(rows)
        out = []
        for r in rows:
            msg = (f"no baseline generation (feature '', alpha 0) for case {r['case_id']!r} with settings "
                   f"{r['settings_hash']!r}; generate it, then run evaluate again")
            methods = ["entity_diff"] + (["llm_judge"] if self.judge is not None else [])
            for m in methods:
                if (r["generation_id"], m) not in existing or existing[(r["generation_id"], m)].get("error"):
                    out.append(_error_row(r["generation_id"], m, msg))
        self._write(out)

    def _failed_generations(self, rows: list[dict[str, Any]], existing: dict) -> None:
        """A steered row or its baseline that failed (e.g. non-finite logits) has no report to
        compare: every method records the generation's error, never a label."""
        out = []
        for r in rows:
            msg = f"generation failed: {_generation_error(r)}"
            for m in ["entity_diff"] + (["llm_judge"] if self.judge is not None else []):
                if existing.get((r["generation_id"], m), {}).get("error") != msg:
                    out.append(_error_row(r["generation_id"], m, msg))
        self._write(out)

    # ---- entity diff ------------------------------------------------------------------------

    def _entity_done(self, v: Mapping[str, Any] | None) -> bool:
        return bool(v) and not v.get("error") and (v.get("evidence") or {}).get("extractor") == self.extractor.name

    def _entity_diffs(self, rows: list[dict[str, Any]], existing: dict) -> None:
        todo = []
        for r in rows:
            if self._entity_done(existing.get((r["generation_id"], "entity_diff"))):
                self.summary.kept["entity_diff"] += 1
            else:
                todo.append(r)
        if not todo:
            return
        needs = [r for r in todo if _targets(r.get("target_concepts"))]  # the others are errors, unextracted
        ids = {int(r["generation_id"]): _text(r["text"]) for r in needs}
        ids.update({int(r["baseline_generation_id"]): _text(r["baseline_text"]) for r in needs})
        entities = self._extract(ids)
        bar = _progress(len(todo), "entity diff", self.progress)
        batch: list[dict[str, Any]] = []
        for r in todo:
            batch.append(self._entity_row(r, entities))
            if len(batch) >= self.batch_size:
                self._write(batch)
                bar.update(len(batch))
                batch = []
        self._write(batch)
        bar.update(len(batch))
        bar.close()

    def _entity_row(self, r: Mapping[str, Any], entities: Mapping[int, list[Entity]]) -> dict[str, Any]:
        gid, targets = int(r["generation_id"]), _targets(r.get("target_concepts"))
        if not targets:
            return _error_row(gid, "entity_diff", (
                f"feature {r['feature_id']!r} has no target concepts (features.target_concepts is empty), so the "
                f"entity diff cannot tell on- from off-target; add targets to the protocol's features"))
        try:
            on, off, evidence = self.entity_verdict(
                entities[int(r["baseline_generation_id"])], entities[gid], targets, direction_of(float(r["alpha"]))
            )
        except (RadsteerError, ValueError, KeyError) as exc:  # e.g. a target concept the lexicon does not know
            return _error_row(gid, "entity_diff", f"{type(exc).__name__}: {exc}")
        evidence = {"targets": targets, **evidence, "extractor": self.extractor.name}
        return dict(generation_id=gid, method="entity_diff", on_target=on, off_target=off, label=label_of(on, off),
                    evidence=evidence, judge_model=None, prompt_hash=None, disagreement=None, error=None)

    def _extract(self, texts: Mapping[int, str]) -> dict[int, list[Entity]]:
        """Entities of every generation id, from the `extractions` cache or the backend (batched)."""
        backend = self.extractor.name
        out: dict[int, list[Entity]] = {}
        stored = (self.store.rows_in("extractions", "generation_id", list(texts), backend=backend)
                  if self._part else self.store.rows("extractions", backend=backend))
        for row in stored:
            if row["generation_id"] in texts:
                out[row["generation_id"]] = [Entity.from_json(e) for e in row["entities"]]
        missing = [gid for gid in texts if gid not in out]
        bar = _progress(len(missing), f"extract ({backend})", self.progress)
        for i in range(0, len(missing), self.batch_size):
            chunk = missing[i : i + self.batch_size]
            found = self.extractor.extract([texts[g] for g in chunk])
            if len(found) != len(chunk):
                raise RuntimeError(f"extractor {backend!r} returned {len(found)} results for {len(chunk)} reports")
            self.store.insert_ignore("extractions", [
                {"generation_id": g, "backend": backend, "entities": [e.to_json() for e in ents]}
                for g, ents in zip(chunk, found, strict=True)
            ])
            out.update(zip(chunk, found, strict=True))
            self.summary.texts_extracted += len(chunk)
            bar.update(len(chunk))
        bar.close()
        return out

    # ---- LLM judge --------------------------------------------------------------------------

    def _judge(self, rows: list[dict[str, Any]], existing: dict) -> None:
        judge = self.judge
        assert judge is not None
        items = []
        for r in rows:
            item = JudgeItem(
                key=int(r["generation_id"]), baseline=_text(r["baseline_text"]), steered=_text(r["text"]),
                direction=direction_of(float(r["alpha"])), targets=_targets(r.get("target_concepts")),
                description=_text(r.get("description")),
            )
            v = existing.get((item.key, "llm_judge"))
            if (v and not v.get("error") and v.get("judge_model") == judge.config.model
                    and v.get("prompt_hash") == judge.prompt_hash(item)):
                self.summary.kept["llm_judge"] += 1
            else:
                items.append(item)
        if not items:
            return
        bar = _progress(len(items), f"judge ({judge.config.model})", self.progress)

        def store_one(res: JudgeResult) -> None:
            self._write([res.verdict_row(res.key)])
            bar.update(1)

        try:
            judge.judge_many(items, cache=StoreJudgeCache(self.store), on_result=store_one)
        finally:
            bar.close()
            self.summary.judge_stats = judge.stats.as_dict()

    # ---- combined ---------------------------------------------------------------------------

    def _combined(self, rows: list[dict[str, Any]]) -> None:
        current = {(v["generation_id"], v["method"]): v for v in self.store.rows("verdicts")}
        out = []
        for r in rows:
            gid = int(r["generation_id"])
            row = {"generation_id": gid, **combine_verdicts(
                current.get((gid, "entity_diff")), current.get((gid, "llm_judge")), rule=self.combine_rule)}
            self.summary.disagreements += bool(row["disagreement"])
            old = current.get((gid, "combined"))
            if old is not None and all(old.get(k) == row[k] for k in row):
                self.summary.kept["combined"] += 1
                continue
            out.append(row)
        for i in range(0, len(out), 500):
            self._write(out[i : i + 500])


def evaluate_run(store: StudyStore, **options: Any) -> EvaluationSummary:
    """Label every steered generation of `store` (options: see `Evaluator`)."""
    return Evaluator(store, **options).run()


def _has_baseline(r: Mapping[str, Any]) -> bool:
    b = r.get("baseline_generation_id")
    return b is not None and not (isinstance(b, float) and math.isnan(b))


def _generation_error(r: Mapping[str, Any]) -> str | None:
    """Why the steered generation or its baseline failed, else None."""
    for key, who in (("error", "steered report"), ("baseline_error", "baseline report")):
        e = r.get(key)
        if isinstance(e, str) and e:
            return f"{who}: {e}"
    return None


def _error_row(generation_id: int, method: str, error: str) -> dict[str, Any]:
    return dict(generation_id=int(generation_id), method=method, on_target=None, off_target=None, label=None,
                evidence={}, judge_model=None, prompt_hash=None, disagreement=None, error=error)


def pending_counts(store: StudyStore, methods: Iterable[str] = ("entity_diff", "llm_judge", "combined")) -> dict:
    """How many steered generations still lack an error-free verdict of each method."""
    gids = {int(g) for g in store.generations_with_baselines()["generation_id"]}
    done: dict[str, set[int]] = {m: set() for m in methods}
    for v in store.rows("verdicts"):
        if v["method"] in done and not v.get("error"):
            done[v["method"]].add(v["generation_id"])
    return {m: len(gids - done[m]) for m in methods}


class EvaluateJob:
    """A Ray worker's evaluation job (protocols.execution.evaluate_on_ray): its extractor and judge
    are built once, then it labels shards of steered generations (whole cases), writing verdicts
    and extractions through the store's natural keys, so a shard run twice writes nothing twice.
    The judge's API key is read from the worker's own environment."""

    def __init__(self, store_url: str, options: Mapping[str, Any], judge_config: Any = None) -> None:
        self.store = StudyStore(store_url)
        self.judge = LLMJudge(judge_config) if judge_config is not None else None
        self.evaluator = Evaluator(self.store, judge=self.judge, progress=False, **options)

    def run_shard(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        summary = self.evaluator.run(rows, combined=False)
        judge = self.judge
        return {"summary": summary, "rows": len(rows),
                "judge_error": judge.first_error if judge is not None else None,
                "response_format": judge.response_format if judge is not None else None}
