"""`radsteer report RUN_DIR [-o FILE] [--pdf]`: the self-contained HTML study report and its tables.

The same step as `radsteer run --steps report` (protocols.runner.report_step), with the same settings:
flags, else the run's frozen protocol, else the defaults of protocols/config.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from protocols.config import add_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="the study's run directory (holds study.sqlite)")
    add_options(parser, "report")


def run(args: argparse.Namespace) -> int:
    from protocols.config import resolve_for_run_dir
    from protocols.runner import RunResult, report_step, stats_step

    config = resolve_for_run_dir("report", args, args.run_dir)
    data, stats = stats_step(args.run_dir, config)
    result = RunResult(args.run_dir)
    report_step(args.run_dir, config, result, data, stats)
    for note in stats.notes:
        print(f"note: {note}")
    print(f"tables: {result.report_path.parent / (result.report_path.stem + '_tables')}")
    if result.pdf_path is not None:
        print(f"pdf: {result.pdf_path}")
    print(f"report: {result.report_path}")
    return 0
