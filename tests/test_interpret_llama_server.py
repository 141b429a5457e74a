"""The llm explainer and scorer against a real llama.cpp server (llama-cpp-python[server]) serving
the bundled SmolLM2-135M GGUF on 127.0.0.1 (the server fixture of tests/test_judge_llama_server.py).

SmolLM2 is far too small to interpret features; what is checked is the protocol end to end as a
real server answers: format negotiation, every request stored as an exchange, every feature ending
with scores or a recorded error (never a silent score), and a re-run answered from the cache."""

from __future__ import annotations

import importlib.util

import pytest

from evaluation.interpret import make_interpreter
from evaluation.interpret_llm import LLMSettings
from evaluation.judge import JudgeConfig
from evaluation.judge_cache import StoreJudgeCache
from steering.store import StudyStore
from tests.helpers_interpret import add_synthetic_feature

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python[server] is not installed: bash scripts/judge-server.sh --install-only"),
]

from tests.test_judge_llama_server import llama_server  # noqa: E402,F401 - the shared server fixture


def test_explain_and_score_through_llama_cpp(llama_server, tmp_path) -> None:  # noqa: F811
    cfg = JudgeConfig(model="smollm2", base_url=llama_server, api_key_env=None, concurrency=2, timeout_s=300,
                      max_retries=0, max_output_tokens=200)
    with StudyStore.open(tmp_path / "run") as store:
        add_synthetic_feature(store, "f0", "pacemaker", n_top=6, n_quantile=4, n_zero=8)
        interp = make_interpreter("llm", judge_config=cfg, cache=StoreJudgeCache(store),
                                  llm_settings=LLMSettings(score_batch=8))
        report = interp.run(store)
        rows = {r["feature_id"]: r for r in store.rows("feature_interpretations")}
        exchanges = store.rows("interpretation_exchanges")
        assert set(rows) == {"f0"} and report.requests >= 1
        for r in rows.values():  # scored, or an error that says why — never a silent score
            if r["error"] is None:
                assert r["f1"] is not None and r["n_active"] > 0
            else:
                assert r["error"].strip() and r["f1"] is None
        assert exchanges and all(x["response"] is not None or x["error"] for x in exchanges)
        answered = sum(x["response"] is not None for x in exchanges)
        again = make_interpreter("llm", judge_config=cfg, cache=StoreJudgeCache(store),
                                 llm_settings=LLMSettings(score_batch=8)).run(store, force=True)
        assert again.cached >= answered  # every valid answer came back from the cache
