"""Options shared by `radsteer stats` and `radsteer report`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from protocols.errors import RadsteerError


def add_study_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="the study's run directory (holds study.sqlite)")
    parser.add_argument("--method", choices=["entity_diff", "llm_judge", "combined", "radiologist_majority"],
                        default=None, help="primary labelling method (default: combined, else entity_diff, ...)")
    parser.add_argument("--null-rate", type=float, default=0.05,
                        help="p0 of the per-feature binomial tests (default 0.05)")
    parser.add_argument("--correction", choices=["holm", "fdr_bh"], default="holm",
                        help="multiplicity correction that decides significance (default holm)")
    parser.add_argument("--level", type=float, default=0.05, help="significance level (default 0.05)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for Spearman's ρ")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")


def load(args: argparse.Namespace) -> tuple[Any, Any]:
    """The study's data and statistics, with user errors turned into RadsteerError."""
    from evaluation.stats import compute_statistics
    from evaluation.study_data import load_study

    if not 0 < args.null_rate < 1:
        raise RadsteerError(f"--null-rate must lie strictly between 0 and 1, not {args.null_rate}")
    if not 0 < args.level < 1:
        raise RadsteerError(f"--level must lie strictly between 0 and 1, not {args.level}")
    if args.bootstrap < 1:
        raise RadsteerError(f"--bootstrap must be a positive number of resamples, not {args.bootstrap}")
    try:
        data = load_study(args.run_dir)
    except FileNotFoundError as exc:
        raise RadsteerError(str(exc)) from None
    stats = compute_statistics(data, method=args.method, null_rate=args.null_rate, correction=args.correction,
                               level=args.level, n_boot=args.bootstrap, seed=args.seed)
    return data, stats
