"""`radsteer stats RUN_DIR`: print the study's statistics and write every table under RUN_DIR/stats/."""

from __future__ import annotations

import argparse

from protocols.commands._study_options import add_study_options, load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_options(parser)
    parser.add_argument("--out", default=None, help="where to write the tables (default RUN_DIR/stats)")


def run(args: argparse.Namespace) -> int:
    _, stats = load(args)
    out = args.out or args.run_dir / "stats"
    paths = stats.save(out)
    print(stats.summary())
    print(f"\n{len(paths)} files (CSV + Parquet) written to {out}")
    return 0
