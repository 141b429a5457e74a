"""`radsteer label PAIRS.jsonl -o OUT.jsonl` — label baseline/steered pairs produced anywhere.

Every input row is validated before anything is extracted, and the output is written to a
temporary file and renamed, so a bad row or an interrupted run leaves no partial output.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections import Counter
from pathlib import Path

from protocols.commands._judge_options import add_judge_arguments, judge_config_from
from steering.errors import RadsteerError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from evaluation.extractors import names as extractor_names

    parser.add_argument("pairs", type=Path, help="JSONL: id, baseline, steered, target, direction[, description]")
    parser.add_argument("-o", "--output", type=Path, required=True, help="JSONL to write (replaced atomically)")
    parser.add_argument("--extractor", choices=extractor_names(), default="lexicon",
                        help="entity extraction backend for the entity diff (default: lexicon, offline)")
    parser.add_argument("--radgraph-cache", default=None,
                        help="directory holding the RadGraph model archives (radgraph / radgraph-xl only)")
    parser.add_argument("--batch-size", type=int, default=256, help="reports extracted per batch")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    add_judge_arguments(parser)  # --judge-model etc.: an LLM judge beside the entity diff


def run(args: argparse.Namespace) -> int:
    from evaluation.extractors import get_extractor
    from evaluation.labelling import label_pairs, read_pairs, write_jsonl_atomic

    if args.batch_size < 1:
        raise RadsteerError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.output.resolve() == args.pairs.resolve():
        raise RadsteerError(f"--output {args.output} would overwrite the input; choose another file")
    if not args.output.parent.is_dir():
        raise RadsteerError(f"output folder {args.output.parent} does not exist; create it first")
    pairs = read_pairs(args.pairs)
    options = {"cache_dir": args.radgraph_cache} if args.extractor.startswith("radgraph") and args.radgraph_cache else {}
    extractor = get_extractor(args.extractor, **options)
    progress = not args.quiet and len(pairs) >= 100
    judge = combine = None
    config = judge_config_from(args)
    if config is not None:  # both verdicts kept per row; the top-level one is the combined verdict
        from evaluation.combine import combine_verdicts
        from evaluation.judge import LLMJudge

        judge = LLMJudge(config).pair_judge()
        combine = functools.partial(combine_verdicts, rule=args.combine_rule)
    rows = label_pairs(pairs, extractor, judge=judge, combine=combine, batch_size=args.batch_size,
                       progress=progress)
    write_jsonl_atomic(args.output, rows)
    if not args.quiet:
        counts = Counter(r["label"] for r in rows)
        tally = ", ".join(f"{k}: {counts.get(k, 0)}" for k in ("on", "off", "both", "none"))
        print(f"labelled {len(rows)} pair(s) with {args.extractor} -> {args.output} ({tally})", file=sys.stderr)
    return 0
