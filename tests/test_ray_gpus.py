"""`gpus_per_worker` on Ray: each worker actor asks Ray for its GPUs and loads the model on the one
it was given. On this CPU machine the local Ray is started with declared GPUs (Ray schedules them
like real ones and narrows each worker's CUDA_VISIBLE_DEVICES), so the scheduling and the device
choice are checked without running CUDA; a GPU-marked test sweeps on real GPUs where there are any."""

from __future__ import annotations

import pytest

from steering.distributed import ExecutionOptions, RayPool, cases_per_shard, fill_order, worker_device
from steering.errors import RadsteerError
from tests.helpers_ray import ray_or_skip


def test_worker_device_is_the_assigned_gpu_else_the_cpu() -> None:
    assert worker_device("cuda:3", ["5"]) == "cuda:0"  # the only GPU the worker sees is its own
    assert worker_device("auto", ["0"]) == "cuda:0"
    assert worker_device("auto", []) == "cpu"  # no GPU scheduled: never pile onto one anyway
    assert worker_device("cpu", []) == "cpu"
    with pytest.raises(RadsteerError, match="gpus_per_worker"):
        worker_device("cuda", [])


def test_shards_hold_full_batches_but_still_split_the_work() -> None:
    two = ExecutionOptions(executor="ray", workers=2)
    # 8 cases × 9 rows, batches of 8: one-case shards would each end in a 1-row batch (16 batches
    # where one process runs 9); 4 cases a shard → 36 rows = 5 batches on each worker
    assert cases_per_shard([9] * 8, two, batch_size=8) == 4
    # 16 cases: 4-case shards make 4 × 5 batches (5 on each worker's busiest path twice = 10);
    # 8-case shards 2 × 9 full batches: 9
    assert cases_per_shard([9] * 16, two, batch_size=8) == 8
    # paper scale: 1,729 rows a case fill batches anyway → about four shards per worker
    assert cases_per_shard([1729] * 200, two, batch_size=8) == 25
    # never more than an equal split: every worker gets a shard
    assert cases_per_shard([1, 1, 1], two, batch_size=64) == 2
    # uneven cases (a resumed sweep): the shard size that balances the rows (two halves of 13 rows;
    # one-case shards leave a 10-row case last, on a worker that has 6 rows already)
    assert cases_per_shard([10, 1, 1, 1, 1, 1, 1, 10], two, batch_size=1) == 4
    assert cases_per_shard([1, 1, 1, 1, 1, 1, 1, 1], two, batch_size=1) == 1
    assert cases_per_shard([9] * 8, ExecutionOptions(executor="ray", workers=2, cases_per_task=1), 8) == 1
    assert cases_per_shard([], two, 8) == 1
    assert 1 <= cases_per_shard([7] * 10_000, ExecutionOptions(executor="ray", workers=3), 8) <= 3334


def test_parts_go_to_every_worker_before_a_second_to_any() -> None:
    assert fill_order([0, 0], 2, 2) == [0, 1]  # two shards, two workers: one each (not both on the first)
    assert fill_order([0, 0], 2, 8) == [0, 1, 0, 1]
    assert fill_order([2, 0], 2, 1) == [1]  # the idle worker first
    assert fill_order([1, 2, 0], 2, 5) == [2, 0, 2]
    assert fill_order([0, 0], 2, 0) == []


@pytest.mark.ray
@pytest.mark.slow
def test_each_ray_worker_gets_its_own_gpu_and_picks_cuda0() -> None:
    ray = ray_or_skip()
    assert not ray.is_initialized()
    options = ExecutionOptions(executor="ray", workers=2, gpus_per_worker=1)
    with RayPool(dict, options) as pool:  # the pool starts a local Ray declaring workers × gpus_per_worker GPUs
        assert ray.cluster_resources().get("GPU") == 2
        placed = pool.get([a.placement.remote("auto") for a in pool.actors])
        assert ray.available_resources().get("GPU", 0) == 0  # both GPUs held by the two actors
    assert not ray.is_initialized()  # the pool stopped the Ray it started
    assert sorted(p["gpu_ids"] for p in placed) == [["0"], ["1"]], placed  # a distinct GPU each
    for p in placed:
        assert p["cuda_visible_devices"] == p["gpu_ids"][0]  # Ray narrowed what CUDA shows the worker
        assert p["device"] == "cuda:0"  # so the model goes to the worker's own GPU
    assert len({p["pid"] for p in placed}) == 2


@pytest.mark.ray
@pytest.mark.gpu
@pytest.mark.slow
def test_sweep_on_two_gpu_workers_equals_one_gpu_process(tmp_path, monkeypatch) -> None:
    """Two workers on real GPUs (one each, or half of a single GPU) store the rows of a one-process
    sweep on the GPU, token for token (greedy)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (this machine has none)")
    ray_or_skip()
    import yaml

    from protocols.cli import main
    from steering.store import STORE_URL_ENV, StudyStore
    from tests.helpers_steering import write_tiny_study

    monkeypatch.delenv(STORE_URL_ENV, raising=False)
    protocol = write_tiny_study(tmp_path, n_cases=6, features=("f0", "f1"), alphas=(-1.0, 1.0), max_new_tokens=8)
    data = yaml.safe_load(protocol.read_text())
    data["model"]["device"] = "cuda"
    data["execution"] = {"executor": "ray", "workers": 2,
                         "gpus_per_worker": 1 if torch.cuda.device_count() >= 2 else 0.5}
    protocol.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["sweep", str(protocol), "--runs-dir", str(tmp_path / "one"), "--no-progress",
                 "--executor", "local"]) == 0
    assert main(["sweep", str(protocol), "--runs-dir", str(tmp_path / "ray"), "--no-progress"]) == 0
    cols = ["case_id", "feature_id", "alpha", "text", "n_tokens"]
    with StudyStore.open(tmp_path / "one" / "tiny") as a, StudyStore.open(tmp_path / "ray" / "tiny") as b:
        ga = a.dataframe("generations")[cols].sort_values(cols[:3]).reset_index(drop=True)
        gb = b.dataframe("generations")[cols].sort_values(cols[:3]).reset_index(drop=True)
    assert len(ga) == 6 * 5 and ga.equals(gb)
    assert '"device": "cuda:0"' in (tmp_path / "ray" / "tiny" / "manifest.json").read_text()


def test_a_cluster_address_where_nothing_listens_fails_in_one_line_at_once() -> None:
    """Ray itself retries an unreachable head for minutes (found by trying 127.0.0.1:1)."""
    import socket
    import time

    from steering.distributed import check_reachable

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(RadsteerError, match="no Ray head answers there") as err:
            check_reachable(address)
        assert "\n" not in str(err.value) and address in str(err.value)
    assert time.monotonic() - t0 < 30
    with pytest.raises(RadsteerError, match="expected HOST:PORT"):
        check_reachable("head-node")
    with socket.socket() as server:  # something listening: accepted
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_reachable(f"127.0.0.1:{server.getsockname()[1]}")


def test_evaluate_and_mine_refuse_a_cluster_with_a_sqlite_store_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    """Workers on other machines cannot write the run directory's SQLite file: refused before any work."""
    import json

    from protocols.cli import main
    from steering.store import STORE_URL_ENV, StudyStore
    from tests.helpers_steering import write_tiny_study

    ray_or_skip()
    monkeypatch.delenv(STORE_URL_ENV, raising=False)
    protocol = write_tiny_study(tmp_path, n_cases=1, features=("f0",), alphas=(1.0,), max_new_tokens=4)
    assert main(["sweep", str(protocol), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]) == 0
    capsys.readouterr()
    run_dir = tmp_path / "runs" / "tiny"
    assert main(["evaluate", str(run_dir), "--ray-address", "10.0.0.1:6379", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "SQLite" in err and "--store-url" in err, err
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "d1", "text": "no effusion"}) + "\n")
    assert main(["mine", str(protocol), "--corpus", str(corpus), "--runs-dir", str(tmp_path / "runs"),
                 "--executor", "ray", "--ray-address", "10.0.0.1:6379", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "SQLite" in err, err
    with StudyStore.open(run_dir) as s:
        assert s.count("verdicts") == 0 and s.count("feature_contexts") == 0


def test_run_checks_the_workers_device_not_the_drivers(tmp_path, capsys) -> None:
    """A driver without a GPU may send a CUDA sweep to GPU workers: `radsteer run` checks the device
    a worker will pick (here on this CPU-only machine, with Ray not even started: a dry run)."""
    import yaml

    from protocols.cli import main
    from tests.helpers_steering import write_tiny_study

    protocol = write_tiny_study(tmp_path, n_cases=1, features=("f0",), alphas=(1.0,))
    data = yaml.safe_load(protocol.read_text())
    data["model"]["device"] = "cuda"
    data["execution"] = {"executor": "ray", "workers": 2, "gpus_per_worker": 1}
    protocol.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["run", str(protocol), "--runs-dir", str(tmp_path / "runs"), "--dry-run"]) == 0
    assert "rows: 2 to generate" in capsys.readouterr().out
    assert main(["run", str(protocol), "--runs-dir", str(tmp_path / "runs"), "--dry-run", "--executor", "local"]) == 2
    assert "does not exist on this machine" in capsys.readouterr().err  # the local executor: this machine's device
    data["execution"]["gpus_per_worker"] = 0
    protocol.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["run", str(protocol), "--runs-dir", str(tmp_path / "runs"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.device" in err and "gpus_per_worker" in err, err
    assert not (tmp_path / "runs").exists()
