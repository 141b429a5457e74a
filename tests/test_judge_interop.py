"""The judge against servers as they really answer: format negotiation (llama.cpp's HTTP 500 for
json_schema, 400/422 elsewhere), re-asks, counted errors, exit codes, and the key kept out of
stored answers. The loopback server speaks each server's protocol (tests/helpers_judge.py); the
real llama.cpp server is exercised in tests/test_judge_llama_server.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.judge import JudgeConfig, LLMJudge
from evaluation.judge_prompt import ANSWER_JSON_SCHEMA, JudgeAnswer, JudgeItem, strict_json_schema
from protocols.cli import main
from tests.helpers_judge import FakeOpenAIServer

KEY = "sk-interop-SECRET-77"
ENV = "RADSTEER_TEST_INTEROP_KEY"


def _items(n: int, marker: str = "") -> list[JudgeItem]:
    return [JudgeItem(key=i, baseline="Lungs are clear.", steered=f"Small effusion {i}. {marker}", direction=1,
                      targets=("pleural_effusion",)) for i in range(n)]


def _judge(srv: FakeOpenAIServer, **kw) -> LLMJudge:
    return LLMJudge(JudgeConfig(model="m", base_url=srv.base_url, api_key_env=None, backoff_base_s=0.01, **kw))


def _formats(srv: FakeOpenAIServer) -> list[str | None]:
    return [(b.get("response_format") or {}).get("type") for b in srv.bodies]


def test_answer_schema_is_generated_from_the_pydantic_model() -> None:
    assert ANSWER_JSON_SCHEMA == strict_json_schema(JudgeAnswer)
    assert ANSWER_JSON_SCHEMA["required"] == list(JudgeAnswer.model_fields)
    assert ANSWER_JSON_SCHEMA["additionalProperties"] is False
    assert all("title" not in v for v in ANSWER_JSON_SCHEMA["properties"].values())


def test_llama_cpp_500_on_json_schema_negotiates_json_object_once_per_run() -> None:
    with FakeOpenAIServer(reject_json_schema="llama.cpp") as srv:
        judge = _judge(srv, concurrency=8)
        results = judge.judge_many(_items(12))
        assert all(r.error is None and r.answer is not None for r in results)
        assert _formats(srv).count("json_schema") == 1  # one probe, however many requests were in flight
        assert srv.statuses[500] == 1 and srv.requests == 13
        assert judge.response_format == "json_object" and judge.stats.retries == 0
        # the schema travels in the prompt once the server cannot enforce it
        assert '"additionalProperties":false' in srv.bodies[-1]["messages"][0]["content"]
        # remembered for the rest of the run: a second batch sends no json_schema at all
        judge.judge_many(_items(3, "#second"))
        assert _formats(srv).count("json_schema") == 1
        assert judge.totals.answers == 15 and judge.totals.errors == 0


def test_a_text_only_server_gets_the_schema_in_the_prompt() -> None:
    with FakeOpenAIServer(reject_json_object=True) as srv:  # 422 for json_schema and json_object
        judge = _judge(srv, concurrency=4)
        results = judge.judge_many(_items(5))
        assert all(r.error is None for r in results)
        assert _formats(srv)[:2] == ["json_schema", "json_object"] and _formats(srv)[2:] == [None] * 5
        assert judge.response_format == "text"
        assert "must match this JSON schema" in srv.bodies[-1]["messages"][0]["content"]


def test_a_forced_format_the_server_refuses_is_one_error_per_item_not_five_retries() -> None:
    with FakeOpenAIServer(reject_json_schema="llama.cpp") as srv:
        judge = _judge(srv, response_format="json_schema")
        results = judge.judge_many(_items(3))
        assert srv.requests == 3 and judge.stats.retries == 0
        assert all("refused response_format json_schema" in r.error and r.answer is None for r in results)
        assert judge.failure() and "3 judge calls failed" in judge.failure()


def test_invalid_answer_is_asked_again_with_the_reason() -> None:
    with FakeOpenAIServer() as srv:
        judge = _judge(srv)
        [res] = judge.judge_many(_items(1, "#reask"))
        assert res.error is None and res.attempts == 2
        second = srv.bodies[1]["messages"]
        assert second[-2]["role"] == "assistant" and "Sure!" in second[-2]["content"]
        assert second[-1]["role"] == "user" and "not valid JSON" in second[-1]["content"]


def test_invalid_answers_are_counted_errors_never_a_silent_none() -> None:
    with FakeOpenAIServer() as srv:
        judge = _judge(srv)
        results = judge.judge_many(_items(2, "#malformed"))
        assert all(r.label is None and r.error.startswith("invalid judge answer") for r in results)
        assert judge.totals.errors == 2 and judge.totals.answers == 0
        assert "0 verdicts, 2 errors" in judge.outcome_line()


def test_an_answer_echoing_the_key_is_stored_redacted(store, monkeypatch: pytest.MonkeyPatch) -> None:
    from evaluation.judge_cache import StoreJudgeCache

    monkeypatch.setenv(ENV, KEY)
    with FakeOpenAIServer(api_key=KEY) as srv:
        judge = LLMJudge(JudgeConfig(model="m", base_url=srv.base_url, api_key_env=ENV))
        [res] = judge.judge_many(_items(1, "#echokey"), cache=StoreJudgeCache(store))
    assert res.error is None and "[redacted]" in res.answer.rationale and KEY not in res.answer.rationale
    assert KEY not in json.dumps(res.verdict_row(1))
    assert KEY not in json.dumps(store.rows("judge_cache"), default=str)


# -- commands: counts printed, no verdicts → non-zero exit with one line why --------------------

def _pairs(tmp_path: Path) -> Path:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": i, "baseline": "Lungs are clear.", "steered": f"Effusion {i}.",
                                         "target": "pleural_effusion", "direction": 1}) + "\n" for i in range(3)))
    return pairs


def test_label_with_a_judge_that_always_fails_exits_non_zero(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv(ENV, "sk-wrong-key")
    with FakeOpenAIServer(api_key=KEY) as srv:  # every call: 401
        code = main(["label", str(_pairs(tmp_path)), "-o", str(tmp_path / "out.jsonl"), "--judge-base-url",
                     srv.base_url, "--judge-model", "m", "--judge-api-key-env", ENV, "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "judge m: 0 verdicts, 3 errors" in err
    assert "radsteer label: error: the LLM judge produced no verdicts: all 3 judge calls failed" in err
    assert "HTTP 401" in err and "sk-wrong-key" not in err


def test_label_against_a_llama_cpp_server_needs_no_flag(tmp_path, capsys) -> None:
    with FakeOpenAIServer(reject_json_schema="llama.cpp") as srv:
        code = main(["label", str(_pairs(tmp_path)), "-o", str(tmp_path / "out.jsonl"), "--judge-base-url",
                     srv.base_url, "--judge-model", "m", "--judge-api-key-env", "none", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "judge m: 3 verdicts, 0 errors" in err and "response format json_object" in err


def test_run_in_which_every_judge_call_fails_exits_non_zero(tmp_path, monkeypatch, capsys) -> None:
    import yaml

    from steering.store import StudyStore
    from tests.helpers_steering import write_tiny_study

    monkeypatch.setenv(ENV, "sk-revoked-key")
    with FakeOpenAIServer(api_key=KEY) as srv:  # 401 for every call
        path = write_tiny_study(tmp_path, n_cases=2, alphas=(4.0,), max_new_tokens=3)
        data = yaml.safe_load(path.read_text())
        data["evaluation"] = {"extractor": "lexicon",
                              "judge": {"model": "fake-judge", "base_url": srv.base_url, "api_key_env": ENV}}
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        code = main(["run", str(path), "--runs-dir", str(tmp_path / "runs"), "--no-progress",
                     "--steps", "sweep,evaluate"])
    out, err = capsys.readouterr()
    assert code == 1, out + err
    assert "judge fake-judge: 0 verdicts, 4 errors" in out
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "the LLM judge produced no verdicts: all 4 judge calls failed" in errors[0]
    assert "sk-revoked-key" not in out + err
    with StudyStore.open(tmp_path / "runs" / "tiny") as store:  # the errors are stored, as errors
        judged = store.rows("verdicts", method="llm_judge")
        assert len(judged) == 4 and all(v["error"] and v["label"] is None for v in judged)
