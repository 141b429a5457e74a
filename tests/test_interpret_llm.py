"""The llm explainer and scorer against a real OpenAI-protocol HTTP server on 127.0.0.1
(tests/helpers_judge.py): valid answers, malformed JSON, 429 then success, timeouts, budget
exhaustion, and a cached re-run that sends no request."""

from __future__ import annotations

import json
import math

import pytest

from evaluation.interpret import make_interpreter
from evaluation.judge import JudgeConfig
from evaluation.judge_cache import StoreJudgeCache
from steering.store import StudyStore
from tests.helpers_interpret import add_synthetic_feature, oracle_respond
from tests.helpers_judge import FakeOpenAIServer

KEY = "sk-test-INTERPRET-0123456789"
ENV = "RADSTEER_TEST_INTERPRET_KEY"
WORDS = {"f1": "pacemaker", "f2": "pneumothorax", "f3": "cardiomegaly"}


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, KEY)


@pytest.fixture
def store(tmp_path):
    with StudyStore.open(tmp_path / "run") as s:
        yield s


def _interp(srv: FakeOpenAIServer, store: StudyStore, **cfg):
    conf = dict(model="explainer-test", base_url=srv.base_url, api_key_env=ENV, concurrency=4, timeout_s=5.0,
                max_retries=2, backoff_base_s=0.01, backoff_max_s=0.05)
    conf.update(cfg)
    return make_interpreter("llm", judge_config=JudgeConfig(**conf), cache=StoreJudgeCache(store))


def _rows(store):
    return {r["feature_id"]: r for r in store.rows("feature_interpretations")}


def test_valid_answers_are_explained_scored_stored_and_a_cached_rerun_sends_nothing(store) -> None:
    for fid, word in WORDS.items():
        add_synthetic_feature(store, fid, word)
    with FakeOpenAIServer(api_key=KEY, respond=oracle_respond) as srv:
        report = _interp(srv, store).run(store)
        sent = srv.requests
        rows = _rows(store)
        assert report.errors == 0 and report.interpreted == 3 and report.requests == sent
        for fid, word in WORDS.items():
            r = rows[fid]
            assert r["description"] == f"mentions of {word}" and r["targets"] == [word], r
            assert r["details"]["unknown_targets"] == ["not_a_concept"]
            assert r["f1"] == 1.0 and r["precision"] == 1.0 and r["recall"] == 1.0
            assert r["n_active"] >= 10 and r["n_inactive"] >= 10 and r["scorer"] == "llm"
            assert set(r["recall_by_quantile"]) <= {"q1", "q2", "q3", "q4"} and r["recall_by_quantile"]
        ex = store.dataframe("interpretation_exchanges")
        assert len(ex) == sent  # one stored exchange per request: every raw answer is auditable
        assert set(ex.stage) == {"explain", "score"} and ex.error.isna().all()
        n_score = ex[(ex.feature_id == "f1") & (ex.stage == "score")]
        assert len(n_score) == math.ceil((rows["f1"]["n_active"] + rows["f1"]["n_inactive"]) / 10)
        formats = {b["response_format"]["json_schema"]["name"] for b in srv.bodies}
        assert formats == {"feature_explanation", "feature_detection"}
        # the explainer saw marked activating tokens, the scorer never does
        explain = next(b for b in srv.bodies if "<<pacemaker>>" in b["messages"][1]["content"])
        assert "NON-ACTIVATING" in explain["messages"][1]["content"]
        assert all("<<" not in b["messages"][1]["content"] for b in srv.bodies if "Contexts:" in b["messages"][1]["content"])
        # a forced re-run is answered entirely from the cache
        again = _interp(srv, store).run(store, force=True)
        assert srv.requests == sent and again.requests == 0 and again.cached == sent
        assert {f: r["f1"] for f, r in _rows(store).items()} == {f: 1.0 for f in WORDS}
    blob = json.dumps(store.rows("interpretation_exchanges"), default=str) + json.dumps(
        store.rows("feature_interpretations"), default=str)
    assert KEY not in blob


def test_malformed_json_is_an_error_not_a_score_and_is_retried_later(store) -> None:
    add_synthetic_feature(store, "f1", "pacemaker")
    add_synthetic_feature(store, "f9", "pneumothorax", marker="#malformed")
    with FakeOpenAIServer(respond=oracle_respond) as srv:
        report = _interp(srv, store, api_key_env=None).run(store)
        rows = _rows(store)
        assert report.errors == 1 and rows["f1"]["f1"] == 1.0
        bad = rows["f9"]
        assert bad["f1"] is None and bad["error"] and "not valid JSON" in bad["error"]
        assert srv.statuses[200] == srv.requests
        first = srv.requests
        again = _interp(srv, store, api_key_env=None).run(store)  # the error is asked again (never cached)
        assert again.skipped == 1 and again.errors == 1 and srv.requests > first


def test_429_then_success_and_timeouts(store) -> None:
    add_synthetic_feature(store, "f1", "pacemaker", marker="#429once")
    add_synthetic_feature(store, "f2", "pneumothorax", marker="#slow")
    with FakeOpenAIServer(respond=oracle_respond, slow_s=1.5) as srv:
        report = _interp(srv, store, api_key_env=None, timeout_s=0.3, max_retries=1).run(store)
        rows = _rows(store)
    assert srv.statuses[429] >= 1 and rows["f1"]["f1"] == 1.0 and rows["f1"]["error"] is None
    assert rows["f2"]["f1"] is None and "timeout" in rows["f2"]["error"]
    assert report.errors == 1


def test_budget_exhaustion_is_recorded_and_a_later_run_finishes(store) -> None:
    for fid, word in WORDS.items():
        add_synthetic_feature(store, fid, word)
    with FakeOpenAIServer(respond=oracle_respond) as srv:
        report = _interp(srv, store, api_key_env=None, max_calls=4, concurrency=1).run(store)
        assert srv.requests == 4  # the budget covers explainer and scorer together
        errors = [r for r in _rows(store).values() if r["error"]]
        assert errors and all("budget exhausted" in r["error"] for r in errors) and report.errors == len(errors)
        sent = srv.requests
        final = _interp(srv, store, api_key_env=None).run(store)
        assert final.errors == 0 and all(r["f1"] == 1.0 for r in _rows(store).values())
        assert final.cached >= 1 and srv.requests - sent == final.requests  # answered ones were not re-sent


def test_llm_explainer_needs_a_server_configuration() -> None:
    from steering.errors import RadsteerError

    with pytest.raises(RadsteerError, match="--judge-model"):
        make_interpreter("llm")


def test_an_interrupted_run_resumes_without_asking_twice(store) -> None:
    for fid, word in WORDS.items():
        add_synthetic_feature(store, fid, word)

    class Stop(Exception):
        pass

    def stop_after_first(done: int, total: int) -> None:
        raise Stop

    with FakeOpenAIServer(respond=oracle_respond) as srv:
        interp = _interp(srv, store, api_key_env=None)
        interp.chunk = 1
        with pytest.raises(Stop):
            interp.run(store, progress=stop_after_first)
        assert len(_rows(store)) == 1  # the first chunk was stored before the interruption
        first = srv.requests
        again = _interp(srv, store, api_key_env=None)
        again.chunk = 1
        report = again.run(store)
        assert report.skipped == 1 and report.interpreted == 2 and report.cached == 0
        assert srv.requests > first and all(r["f1"] == 1.0 for r in _rows(store).values())
