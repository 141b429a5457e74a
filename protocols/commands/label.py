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

from protocols.config import add_options
from steering.errors import RadsteerError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pairs", type=Path, help="JSONL: id, baseline, steered, target, direction[, description]")
    parser.add_argument("-o", "--output", type=Path, required=True, help="JSONL to write (replaced atomically)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    add_options(parser, "label")  # --extractor, --batch-size, --judge-model etc. (protocols/config.py)


def run(args: argparse.Namespace) -> int:
    from evaluation.extractors import ExtractorError, get_extractor
    from evaluation.labelling import label_pairs, read_pairs, write_jsonl_atomic
    from protocols.config import resolve

    cfg = resolve("label", args)  # no protocol: flags, else defaults
    extractor_name = cfg.evaluate.extractor
    if args.output.resolve() == args.pairs.resolve():
        raise RadsteerError(f"--output {args.output} would overwrite the input; choose another file")
    if not args.output.parent.is_dir():
        raise RadsteerError(f"output folder {args.output.parent} does not exist; create it first")
    pairs = read_pairs(args.pairs)
    cache = cfg.evaluate.radgraph_cache
    options = {"cache_dir": cache} if extractor_name.startswith("radgraph") and cache else {}
    try:
        extractor = get_extractor(extractor_name, **options)
    except ExtractorError as exc:  # a broken plugin: one line, not a traceback
        raise RadsteerError(str(exc)) from exc
    progress = not args.quiet and len(pairs) >= 100
    judge = combine = llm = None
    config = cfg.judge_config()
    if config is not None:  # both verdicts kept per row; the top-level one is the combined verdict
        from evaluation.combine import combine_verdicts
        from evaluation.judge import LLMJudge

        llm = LLMJudge(config)
        judge = llm.pair_judge()
        combine = functools.partial(combine_verdicts, rule=cfg.evaluate.combine_rule)
    rows = label_pairs(pairs, extractor, judge=judge, combine=combine, batch_size=cfg.label.batch_size,
                       progress=progress)
    write_jsonl_atomic(args.output, rows)
    if not args.quiet:
        counts = Counter(r["label"] for r in rows)
        tally = ", ".join(f"{k}: {counts.get(k, 0)}" for k in ("on", "off", "both", "none"))
        print(f"labelled {len(rows)} pair(s) with {extractor_name} -> {args.output} ({tally})", file=sys.stderr)
    if llm is not None:  # the judge's verdicts and errors, always; none at all fails the command
        print(llm.outcome_line(), file=sys.stderr)
        failure = llm.failure()
        if failure:
            print(f"radsteer label: error: {failure}", file=sys.stderr)
            return 1
    return 0
