"""`radsteer run` and `radsteer evaluate` on a real local Ray (2 workers), compared row by row
with the single-process run: the whole pipeline into a real PostgreSQL server, and evaluation
into a SQLite study with a worker killed by its PID mid-run. One Ray serves the module (Ray
takes ~10-30 s to start on 2 cores)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time

import pytest

from evaluation.judge import JudgeConfig, LLMJudge
from protocols.cli import main
from protocols.execution import evaluate_on_ray
from steering.distributed import ExecutionOptions
from steering.store import STORE_URL_ENV, StudyStore, resolve_url
from tests.helpers_judge import FakeOpenAIServer
from tests.helpers_ray import ray_or_skip, start_local_ray
from tests.helpers_steering import lexicon_and_judge, write_tiny_study

pytestmark = [pytest.mark.ray, pytest.mark.slow]

GEN_KEY = ["case_id", "feature_id", "alpha"]
VERDICT_COLS = ["method", "on_target", "off_target", "label", "judge_model", "prompt_hash", "disagreement", "error"]


@pytest.fixture(scope="module")
def shared_ray():
    ray = start_local_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def _generations(run_dir) -> list[dict]:
    with StudyStore.open(run_dir) as s:
        rows = s.rows("generations")
    return sorted(({k: g[k] for k in [*GEN_KEY, "settings_hash", "text", "n_tokens", "finish_reason", "error"]}
                   for g in rows), key=lambda g: (g["case_id"], str(g["feature_id"]), g["alpha"]))


def _verdicts(run_dir) -> dict[tuple, dict]:
    """Every verdict by (case, feature, α, method): generation ids differ between stores, keys do not."""
    with StudyStore.open(run_dir) as s:
        key_of = {g["id"]: (g["case_id"], g["feature_id"], float(g["alpha"])) for g in s.rows("generations")}
        out = {}
        for v in s.rows("verdicts"):
            k = (*key_of[v["generation_id"]], v["method"])
            assert k not in out
            out[k] = {**{c: v[c] for c in VERDICT_COLS}, "evidence": json.dumps(v["evidence"], sort_keys=True)}
    return out


def _protocol(tmp_path, base_url: str):
    return write_tiny_study(tmp_path, n_cases=4, alphas=(-4.0, 4.0), max_new_tokens=6,
                            sections={"evaluation": lexicon_and_judge(base_url),
                                      "execution": {"executor": "ray", "workers": 2}})


@pytest.mark.postgres
def test_run_on_ray_into_postgres_equals_local_sqlite_run(tmp_path, pg_url, monkeypatch, capsys) -> None:
    """The issue's "done when": sweep → evaluate → stats → report with `execution: {executor: ray,
    workers: 2}` into PostgreSQL stores exactly the rows, verdicts and statistics of a local run.
    The command starts one local Ray for both steps, as a user's would."""
    ray = ray_or_skip()
    ray_was_up = ray.is_initialized()  # first in this module: `radsteer run` starts (and stops) its own Ray
    monkeypatch.delenv(STORE_URL_ENV, raising=False)
    with FakeOpenAIServer() as srv:
        protocol = str(_protocol(tmp_path, srv.base_url))
        assert main(["run", protocol, "--runs-dir", str(tmp_path / "local"), "--no-progress",
                     "--executor", "local"]) == 0
        local_out = capsys.readouterr().out
        local_requests = srv.requests
        assert "Ray" not in local_out and local_requests == 4 * 4
        assert main(["run", protocol, "--runs-dir", str(tmp_path / "ray"), "--no-progress",
                     "--store-url", pg_url]) == 0
        out = capsys.readouterr().out
        assert srv.requests == 2 * local_requests  # every judge call once, none twice
    assert ray.is_initialized() == ray_was_up  # a Ray the command started is stopped again
    assert "on 2 Ray workers" in out and "evaluate: on 2 Ray workers" in out, out
    assert "judge fake-judge: 16 verdicts, 0 errors (16 requests" in out, out  # the workers' calls, counted
    local, ray_dir = tmp_path / "local" / "tiny", tmp_path / "ray" / "tiny"
    assert not (ray_dir / "study.sqlite").exists() and resolve_url(ray_dir) == pg_url  # the tables are on the server
    assert len(_generations(local)) == 4 * 5 and _generations(ray_dir) == _generations(local)  # identical text
    assert len(_verdicts(local)) == 16 * 3 and _verdicts(ray_dir) == _verdicts(local)
    tables = sorted(p.name for p in (local / "stats").glob("*.csv"))
    assert tables and tables == sorted(p.name for p in (ray_dir / "stats").glob("*.csv"))
    for name in tables:
        assert (ray_dir / "stats" / name).read_text() == (local / "stats" / name).read_text(), name
    assert (ray_dir / "report.html").is_file()


def test_evaluate_on_ray_killed_worker_every_verdict_once_equal_to_local(tmp_path, shared_ray, monkeypatch) -> None:
    """Evaluation shards (whole cases) on 2 workers writing one SQLite study; one worker is killed
    by its PID mid-run: Ray restarts it, its shard is labelled again, and the study ends with one
    verdict per generation and method, equal to the local run's; no judge answer is asked twice
    but the one in flight when the worker died."""
    monkeypatch.delenv(STORE_URL_ENV, raising=False)
    protocol = write_tiny_study(tmp_path, n_cases=6, features=("f0", "f1"), alphas=(-4.0, 4.0), max_new_tokens=6)
    assert main(["sweep", str(protocol), "--runs-dir", str(tmp_path / "a"), "--no-progress"]) == 0
    shutil.copytree(tmp_path / "a" / "tiny", tmp_path / "b" / "tiny")  # the same study twice
    steered = 6 * 2 * 2
    with FakeOpenAIServer(delay_s=0.25) as srv:
        judge_args = ["--judge-model", "fake-judge", "--judge-base-url", srv.base_url, "--judge-api-key-env", "none",
                      "--concurrency", "1", "--no-progress"]
        assert main(["evaluate", str(tmp_path / "a" / "tiny"), "--executor", "local", *judge_args]) == 0
        assert srv.requests == steered
        killed: dict[str, int] = {}
        url = resolve_url(tmp_path / "b" / "tiny")

        def kill_one_mid_run(pids: list[int]) -> None:
            def watch() -> None:
                with StudyStore(url) as store:
                    deadline = time.time() + 300
                    while time.time() < deadline and store.count("verdicts") < steered + 4:
                        time.sleep(0.05)
                    killed["stored"] = store.count("verdicts")
                os.kill(pids[0], signal.SIGKILL)
                killed["pid"] = pids[0]
            threading.Thread(target=watch, daemon=True).start()

        judge = LLMJudge(JudgeConfig(model="fake-judge", base_url=srv.base_url, api_key_env=None, concurrency=1))
        summary, restarts = evaluate_on_ray(
            url, ExecutionOptions(executor="ray", workers=2, cases_per_task=1), extractor="lexicon",
            extractor_options={}, judge=judge, combine_rule="agree", batch_size=64, progress=False,
            on_workers=kill_one_mid_run)
        ray_requests = srv.requests - steered
    assert killed and killed["stored"] < 3 * steered, killed  # the worker died with work left
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)
    assert restarts >= 1 and summary.generations == steered, (restarts, summary)
    assert steered <= ray_requests <= steered + 2, ray_requests  # at most the in-flight calls again
    # the re-run shard keeps what the killed worker had stored and labels the rest: each verdict once
    assert summary.written["llm_judge"] + summary.kept["llm_judge"] == steered, summary
    assert summary.written["entity_diff"] + summary.kept["entity_diff"] == steered, summary
    assert judge.failure() is None and judge.totals.errors == 0
    a, b = _verdicts(tmp_path / "a" / "tiny"), _verdicts(tmp_path / "b" / "tiny")
    assert len(a) == 3 * steered and b == a
    assert all(v["error"] is None for v in b.values())


def test_mine_on_ray_equals_local(tmp_path, shared_ray, monkeypatch, capsys) -> None:
    """The corpus in whole planning chunks on 2 workers, the shards' states merged on the driver:
    the same contexts, samples and statistics as one process, row for row; a second run resumes."""
    import torch

    from tests.helpers_mining import planted_setup

    monkeypatch.delenv(STORE_URL_ENV, raising=False)
    protocol = write_tiny_study(tmp_path, n_cases=2, features=("f0", "f1"))
    p = planted_setup(tmp_path, n_docs=70)
    enc = p.bank.encoder
    torch.save({"W_enc": enc.W_enc, "b_enc": enc.b_enc, "W_dec": p.bank.decoder, "b_dec": enc.b_dec,
                "threshold": torch.tensor(0.0), "k": torch.tensor(2), "group_sizes": torch.tensor([p.bank.n_features])},
               tmp_path / "ae.pt")
    args = [str(protocol), "--corpus", str(p.corpus), "--top-k", "4", "--samples", "3", "--batch-size", "2",
            "--no-progress"]
    assert main(["mine", *args, "--runs-dir", str(tmp_path / "local")]) == 0
    assert main(["mine", *args, "--runs-dir", str(tmp_path / "ray"), "--executor", "ray", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "70 documents mined" in out and "on 2 Ray workers" in out, out

    def evidence(run_dir):
        with StudyStore.open(run_dir) as s:
            ctx = s.dataframe("feature_contexts").drop(columns=["id"], errors="ignore")
            stats = s.dataframe("feature_stats").drop(columns=["id"], errors="ignore")
            assert s.count("mining_progress") == 70
        ctx = ctx.sort_values(["feature_id", "kind", "rank"]).reset_index(drop=True)
        return ctx.to_dict("records"), stats.sort_values("feature_id").to_dict("records")

    local_ctx, local_stats = evidence(tmp_path / "local" / "tiny")
    ray_ctx, ray_stats = evidence(tmp_path / "ray" / "tiny")
    assert len(local_ctx) > 6 * 4 and ray_ctx == local_ctx
    assert len(local_stats) == p.bank.n_features and ray_stats == local_stats
    top = {(r["doc_id"], r["token_index"]) for r in ray_ctx if r["kind"] == "top" and r["feature_id"] == "f0"}
    assert top <= p.places["f0"] or p.places["f0"] <= top
    local_meta = json.loads((tmp_path / "local" / "tiny" / "mining.json").read_text())
    ray_meta = json.loads((tmp_path / "ray" / "tiny" / "mining.json").read_text())
    assert ray_meta == local_meta | {"corpus": ray_meta["corpus"]}
    assert main(["mine", *args, "--runs-dir", str(tmp_path / "ray"), "--executor", "ray", "--workers", "1"]) == 0
    assert "0 documents mined" in capsys.readouterr().out  # resumed from the merged checkpoints: nothing twice


def test_judge_key_missing_on_the_workers_is_one_line(tmp_path, shared_ray, monkeypatch) -> None:
    """The key is read from each worker's own environment, never sent through Ray: a variable set in
    the driver after Ray started is not there, and the run stops with one line naming it."""
    from steering.errors import RadsteerError

    monkeypatch.delenv(STORE_URL_ENV, raising=False)
    protocol = write_tiny_study(tmp_path, n_cases=1, features=("f0",), alphas=(1.0,), max_new_tokens=4)
    assert main(["sweep", str(protocol), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]) == 0
    monkeypatch.setenv("RADSTEER_TEST_RAY_KEY", "sk-only-in-the-driver")
    judge = LLMJudge(JudgeConfig(model="fake-judge", base_url="http://127.0.0.1:9/v1",
                                 api_key_env="RADSTEER_TEST_RAY_KEY"))
    with pytest.raises(RadsteerError) as err:
        evaluate_on_ray(resolve_url(tmp_path / "runs" / "tiny"), ExecutionOptions(executor="ray", workers=1),
                        extractor="lexicon", extractor_options={}, judge=judge, combine_rule="agree", batch_size=64,
                        progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "RADSTEER_TEST_RAY_KEY" in msg and "sk-only" not in msg, msg
    with StudyStore.open(tmp_path / "runs" / "tiny") as s:
        assert s.count("verdicts") == 0
