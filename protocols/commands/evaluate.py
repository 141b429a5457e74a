"""`radsteer evaluate RUN_DIR`: entity-diff, LLM-judge and combined verdicts for every steered
report of a study. Resumable: run it again after an interruption and it continues.

Settings: command-line flags, else the run's frozen protocol.yaml (`evaluation:` section), else the
defaults of protocols/config.py — the resolution `radsteer run` uses. The judge's API key is read from
the environment variable named by --judge-api-key-env (or the protocol's `api_key_env`), never from
the command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from protocols.config import add_options
from steering.errors import RadsteerError
from steering.store import DB_FILENAME, has_study


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the study directory (holds study.sqlite)")
    add_options(parser, "evaluate")


def run(args: argparse.Namespace) -> int:
    from protocols.config import resolve_for_run_dir
    from protocols.runner import RunResult, evaluate_step, make_judge

    run_dir = Path(args.run_dir)
    if not has_study(run_dir):
        raise RadsteerError(f"{run_dir} holds no {DB_FILENAME}: give a study directory made by `radsteer sweep`")
    config = resolve_for_run_dir("evaluate", args, run_dir)
    judge = make_judge(config)  # fails now if the key variable is unset
    result = RunResult(run_dir)
    evaluate_step(run_dir, config, result, judge=judge)
    if result.judge_failure:  # the judge was asked and produced no verdicts: say why, fail
        print(f"radsteer evaluate: error: {result.judge_failure}", file=sys.stderr)
        return 1
    return 0
