"""`radsteer sweep PROTOCOL`: build missing concept vectors, then generate every feature × α × case row;
resumable. The same step as `radsteer run --steps sweep` (protocols.runner.sweep_step)."""

from __future__ import annotations

import argparse

from protocols.config import add_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("protocol", help="study protocol (YAML)")
    add_options(parser, "sweep")


def run(args: argparse.Namespace) -> int:
    from protocols.runner import RunResult, study_and_config, sweep_step

    study, config = study_and_config(args.protocol, "sweep", args)
    study.check_run_dir()
    sweep_step(study, config, RunResult(study.run_dir), prefix="radsteer ")
    print(f"radsteer sweep: study stored in {study.run_dir}")
    return 0
