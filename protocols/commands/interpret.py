"""`radsteer interpret PROTOCOL`: explain every mined feature and score each explanation by detection.

Run after `radsteer mine` (same protocol and --runs-dir). The `lexicon` explainer/scorer runs
offline; `llm` uses any OpenAI-compatible server through the judge's client (key from the
environment variable the protocol's `evaluation.judge.api_key_env` or --judge-api-key-env names).
Writes `feature_interpretations`, `interpretation_exchanges`, the features' descriptions and F1,
and `runs/<name>/stats/interpretations.csv`. Resumable; `--dry-run` says what it would do.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from protocols.config import add_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("protocol", help="study protocol (YAML) whose run holds the mined contexts")
    parser.add_argument("--explainer", choices=["llm", "lexicon"], default="lexicon",
                        help="who writes the descriptions (default lexicon: offline)")
    parser.add_argument("--scorer", choices=["llm", "lexicon"], default=None,
                        help="who predicts held-out activations (default: the explainer's kind)")
    parser.add_argument("--features", choices=["all", "study"], default="all",
                        help="every mined feature (default) or only the protocol's features")
    parser.add_argument("--top-shown", type=int, default=10, help="top contexts shown to the explainer (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shown / held-out split (default 0)")
    parser.add_argument("--score-batch", type=int, default=10, help="held-out examples per scoring request (llm)")
    parser.add_argument("--force", action="store_true", help="interpret again features already interpreted")
    parser.add_argument("--dry-run", action="store_true", help="count features and requests; write nothing")
    # --runs-dir, --no-progress, --store-url and the judge client's --judge-* options (the LLM explainer/scorer's
    # server): flag, else the protocol, else the default (protocols/config.py)
    add_options(parser, "interpret")


def run(args: argparse.Namespace) -> int:
    from evaluation.interpret import make_interpreter, write_interpretations_csv
    from evaluation.interpret_examples import SplitSettings, split_evidence
    from evaluation.judge_cache import StoreJudgeCache
    from protocols.runner import study_and_config
    from steering.errors import RadsteerError
    from steering.store.files import write_atomic

    if args.top_shown < 1:
        raise RadsteerError(f"--top-shown must be at least 1, not {args.top_shown}")
    if args.score_batch < 1:
        raise RadsteerError(f"--score-batch must be at least 1, not {args.score_batch}")
    study, settings = study_and_config(args.protocol, "interpret", args)
    study.check_run_dir()
    if not (study.run_dir / "study.sqlite").exists():
        raise RadsteerError(f"{study.run_dir} holds no study: run `radsteer mine {args.protocol} --corpus "
                            f"REPORTS.jsonl --runs-dir {settings.study.runs_dir}` first")
    scorer = args.scorer or args.explainer
    config = settings.judge_config() if "llm" in (args.explainer, scorer) else None
    split = SplitSettings(n_top_shown=args.top_shown, seed=args.seed)
    llm_settings = None
    if config is not None:
        from evaluation.interpret_llm import LLMSettings

        llm_settings = LLMSettings(score_batch=args.score_batch)
    with study.open_store() as store:
        mined = store.mined_feature_ids()
        if not mined:
            raise RadsteerError(f"{study.run_dir} has no mined contexts: run `radsteer mine {args.protocol} "
                                f"--corpus REPORTS.jsonl` first")
        protocol_ids = {r["feature_id"] for r in store.rows("features")}
        described = {r["feature_id"] for r in store.rows("features") if r["description"] and not r.get("explainer")}
        ids = mined if args.features == "all" else sorted(protocol_ids & set(mined))
        if args.dry_run:
            stats = store.feature_stats_by_feature()
            done = store.interpretation_hashes(args.explainer)
            ctx = store.feature_contexts_by_feature(ids)
            n_req = 0
            for f in ids:
                ev = split_evidence(f, ctx[f], stats.get(f), split)
                if ev.shown_active:
                    n_ex = len(ev.heldout_active) + len(ev.heldout_inactive_pool)
                    n_req += (args.explainer == "llm") + (math.ceil(n_ex / args.score_batch) if scorer == "llm" else 0)
            print(f"radsteer interpret: would interpret {len(ids)} features ({len(done)} stored before by "
                  f"{args.explainer}) with explainer {args.explainer}, scorer {scorer}; "
                  f"at most {n_req} LLM requests before the cache (dry run: nothing written)")
            return 0
        from steering.store.files import claim_dir, only_files_like

        stats_dir = claim_dir(study.run_dir / "stats", "stats", what="statistics tables",  # refuse early
                              recognise=lambda p: only_files_like(p, ".csv", ".parquet"))
        meta = None
        if study.protocol.features.source == "concept":  # concept ids are names: their rows come from the bank
            bank = study.load_bank()
            meta = {f: ("concept", bank.index(f)) for f in ids}
        cache = StoreJudgeCache(store) if config is not None else None
        interp = make_interpreter(args.explainer, scorer=scorer, judge_config=config, cache=cache, split=split,
                                  llm_settings=llm_settings)
        bar = None
        if not settings.ui.no_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(ids), unit="feature", desc="interpreting", dynamic_ncols=True)

        def progress(done: int, total: int) -> None:
            if bar is not None:
                bar.total = total
                bar.n = done
                bar.refresh()

        try:
            report = interp.run(store, ids, feature_meta=meta, keep_description=described, force=args.force,
                                progress=progress)
        finally:
            if bar is not None:
                bar.close()
        csv_path = stats_dir / "interpretations.csv"
        n = write_interpretations_csv(store, csv_path, args.explainer)
    write_atomic(study.run_dir / "interpret.json", json.dumps({
        "explainer": args.explainer, "scorer": scorer, "settings_hash": interp.settings_hash(),
        "explainer_settings": interp.explainer.describe(), "scorer_settings": interp.scorer.describe(),
        "split": split.describe(), "features": len(ids),
        "judge": None if config is None else {"model": config.model, "base_url": config.base_url},
    }, indent=2) + "\n")
    print(f"radsteer interpret: {report.summary()}")
    print(f"radsteer interpret: {n} rows in {csv_path}")
    judge = interp.llm_judge
    if judge is not None:  # like evaluate, label and run: counts always, non-zero when nothing came back
        print(f"radsteer interpret: {judge.outcome_line()}", file=sys.stderr)
        if judge.failure():
            print(f"radsteer interpret: error: {judge.failure()}", file=sys.stderr)
            return 1
    return 0
