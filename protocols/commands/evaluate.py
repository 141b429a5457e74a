"""`radsteer evaluate RUN_DIR`: entity-diff, LLM-judge and combined verdicts for every steered
report of a study. Resumable: run it again after an interruption and it continues.

Settings come from the run's frozen protocol.yaml (`evaluation:` section) when there is one;
command-line options override them. The judge's API key is read from the environment variable
named by --judge-api-key-env (or the protocol's `api_key_env`), never from the command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from protocols.commands._judge_options import add_judge_arguments, judge_config_from
from steering.errors import RadsteerError
from steering.store import DB_FILENAME, StudyStore, has_study


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from evaluation.extractors import names as extractor_names

    parser.add_argument("run_dir", metavar="RUN_DIR", help="the study directory (holds study.sqlite)")
    parser.add_argument("--extractor", choices=extractor_names(), default=None,
                        help="entity extraction backend (default: the protocol's, else lexicon)")
    parser.add_argument("--radgraph-cache", default=None, help="directory holding the RadGraph model archives")
    parser.add_argument("--batch-size", type=int, default=64, help="reports per extraction batch (default 64)")
    add_judge_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _protocol_evaluation(run_dir: Path) -> dict[str, Any]:
    """The frozen protocol's `evaluation:` section as a plain dict ({} without a protocol)."""
    path = run_dir / "protocol.yaml"
    if not path.exists():
        return {}
    from protocols.loader import load_protocol

    return load_protocol(path).protocol.evaluation.model_dump()


def run(args: argparse.Namespace) -> int:
    from evaluation.judge import LLMJudge
    from evaluation.pipeline import evaluate_run

    run_dir = Path(args.run_dir)
    if not has_study(run_dir):
        raise RadsteerError(f"{run_dir} holds no {DB_FILENAME}: give a study directory made by `radsteer sweep`")
    if args.batch_size < 1:
        raise RadsteerError(f"--batch-size must be ≥ 1, not {args.batch_size}")
    section = _protocol_evaluation(run_dir)
    extractor = args.extractor or section.get("extractor") or "lexicon"
    options: dict[str, Any] = {}
    cache_dir = args.radgraph_cache or section.get("radgraph_cache")
    if extractor.startswith("radgraph") and cache_dir:
        options["cache_dir"] = cache_dir
    config = judge_config_from(args, section.get("judge"))
    judge = LLMJudge(config) if config is not None else None  # fails now if the key variable is unset

    with StudyStore.open(run_dir) as store:
        summary = evaluate_run(
            store, extractor=extractor, extractor_options=options, judge=judge,
            combine_rule=args.combine_rule, batch_size=args.batch_size,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    print(summary)
    return 0
