"""`radsteer report RUN_DIR [-o FILE]`: the self-contained HTML study report and its tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from protocols.commands._study_options import add_study_options, load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_options(parser)
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="HTML file to write (default RUN_DIR/report.html); tables go to <name>_tables/ beside it")
    parser.add_argument("--title", default=None, help="report title (default: the run directory's name)")
    parser.add_argument("--examples", type=int, default=8, help="baseline/steered pairs shown (default 8)")


def run(args: argparse.Namespace) -> int:
    from evaluation.report import build_report

    data, stats = load(args)
    result = build_report(args.run_dir, args.output, stats=stats, data=data, n_examples=args.examples,
                          title=args.title)
    for note in stats.notes:
        print(f"note: {note}")
    print(f"tables: {result.tables_dir}")
    print(f"report: {result.html_path}")
    return 0
