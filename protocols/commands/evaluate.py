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

from steering.errors import RadsteerError
from steering.store import DB_FILENAME, StudyStore

_JUDGE_FLAGS = {  # CLI dest -> JudgeConfig field
    "judge_base_url": "base_url", "judge_model": "model", "judge_api_key_env": "api_key_env",
    "concurrency": "concurrency", "judge_timeout": "timeout_s", "judge_max_retries": "max_retries",
    "judge_max_calls": "max_calls", "judge_max_tokens": "max_tokens",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the study directory (holds study.sqlite)")
    parser.add_argument("--extractor", choices=["lexicon", "radgraph", "radgraph-xl"], default=None,
                        help="entity extraction backend (default: the protocol's, else lexicon)")
    parser.add_argument("--radgraph-cache", default=None, help="directory holding the RadGraph model archives")
    parser.add_argument("--batch-size", type=int, default=64, help="reports per extraction batch (default 64)")
    j = parser.add_argument_group("LLM judge (any OpenAI-compatible server)")
    j.add_argument("--judge-base-url", default=None, help="e.g. http://localhost:8000/v1 for vLLM (default: OpenAI)")
    j.add_argument("--judge-model", default=None, help="judge model name; giving it turns the judge on")
    j.add_argument("--judge-api-key-env", default=None,
                   help="NAME of the environment variable holding the API key (default OPENAI_API_KEY); "
                        "use 'none' for keyless local servers")
    j.add_argument("--concurrency", type=int, default=None, help="parallel judge requests (default 16)")
    j.add_argument("--judge-timeout", type=float, default=None, help="seconds per request (default 60)")
    j.add_argument("--judge-max-retries", type=int, default=None, help="retries on 429/5xx/timeouts (default 4)")
    j.add_argument("--judge-max-calls", type=int, default=None, help="request budget for this run")
    j.add_argument("--judge-max-tokens", type=int, default=None, help="token budget for this run")
    j.add_argument("--no-judge", action="store_true", help="skip the judge even if the protocol configures one")
    parser.add_argument("--combine-rule", choices=["agree", "judge", "any"], default="agree",
                        help="agree: a change counts only when both methods see it (default); "
                             "judge: the judge decides; any: either method suffices")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _protocol_evaluation(run_dir: Path) -> dict[str, Any]:
    """The frozen protocol's `evaluation:` section as a plain dict ({} without a protocol)."""
    path = run_dir / "protocol.yaml"
    if not path.exists():
        return {}
    from protocols.loader import load_protocol

    return load_protocol(path).protocol.evaluation.model_dump()


def judge_config_from(args: argparse.Namespace, section: dict[str, Any] | None):
    """JudgeConfig from the protocol's judge section overridden by CLI flags, or None (no judge)."""
    from evaluation.judge import JudgeConfig

    if getattr(args, "no_judge", False):
        return None
    data: dict[str, Any] = {k: v for k, v in (section or {}).items() if v is not None}
    for dest, name in _JUDGE_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            data[name] = value
    if "model" not in data:
        if data:
            raise RadsteerError("judge options were given without --judge-model: name the judge model")
        return None
    if str(data.get("api_key_env", "")).lower() == "none":
        data["api_key_env"] = None
    return JudgeConfig.from_mapping(data, where="judge")


def run(args: argparse.Namespace) -> int:
    from evaluation.judge import LLMJudge
    from evaluation.pipeline import evaluate_run

    run_dir = Path(args.run_dir)
    if not (run_dir / DB_FILENAME).is_file():
        raise RadsteerError(f"{run_dir} holds no {DB_FILENAME}: give a study directory made by `radsteer sweep`")
    if args.batch_size < 1:
        raise RadsteerError(f"--batch-size must be ≥ 1, not {args.batch_size}")
    section = _protocol_evaluation(run_dir)
    extractor = args.extractor or section.get("extractor") or "lexicon"
    options: dict[str, Any] = {}
    cache_dir = args.radgraph_cache or section.get("radgraph_cache")
    if extractor != "lexicon" and cache_dir:
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
