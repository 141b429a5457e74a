"""The steps of a study — sweep, evaluate, stats, report — as functions of a resolved `Config`.

`radsteer run` chains them (`run_study`); `radsteer sweep`, `evaluate`, `stats` and `report` each call
one of them with a `Config` resolved the same way (`protocols.config`), so a step started either way
does exactly the same thing (tests/test_one_path.py compares the outputs byte for byte).

In `run_study` every check that can fail on a protocol runs first (`protocols.plan.check_study`),
then the judge's key is read — so a bad protocol or a missing key stops the run before a model is
loaded or a run directory exists. Each step picks up where an interrupted run left it: the sweep
skips stored rows, evaluation keeps stored verdicts (the judge's answers are cached), statistics
and the report are recomputed from the store.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.config import Config, resolve
from protocols.plan import CheckedStudy, check_study
from protocols.study import Study
from steering.errors import RadsteerError
from steering.store import StudyStore, has_study

STEPS = ("sweep", "evaluate", "stats", "report")
Echo = Callable[[str], None]


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
    pdf_path: Path | None = None
    judge_failure: str | None = None  # the judge was asked and produced no verdicts: why

    def lines(self) -> list[str]:
        out = [
            f"rows: {self.rows_generated} generated ({self.rows_already_stored} were already stored)",
            f"generated tokens: {self.tokens_generated}",
            f"judge calls: {self.judge_requests}",
        ]
        return out


def study_and_config(protocol_path: str | Path, command: str, args: argparse.Namespace | None = None,
                     **flags: Any) -> tuple[Study, Config]:
    """Load a protocol and resolve `command`'s settings against it (flags by key in `flags`)."""
    from protocols.loader import load_protocol

    loaded = load_protocol(protocol_path)
    config = resolve(command, args, protocol=loaded.protocol, protocol_dir=loaded.base_dir, flags=flags or None)
    study = Study(loaded, Path(config.study.runs_dir) / loaded.protocol.name, limit=config.get("study.limit"))
    return study, config


def make_judge(config: Config, where: str | None = None):
    """The LLM judge the settings ask for, or None; reads the API key now (a missing key fails early)."""
    try:
        judge_config = config.judge_config()
        if judge_config is None:
            return None
        from evaluation.judge import LLMJudge

        judge = LLMJudge(judge_config)
        judge.config.read_api_key()
    except RadsteerError as exc:
        raise RadsteerError(f"{where}: {exc}" if where else str(exc)) from None
    return judge


def _progress(config: Config) -> bool:
    return not config.ui.no_progress and sys.stderr.isatty()


def run_study(
    study: Study,
    config: Config | None = None,
    *,
    echo: Echo = print,
    steps: tuple[str, ...] = STEPS,
    checked: CheckedStudy | None = None,
) -> RunResult:
    """Run `steps` of `study` with `config` (default: the protocol's settings, no flags)."""
    config = config or resolve("run", protocol=study.protocol, protocol_dir=study.loaded.base_dir)
    if checked is None:
        from protocols.execution import execution_options

        checked = check_study(study, execution_options(study, config))
    study.check_run_dir()
    result = RunResult(run_dir=study.run_dir)
    judge = None
    if "evaluate" in steps:
        judge = make_judge(config, study.loaded.where("evaluation", "judge"))
    from dataclasses import replace

    from protocols.execution import execution_options
    from steering.distributed import check_store_for_ray, ray_session
    from steering.store import resolve_url

    execution = execution_options(study, config)
    if not {"sweep", "evaluate"} & set(steps):
        execution = replace(execution, executor="local")
    if execution.executor == "ray":  # before joining a cluster: its workers could not write a SQLite file
        check_store_for_ray(resolve_url(study.run_dir), execution)
    with ray_session(execution):  # on Ray: one Ray for the sweep's and the evaluation's workers
        if "sweep" in steps:
            sweep_step(study, config, result, checked=checked, echo=echo, prefix="radsteer run: ")
        elif not has_study(study.run_dir):
            raise RadsteerError(f"{study.run_dir} holds no study yet: run the sweep step first")
        if "evaluate" in steps:
            evaluate_step(study.run_dir, config, result, judge=judge, echo=echo, prefix="radsteer run: ")
    computed = None
    if "stats" in steps or "report" in steps:
        out = study.run_dir / "stats" if "stats" in steps else None
        computed = stats_step(study.run_dir, config, result, save_to=out)
        if out is not None:
            echo(f"radsteer run: stats: tables in {out}")
    if "report" in steps and computed is not None:
        report_step(study.run_dir, config, result, *computed)
        if result.report_path is not None:
            echo(f"radsteer run: report: {result.report_path}")
    return result


def sweep_step(study: Study, config: Config, result: RunResult, *, checked: CheckedStudy | None = None,
               echo: Echo = print, prefix: str = "") -> None:
    """Build missing concept vectors, then generate every planned row not yet stored."""
    from protocols.execution import execution_options, sweep_on_ray

    progress = _progress(config)
    options = execution_options(study, config)
    _ = study.cases  # read and check the cases before loading any model
    adapter = None
    if study.protocol.features.source == "concept" and study.concept_vectors_state() != "current":
        adapter = study.load_adapter()
        echo(f"{prefix}building concept vectors → {study.bank_path()}")
        study.ensure_concept_vectors(adapter=adapter, echo=echo)
    if options.executor == "ray":  # the workers load the model; this process only dispatches
        del adapter
        gc.collect()
        ray_report = sweep_on_ray(study, options, progress=progress)
        result.rows_generated, result.rows_already_stored = ray_report.generated, ray_report.already_stored
        result.tokens_generated = ray_report.tokens
        result.sweep_summary = ray_report.summary()
        echo(f"{prefix}sweep: {ray_report.summary()}")
        return
    adapter = adapter or study.load_adapter()
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
    echo(f"{prefix}sweep: {report.summary()}")
    del engine, adapter
    gc.collect()  # the model is not needed by the later steps


def evaluate_step(run_dir: Path, config: Config, result: RunResult, *, judge=None, echo: Echo = print,
                  prefix: str = "") -> None:
    """Entity-diff, judge and combined verdicts for every steered row (stored verdicts are kept)."""
    from evaluation.pipeline import evaluate_run

    ev = config.evaluate
    options: dict[str, Any] = {}
    if ev.extractor.startswith("radgraph") and ev.radgraph_cache:
        options["cache_dir"] = ev.radgraph_cache
    execution = _evaluate_execution(run_dir, config)
    if execution.executor == "ray":  # shards of whole cases on Ray workers (protocols.execution)
        from protocols.execution import evaluate_on_ray
        from steering.store import resolve_url

        summary, restarts = evaluate_on_ray(
            resolve_url(run_dir), execution, extractor=ev.extractor, extractor_options=options, judge=judge,
            combine_rule=ev.combine_rule, batch_size=config.get("evaluate.batch_size", 64),
            progress=_progress(config))
        echo(f"{prefix}evaluate: on {execution.workers} Ray workers"
             + (f" ({restarts} worker restarts)" if restarts else ""))
    else:
        with StudyStore.open(run_dir) as store:
            summary = evaluate_run(store, extractor=ev.extractor, extractor_options=options, judge=judge,
                                   combine_rule=ev.combine_rule, batch_size=config.get("evaluate.batch_size", 64),
                                   progress=_progress(config))
    result.evaluation = summary
    result.judge_requests = int(summary.judge_stats.get("requests", 0)) if summary.judge_stats else 0
    echo(f"{prefix}evaluate: " + str(summary).replace("\n", "\n  ") if prefix else str(summary))
    if judge is not None:  # verdicts and errors, always; no verdict at all fails the command
        echo(f"{prefix}{judge.outcome_line()}")
        result.judge_failure = judge.failure()


def _evaluate_execution(run_dir: Path, config: Config):
    """The run's execution options for evaluate: the frozen protocol's `execution:` section under the
    flags. Extractors and the judge run on the CPU, so evaluation workers ask Ray for no GPU."""
    from dataclasses import replace

    from protocols.config import run_dir_protocol
    from protocols.execution import execution_options

    protocol, _ = run_dir_protocol(run_dir)
    return replace(execution_options(None, config, protocol=protocol), gpus_per_worker=0.0)


def stats_step(run_dir: Path, config: Config, result: RunResult | None = None, *, save_to: Path | None = None):
    """(data, statistics) of the study; tables written under `save_to` when given."""
    from evaluation.stats import compute_statistics
    from evaluation.study_data import load_study

    s = config.stats
    try:
        data = load_study(run_dir)
    except FileNotFoundError as exc:
        raise RadsteerError(str(exc)) from None
    stats = compute_statistics(data, method=s.method, null_rate=s.null_rate, correction=s.correction,
                               level=s.level, n_boot=s.bootstrap, seed=s.seed)
    if result is not None:
        result.stats = stats
    if save_to is not None:
        stats.save(save_to)
    return data, stats


def report_step(run_dir: Path, config: Config, result: RunResult, data, stats) -> None:
    """The HTML report (and its tables; with report.pdf a PDF beside it)."""
    from evaluation.report import build_report

    r = config.report
    out = build_report(run_dir, config.get("report.output"), stats=stats, data=data, n_examples=r.examples,
                       title=r.title, deviations=analysis_deviations(config), pdf=r.pdf)
    result.report_path = Path(out.html_path)
    result.pdf_path = out.pdf_path


def analysis_deviations(config: Config) -> list[str]:
    """The command-line departures from the protocol that shape the statistics and the report."""
    return [d for d in config.deviations() if d.startswith(("stats.", "report."))]
