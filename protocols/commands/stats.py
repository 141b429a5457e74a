"""`radsteer stats RUN_DIR`: print the study's statistics and write every table under RUN_DIR/stats/.

The same step as `radsteer run --steps stats` (protocols.runner.stats_step), with the same settings:
flags, else the run's frozen protocol, else the defaults of protocols/config.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from protocols.config import add_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="the study's run directory (holds study.sqlite)")
    add_options(parser, "stats")


def run(args: argparse.Namespace) -> int:
    from protocols.config import resolve_for_run_dir
    from protocols.runner import stats_step

    config = resolve_for_run_dir("stats", args, args.run_dir)
    out = Path(config.stats.out) if config.stats.out else args.run_dir / "stats"
    _, stats = stats_step(args.run_dir, config, save_to=out)
    print(stats.summary())
    print(f"\n{len(stats.to_frames()) * 2} files (CSV + Parquet) written to {out}")
    return 0
