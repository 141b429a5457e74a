"""The LLM-judge command-line options shared by `radsteer evaluate` and `radsteer label`.

The API key itself is never an option: only the NAME of the environment variable holding it.
"""

from __future__ import annotations

import argparse
from typing import Any

from steering.errors import RadsteerError

_JUDGE_FLAGS = {  # CLI dest -> JudgeConfig field
    "judge_base_url": "base_url", "judge_model": "model", "judge_api_key_env": "api_key_env",
    "concurrency": "concurrency", "judge_timeout": "timeout_s", "judge_max_retries": "max_retries",
    "judge_max_calls": "max_calls", "judge_max_tokens": "max_tokens",
}


def add_judge_arguments(parser: argparse.ArgumentParser, *, labelling: bool = True,
                        title: str = "LLM judge (any OpenAI-compatible server)") -> None:
    """The judge's client options; `labelling` adds --no-judge and --combine-rule (verdict commands)."""
    j = parser.add_argument_group(title)
    j.add_argument("--judge-base-url", default=None, help="e.g. http://localhost:8000/v1 for vLLM (default: OpenAI)")
    j.add_argument("--judge-model", default=None, help="judge model name; giving it turns the judge on")
    j.add_argument("--judge-api-key-env", default=None,
                   help="NAME of the environment variable holding the API key (default OPENAI_API_KEY); "
                        "'none' for keyless local servers")
    j.add_argument("--concurrency", type=int, default=None, help="parallel judge requests (default 16)")
    j.add_argument("--judge-timeout", type=float, default=None, help="seconds per request (default 60)")
    j.add_argument("--judge-max-retries", type=int, default=None, help="retries on 429/5xx/timeouts (default 4)")
    j.add_argument("--judge-max-calls", type=int, default=None, help="request budget for this run")
    j.add_argument("--judge-max-tokens", type=int, default=None, help="token budget for this run")
    if not labelling:
        return
    j.add_argument("--no-judge", action="store_true", help="skip the judge even if the protocol configures one")
    j.add_argument("--combine-rule", choices=["agree", "judge", "any"], default="agree",
                   help="combined verdict — agree: a change counts only when both methods see it (default); "
                        "judge: the judge decides; any: either method suffices")


def judge_config_from(args: argparse.Namespace, section: dict[str, Any] | None = None):
    """JudgeConfig from a protocol's judge section overridden by CLI flags, or None (no judge)."""
    from evaluation.judge import JudgeConfig

    if getattr(args, "no_judge", False):
        return None
    data: dict[str, Any] = dict(section or {})  # None is meaningful there (api_key_env: null = keyless)
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
