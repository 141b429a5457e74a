"""`radsteer run`'s engine room: sweep → evaluate → stats → report, each step resumable.

Every check that can fail on a protocol runs first (`protocols.plan.check_study`), then the
judge's key is read — so a bad protocol or a missing key stops the run before a model is loaded or
a run directory exists. Each step then picks up where an interrupted run left it: the sweep skips
stored rows, evaluation keeps stored verdicts (the judge's answers are cached), statistics and the
report are recomputed from the store. A step whose package is not installed is skipped with a
message, never a crash.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.plan import CheckedStudy, check_study
from protocols.study import Study
from steering.errors import RadsteerError
from steering.store import StudyStore, has_study

STEPS = ("sweep", "evaluate", "stats", "report")


@dataclass
class RunResult:
    """What one run did, in the dry run's terms (rows generated, tokens, judge calls)."""

    run_dir: Path
    rows_generated: int = 0
    rows_already_stored: int = 0
    tokens_generated: int = 0
    judge_requests: int = 0
    sweep_summary: str = ""
    evaluation: Any = None
    stats: Any = None
    report_path: Path | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # step -> why

    def lines(self) -> list[str]:
        out = [
            f"rows: {self.rows_generated} generated ({self.rows_already_stored} were already stored)",
            f"generated tokens: {self.tokens_generated}",
            f"judge calls: {self.judge_requests}",
        ]
        out += [f"skipped {step}: {why}" for step, why in self.skipped.items()]
        return out


def judge_from_protocol(study: Study):
    """An LLMJudge for the protocol's `evaluation.judge` section, or None; reads the key now."""
    section = study.protocol.evaluation.judge
    if section is None:
        return None
    from evaluation.judge import JudgeConfig, LLMJudge

    data = {k: v for k, v in section.model_dump().items() if v is not None or k == "api_key_env"}
    try:
        judge = LLMJudge(JudgeConfig.from_mapping(data, where="evaluation.judge"))
        judge.config.read_api_key()
    except RadsteerError as exc:
        raise RadsteerError(f"{study.loaded.where('evaluation', 'judge')}: {exc}") from None
    return judge


def _missing_part(exc: ModuleNotFoundError) -> str | None:
    """The radsteer module a step lacks (a step not installed yet), else None (a real error)."""
    name = exc.name or ""
    return name if name.split(".")[0] in ("evaluation", "annotation_ui") else None


def run_study(
    study: Study,
    *,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    steps: tuple[str, ...] = STEPS,
    checked: CheckedStudy | None = None,
) -> RunResult:
    checked = checked or check_study(study)
    study.check_run_dir()
    result = RunResult(run_dir=study.run_dir)
    judge = None
    if "evaluate" in steps:
        try:
            judge = judge_from_protocol(study)
        except ModuleNotFoundError as exc:
            if not _missing_part(exc):
                raise
    if "sweep" in steps:
        _sweep(study, checked, result, progress=progress, echo=echo)
    elif not has_study(study.run_dir):
        raise RadsteerError(f"{study.run_dir} holds no study yet: run the sweep step first")
    if "evaluate" in steps:
        _step(result, "evaluate", echo, lambda: _evaluate(study, judge, result, progress=progress, echo=echo))
    data = None
    if "stats" in steps or "report" in steps:
        data = _step(result, "stats", echo, lambda: _stats(study, result, echo=echo, save="stats" in steps))
    if "report" in steps and data is not None:
        _step(result, "report", echo, lambda: _report(study, data, result, echo=echo))
    return result


def _step(result: RunResult, name: str, echo: Callable[[str], None], fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ModuleNotFoundError as exc:
        part = _missing_part(exc)
        if part is None:
            raise
        why = f"{part} is not available in this installation"
        result.skipped[name] = why
        echo(f"radsteer run: skipping {name}: {why}")
        return None


def _sweep(study: Study, checked: CheckedStudy, result: RunResult, *, progress: bool, echo) -> None:
    from protocols.commands.vectors import build

    adapter = study.load_adapter()
    if study.protocol.features.source == "concept" and study.concept_vectors_state() != "current":
        echo(f"radsteer run: building concept vectors → {study.bank_path()}")
        build(study, adapter=adapter, quiet=False)
    bank = study.load_bank()
    engine = study.engine(adapter, bank)  # width and layer checked again on the real model
    rows = study.planned_rows(bank)
    with study.open_store() as store:
        study.record(store, engine, bank)
        settings_hash = engine.settings_hash()
        before = store.generation_keys(settings_hash)
        report = engine.sweep(store, study.cases, rows, progress=progress)
        planned = {r.key() for r in rows} - before
        result.tokens_generated = sum(
            int(g["n_tokens"]) for g in store.rows("generations", settings_hash=settings_hash)
            if (g["case_id"], g["feature_id"], float(g["alpha"])) in planned
        )
    result.rows_generated, result.rows_already_stored = report.generated, report.already_stored
    result.sweep_summary = report.summary()
    echo(f"radsteer run: sweep: {report.summary()}")
    del engine, adapter
    gc.collect()  # the model is not needed by the later steps


def _evaluate(study: Study, judge, result: RunResult, *, progress: bool, echo) -> None:
    from evaluation.pipeline import evaluate_run

    ev = study.protocol.evaluation
    options: dict[str, Any] = {}
    if ev.extractor.startswith("radgraph") and ev.radgraph_cache:
        options["cache_dir"] = str(study.loaded.resolve(ev.radgraph_cache))
    with StudyStore.open(study.run_dir) as store:
        summary = evaluate_run(store, extractor=ev.extractor, extractor_options=options, judge=judge,
                               progress=progress)
    result.evaluation = summary
    result.judge_requests = int(summary.judge_stats.get("requests", 0)) if summary.judge_stats else 0
    echo("radsteer run: evaluate: " + str(summary).replace("\n", "\n  "))


def _stats(study: Study, result: RunResult, *, echo, save: bool):
    from evaluation.stats import compute_statistics
    from evaluation.study_data import load_study

    rep = study.protocol.report
    data = load_study(study.run_dir)
    stats = compute_statistics(data, correction=rep.multiplicity, seed=study.protocol.seed)
    result.stats = stats
    if save:
        stats.save(study.run_dir / "stats")
        echo(f"radsteer run: stats: tables in {study.run_dir / 'stats'}")
    return data


def _report(study: Study, data, result: RunResult, *, echo) -> None:
    from evaluation.report import build_report

    out = build_report(study.run_dir, stats=result.stats, data=data, n_examples=study.protocol.report.examples,
                       title=study.protocol.report.title)
    result.report_path = Path(out.html_path)
    echo(f"radsteer run: report: {result.report_path}")
