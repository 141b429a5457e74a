"""`radsteer run PROTOCOL [--dry-run]`: sweep → evaluate → stats → report, each step resumable.

`--dry-run` prints what the run would spend — rows to generate, an upper bound on generated tokens
and on judge calls — without loading a model or writing anything; the real run ends by printing
the same three figures as it actually spent them.
"""

from __future__ import annotations

import argparse
import sys

from protocols.config import add_options
from protocols.runner import STEPS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("protocol", help="study protocol (YAML)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the rows, generated tokens and judge calls the run would spend; do nothing")
    parser.add_argument("--steps", default=",".join(STEPS),
                        help=f"comma-separated subset of {','.join(STEPS)} (default: all)")
    add_options(parser, "run")  # every step's settings (protocols/config.py)


def parse_steps(text: str) -> tuple[str, ...]:
    from steering.errors import RadsteerError

    steps = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in steps if s not in STEPS]
    if unknown or not steps:
        raise RadsteerError(f"--steps: unknown step(s) {', '.join(unknown) or '(none given)'}; use {','.join(STEPS)}")
    return steps


def run(args: argparse.Namespace) -> int:
    from protocols.plan import check_study, plan_costs
    from protocols.runner import run_study, study_and_config

    steps = parse_steps(args.steps)
    study, config = study_and_config(args.protocol, "run", args)
    study.check_run_dir()
    from protocols.execution import execution_options

    checked = check_study(study, execution_options(study, config))
    if args.dry_run:
        plan = plan_costs(checked, config)
        print(f"radsteer run --dry-run: {study.protocol.name} → {study.run_dir} (nothing was run or written)")
        for line in plan.lines():
            print(f"  {line}")
        for w in checked.warnings:
            print(f"  note: {w}")
        return 0
    result = run_study(study, config, checked=checked, steps=steps)
    print(f"radsteer run: done — {study.run_dir}")
    for line in result.lines():
        print(f"  {line}")
    if result.pdf_path:
        print(f"pdf: {result.pdf_path}")
    if result.report_path:
        print(f"report: {result.report_path}")
    if result.judge_failure:  # a configured method that produced nothing is a failed run
        print(f"radsteer run: error: {result.judge_failure}", file=sys.stderr)
        return 1
    return 0
