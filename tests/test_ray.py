"""Sweeps on a real local Ray (2 workers) into a real PostgreSQL server: a worker killed by its
PID mid-sweep is restarted, its unfinished cases re-run, and every planned row is stored exactly
once, token for token equal to the single-process SQLite sweep (greedy)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from protocols.cli import main
from protocols.execution import sweep_on_ray
from protocols.study import Study
from steering.distributed import ExecutionOptions
from steering.store import STORE_URL_ENV, StudyStore
from tests.helpers_ray import start_local_ray
from tests.helpers_steering import write_tiny_study

pytestmark = [pytest.mark.ray, pytest.mark.postgres]

KEY = ["case_id", "feature_id", "alpha", "settings_hash"]


@pytest.fixture
def local_ray():
    ray = start_local_ray()
    yield ray
    ray.shutdown()


def test_killed_ray_worker_every_row_once_equal_to_local(tmp_path, pg_url, local_ray, monkeypatch) -> None:
    monkeypatch.delenv(STORE_URL_ENV, raising=False)
    protocol = write_tiny_study(tmp_path, n_cases=8, features=("f0", "f1", "f2"), alphas=(-1.0, -0.5, 0.5, 1.0),
                                max_new_tokens=12, batch_size=2)
    planned = 8 * (1 + 3 * 4)
    assert main(["sweep", str(protocol), "--runs-dir", str(tmp_path / "local"), "--no-progress"]) == 0

    monkeypatch.setenv(STORE_URL_ENV, pg_url)
    study = Study.from_protocol(protocol, tmp_path / "ray")
    killed: dict[str, int] = {}

    def kill_one_mid_sweep(pids: list[int]) -> None:
        def watch() -> None:
            with StudyStore(pg_url) as store:
                deadline = time.time() + 300
                while time.time() < deadline and store.count("generations") < 12:
                    time.sleep(0.05)
                killed["stored"] = store.count("generations")
            os.kill(pids[0], signal.SIGKILL)
            killed["pid"] = pids[0]
        threading.Thread(target=watch, daemon=True).start()

    opts = ExecutionOptions(executor="ray", workers=2, cases_per_task=1)
    report = sweep_on_ray(study, opts, progress=False, on_workers=kill_one_mid_sweep)
    assert killed and killed["stored"] < planned, killed  # the worker died with work left
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)
    assert report.generated == planned and report.worker_restarts >= 1, report

    with StudyStore.open(tmp_path / "local" / "tiny") as a, StudyStore(pg_url) as b:
        cols = [*KEY, "text", "n_tokens", "finish_reason"]
        ga = a.dataframe("generations")[cols].sort_values(KEY).reset_index(drop=True)
        gb = b.dataframe("generations")[cols].sort_values(KEY).reset_index(drop=True)
        assert len(gb) == planned and not b.dataframe("generations").duplicated(KEY).any()
        assert ga.equals(gb)  # same rows, same text, same token counts as the single process
    manifest = (tmp_path / "ray" / "tiny" / "manifest.json").read_text()
    assert report.planned == planned and '"layer_module": "model.layers.1"' in manifest


def test_cluster_address_refuses_sqlite_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv(STORE_URL_ENV, raising=False)
    protocol = write_tiny_study(tmp_path, n_cases=1)
    assert main(["sweep", str(protocol), "--runs-dir", str(tmp_path / "runs"), "--no-progress",
                 "--executor", "ray", "--ray-address", "10.0.0.1:6379"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "SQLite" in err and "--store-url" in err, err
    assert main(["sweep", str(protocol), "--workers", "0", "--executor", "ray"]) == 2
    assert "--workers must be ≥ 1" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_a_worker_whose_job_cannot_be_built_says_why_in_one_line(tmp_path, local_ray) -> None:
    """The pool does not wait for its workers on entry (they load while the driver plans): a job
    that cannot be built is the worker's own one-line error at the first call, and the pool leaves
    a Ray it did not start running."""
    from functools import partial

    from steering.distributed import RayPool
    from steering.errors import RadsteerError

    missing = tmp_path / "nowhere" / "protocol.yaml"
    with pytest.raises(RadsteerError) as err:
        with RayPool(partial(Study.from_protocol, str(missing), str(tmp_path)), ExecutionOptions(workers=2)) as pool:
            pool.call_all("info")
    assert str(err.value).startswith("a Ray worker could not start: ") and str(missing) in str(err.value)
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)
    assert local_ray.is_initialized()
