"""The LLM judge against a real OpenAI-protocol HTTP server on 127.0.0.1 (tests/helpers_judge.py)."""

from __future__ import annotations

import logging

import pytest

from evaluation.judge import BUDGET_EXHAUSTED, JudgeConfig, LLMJudge
from evaluation.judge_cache import MemoryJudgeCache, StoreJudgeCache
from evaluation.judge_prompt import InvalidAnswer, JudgeItem, parse_answer
from steering.errors import RadsteerError
from tests.helpers_judge import FakeOpenAIServer

KEY = "sk-test-SECRET-0123456789abcdef"
ENV = "RADSTEER_TEST_JUDGE_KEY"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, KEY)


def _judge(server: FakeOpenAIServer, **overrides) -> LLMJudge:
    cfg = dict(model="judge-test", base_url=server.base_url, api_key_env=ENV, concurrency=4, timeout_s=5.0,
               max_retries=2, backoff_base_s=0.01, backoff_max_s=0.05)
    cfg.update(overrides)
    return LLMJudge(JudgeConfig(**cfg))


def _item(key: object, steered: str, baseline: str = "No pleural effusion. Heart size normal.") -> JudgeItem:
    return JudgeItem(key=key, baseline=baseline, steered=steered, direction=+1,
                     targets=["pleural_effusion"], description="pleural effusion")


def test_valid_answers_become_verdicts() -> None:
    items = [_item(1, "Small left pleural effusion. #on"), _item(2, "New cardiomegaly. #off"),
             _item(3, "Large effusion and a new nodule. #on #off"), _item(4, "No effusion. Normal heart.")]
    with FakeOpenAIServer(api_key=KEY) as srv:
        results = _judge(srv).judge_many(items)
    assert [r.key for r in results] == [1, 2, 3, 4]
    assert [r.label for r in results] == ["on", "off", "both", "none"]
    assert all(r.error is None and len(r.prompt_hash) == 64 for r in results)
    assert srv.requests == 4
    body = srv.bodies[0]
    assert body["model"] == "judge-test" and body["response_format"]["type"] == "json_schema"
    assert "pleural_effusion" in body["messages"][1]["content"]
    row = results[0].verdict_row(generation_id=7)
    assert row["method"] == "llm_judge" and row["on_target"] is True and row["off_target"] is False
    assert row["judge_model"] == "judge-test" and row["prompt_hash"] == results[0].prompt_hash
    assert row["error"] is None and row["evidence"]["on_target"] == "target concept asserted"


@pytest.mark.parametrize(("marker", "reason"), [("#malformed", "not valid JSON"), ("#schema", "answer schema")])
def test_malformed_answers_are_errors_not_none(marker: str, reason: str) -> None:
    with FakeOpenAIServer() as srv:
        (res,) = _judge(srv, invalid_answer_retries=1).judge_many([_item(1, f"Effusion {marker}")])
    assert res.label is None and res.on_target is None
    assert res.error is not None and reason in res.error
    assert srv.requests == 2  # asked once more, then recorded the error
    row = res.verdict_row(1)
    assert row["label"] is None and row["error"] == res.error


@pytest.mark.timeout(30)
def test_429_then_success_honours_retry_after() -> None:
    # backoff_base_s is huge: the test only finishes quickly because Retry-After: 0 is honoured.
    with FakeOpenAIServer(retry_after="0") as srv:
        (res,) = _judge(srv, backoff_base_s=1000, backoff_max_s=1000).judge_many([_item(1, "Effusion #429once #on")])
    assert res.error is None and res.label == "on" and res.attempts == 2
    assert srv.statuses == {429: 1, 200: 1}


def test_500s_beyond_the_retry_budget_are_recorded() -> None:
    with FakeOpenAIServer() as srv:
        judge = _judge(srv, max_retries=2)
        (res,) = judge.judge_many([_item(1, "Effusion #500")])
    assert res.label is None and "HTTP 500" in res.error and "after 3 attempts" in res.error
    assert srv.requests == 3 and judge.stats.retries == 2 and judge.stats.errors == 1


def test_connection_errors_are_retried_then_recorded() -> None:
    import socket

    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    judge = LLMJudge(JudgeConfig(model="m", base_url=f"http://127.0.0.1:{port}/v1", api_key_env=ENV,
                                 max_retries=2, backoff_base_s=0.01, timeout_s=2.0))
    (res,) = judge.judge_many([_item(1, "Effusion #on")])
    assert res.label is None and "APIConnectionError" in res.error and "after 3 attempts" in res.error
    assert judge.stats.requests == 3 and judge.stats.retries == 2


def test_timeouts_are_recorded() -> None:
    with FakeOpenAIServer(slow_s=3.0) as srv:
        results = _judge(srv, timeout_s=0.3, max_retries=1).judge_many([_item(1, "Effusion #slow"),
                                                                        _item(2, "Effusion #on")])
    assert results[0].error is not None and results[0].error.startswith("timeout")
    assert results[1].label == "on"
    assert srv.requests == 3  # two attempts for the slow one, one for the other


def test_second_run_with_the_cache_sends_zero_requests(store) -> None:
    items = [_item(i, f"Effusion variant {i} #on") for i in range(5)] + [_item(9, "Effusion #500")]
    with FakeOpenAIServer() as srv:
        first = _judge(srv, max_retries=0).judge_many(items, cache=StoreJudgeCache(store))
        sent = srv.requests
        assert store.count("judge_cache") == 5  # errors are not cached
        second_judge = _judge(srv, max_retries=0)
        second = second_judge.judge_many(items[:5], cache=StoreJudgeCache(store))
    assert srv.requests == sent == 6
    assert all(r.from_cache for r in second) and second_judge.stats.cached == 5
    assert [(r.label, r.prompt_hash) for r in second] == [(r.label, r.prompt_hash) for r in first[:5]]


def test_identical_prompts_are_sent_once() -> None:
    with FakeOpenAIServer() as srv:
        results = _judge(srv).judge_many([_item("a", "Effusion #on"), _item("b", "Effusion #on")],
                                         cache=MemoryJudgeCache())
    assert srv.requests == 1 and [r.key for r in results] == ["a", "b"] and results[1].label == "on"


def test_budget_exhaustion_is_recorded() -> None:
    items = [_item(i, f"Effusion {i} #on") for i in range(4)]
    with FakeOpenAIServer() as srv:
        calls = _judge(srv, concurrency=1, max_calls=2).judge_many(items)
        assert srv.requests == 2
        tokens = _judge(srv, concurrency=1, max_tokens=150).judge_many(items)  # 120 tokens per answer
        assert srv.requests == 4
    for results in (calls, tokens):
        assert [r.label for r in results[:2]] == ["on", "on"]
        assert all(r.label is None and r.error.startswith(BUDGET_EXHAUSTED) for r in results[2:])


def test_concurrency_is_bounded() -> None:
    with FakeOpenAIServer(delay_s=0.1) as srv:
        _judge(srv, concurrency=3).judge_many([_item(i, f"Effusion {i}") for i in range(9)])
    assert srv.max_in_flight == 3


def test_json_schema_refusal_falls_back_to_json_object() -> None:
    with FakeOpenAIServer(reject_json_schema=True) as srv:
        results = _judge(srv).judge_many([_item(1, "Effusion #on"), _item(2, "Nodule #off")])
    assert [r.label for r in results] == ["on", "off"]
    assert srv.bodies[-1]["response_format"] == {"type": "json_object"}


def test_the_api_key_never_reaches_store_logs_or_errors(store, tmp_path, caplog, capsys) -> None:
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(api_key="a-different-key") as srv:  # 401 that echoes the key it was sent
        judge = _judge(srv)
        results = judge.judge_many([_item(1, "Effusion #on")], cache=StoreJudgeCache(store))
    assert results[0].error is not None and "401" in results[0].error and "[redacted]" in results[0].error
    store.add_cases([{"case_id": "c", "inputs": {}, "split": "test"}])
    from steering.store import BASELINE_FEATURE

    store.add_generations([dict(case_id="c", feature_id=BASELINE_FEATURE, alpha=0.0, settings_hash="s", text="t",
                                n_tokens=1, finish_reason="eos", seconds=0.0)])
    store.upsert("verdicts", [results[0].verdict_row(1)], key=["generation_id", "method"])
    with FakeOpenAIServer(api_key=KEY) as srv:
        _judge(srv).judge_many([_item(2, "Effusion #on")], cache=StoreJudgeCache(store))
    store.close()
    blobs = b"".join(p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file())
    out = capsys.readouterr()
    for text in (caplog.text, out.out, out.err, repr(judge), repr(judge.config), blobs.decode("latin-1")):
        assert KEY not in text


def test_missing_key_variable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV)
    with pytest.raises(RadsteerError, match=ENV):
        LLMJudge(JudgeConfig(model="m", api_key_env=ENV))
    LLMJudge(JudgeConfig(model="m", api_key_env=None))  # keyless local servers are fine


def test_config_from_a_protocol_section() -> None:
    cfg = JudgeConfig.from_mapping({"model": "gpt-4o-mini", "base_url": "http://localhost:8000/v1",
                                    "api_key_env": ENV, "concurrency": 8})
    assert cfg.concurrency == 8
    with pytest.raises(RadsteerError, match="api_key_env"):
        JudgeConfig.from_mapping({"model": "m", "api_key": "sk-x"})
    with pytest.raises(RadsteerError, match="concurency"):
        JudgeConfig.from_mapping({"model": "m", "concurency": 2})
    with pytest.raises(RadsteerError, match="concurrency"):
        JudgeConfig(model="m", concurrency=0)


def test_parse_answer_accepts_fenced_json_and_rejects_wrong_types() -> None:
    fenced = ('```json\n{"on_target_change": true, "off_target_change": false, "on_target_evidence": "x", '
              '"off_target_evidence": "", "clinically_coherent": true, "rationale": "r"}\n```')
    assert parse_answer(fenced).on_target_change is True
    with pytest.raises(InvalidAnswer, match="schema"):
        parse_answer(fenced.replace("true", '"true"', 1))
    with pytest.raises(InvalidAnswer, match="not an object"):
        parse_answer("[1, 2]")
