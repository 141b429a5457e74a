"""Sweeps on Ray: the plan sharded by case over worker actors, on one machine or a cluster.

Each worker is a Ray actor that builds its steering engine once (the model loaded once per
worker, e.g. one per GPU) and takes whole cases, so per-case work (MAIRA-2's image features)
still runs once per case. A worker runs the ordinary `SteeringEngine.sweep` on its shard and
writes its rows itself, through the store's idempotent natural keys; the driver only plans,
dispatches and shows progress. A worker process that dies is restarted by Ray and its
unfinished shard is run again (rows it had committed are skipped, never duplicated); a worker
that cannot be restarted gives its shards back to the others.

Ray is optional (`pip install radsteer[distributed]`) and imported only here, only when used.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import accumulate
from typing import Any

from steering.errors import RadsteerError
from steering.store import StudyStore, public_url
from steering.store.location import is_sqlite

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ExecutionOptions:
    """How a sweep is executed (the protocol's `execution:` section, or command-line flags)."""

    executor: str = "local"  # "local": this process; "ray": worker actors
    workers: int = 2
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    threads_per_worker: int = 1  # torch threads in each worker
    address: str | None = None  # join this Ray cluster; None: start a local Ray for this run
    cases_per_task: int | None = None  # None: `cases_per_shard` (the shard size that finishes soonest)
    max_restarts: int = 3  # per worker, after its process died


@dataclass(frozen=True)
class EngineInfo:
    """What the driver records about the workers' engine without loading a model itself."""

    name: str
    path: str | None
    layer_module: str
    settings_hash: str
    describe: dict[str, Any]
    dtype: str
    device: str
    prompt: str | None
    cpu: dict[str, Any]
    batch_size: int = 1


def engine_info(engine: Any) -> EngineInfo:
    from steering.cpu import cpu_info  # imports torch: only where a model runs

    adapter = engine.adapter
    return EngineInfo(name=adapter.name, path=str(adapter.path) if adapter.path else None,
                      layer_module=adapter.layer_module_path(engine.spec.layer),
                      settings_hash=engine.settings_hash(), describe=engine.describe(),
                      dtype=str(adapter.dtype).removeprefix("torch."), device=str(adapter.device),
                      prompt=getattr(adapter, "prompt_style", None), cpu=cpu_info(),
                      batch_size=int(engine.batch_size))


@dataclass
class RaySweepReport:
    planned: int
    already_stored: int
    generated: int
    batches: int
    seconds: float
    workers: int
    tokens: int = 0  # generated tokens of the rows stored by this run
    worker_restarts: int = 0
    shards: int = 0
    per_case_extras: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        restarts = f", {self.worker_restarts} worker restarts" if self.worker_restarts else ""
        return (f"{self.planned} rows planned, {self.already_stored} already stored, {self.generated} generated "
                f"in {self.batches} batches on {self.workers} Ray workers ({self.shards} shards{restarts}, "
                f"{self.seconds:.1f} s)")


class SweepJob:
    """A sweep worker's job: one engine (one model) and one store connection, shards of whole cases."""

    def __init__(self, engine_factory: Callable[[], Any], store_url: str) -> None:
        self.engine = engine_factory()
        self.store = StudyStore(store_url)

    def info(self) -> EngineInfo:
        return engine_info(self.engine)

    def run_shard(self, part: tuple[Mapping[str, Mapping[str, Any]], Sequence[Any]]) -> dict[str, Any]:
        cases, rows = part
        report = self.engine.sweep(self.store, cases, rows, progress=False)
        return {"generated": report.generated, "already_stored": report.already_stored,
                "batches": report.batches, "extras": dict(report.per_case_extras)}


class ShardWorker:
    """The Ray actor of every distributed command: builds its job once (a model, an extractor, a
    judge: whatever is expensive to load), then runs shards of work with `job.run_shard`."""

    def __init__(self, job_factory: Callable[[], Any], threads: int) -> None:
        os.environ["OMP_NUM_THREADS"] = str(max(1, threads))
        self.job: Any = None
        self.error: str | None = None
        try:
            self.job = job_factory()
        except RadsteerError as exc:  # kept, not raised: Ray would turn it into a traceback of the actor's death
            self.error = str(exc)
        if "torch" in sys.modules:  # only where the job runs a model; evaluation workers need no torch
            sys.modules["torch"].set_num_threads(max(1, threads))

    def pid(self) -> int:
        """This worker's process id, once its job is built; why it could not be built, as one line."""
        if self.error is not None:
            raise RadsteerError(f"a Ray worker could not start: {self.error}")
        return os.getpid()

    def call(self, method: str, *args: Any) -> Any:
        self.pid()  # a restarted worker whose job failed to build says why
        return getattr(self.job, method)(*args)

    def placement(self, requested_device: str) -> dict[str, Any]:
        """Where this worker runs: its GPUs, what CUDA shows it, the device it loads a model on."""
        gpus = assigned_gpu_ids()
        return {"pid": os.getpid(), "gpu_ids": gpus, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "device": worker_device(requested_device, gpus)}

    def run(self, part: Any) -> dict[str, Any]:
        pid = self.pid()
        return {"out": self.job.run_shard(part), "pid": pid}


def assigned_gpu_ids() -> list[str]:
    """The GPUs Ray gave this worker (Ray also narrows CUDA_VISIBLE_DEVICES to them); [] off Ray."""
    try:
        import ray
    except ImportError:
        return []
    if not ray.is_initialized():
        return []
    return [str(g) for g in ray.get_gpu_ids()]


def worker_device(requested: str, gpu_ids: Sequence[Any]) -> str:
    """The device a Ray worker loads its model on.

    A worker that Ray gave a GPU uses it: `cuda:0`, the first (only) device CUDA_VISIBLE_DEVICES
    shows it — whatever index the protocol names, since each worker sees only its own GPU. A
    worker without one runs on the CPU (`auto` included, so that workers never pile onto a GPU
    that Ray did not schedule); a protocol that asks for CUDA without `gpus_per_worker` is refused.
    """
    if gpu_ids:
        return "cuda:0"
    if requested.startswith("cuda"):
        raise RadsteerError(f"model.device is {requested!r} but the Ray workers were given no GPU: set "
                            "execution.gpus_per_worker: 1 so that Ray gives each worker its own GPU")
    return "cpu" if requested == "auto" else requested


def check_store_for_ray(store_url: str, options: ExecutionOptions) -> None:
    """A cluster's workers may run on other machines, which cannot reach a local SQLite file."""
    if options.address not in (None, "", "local") and is_sqlite(store_url):
        raise RadsteerError(
            f"--ray-address {options.address}: workers on other machines cannot write the SQLite file "
            f"{public_url(store_url)}; give a database server with --store-url postgresql+psycopg://USER@HOST/DB")


def start_ray(options: ExecutionOptions) -> bool:
    """Start a local Ray sized for `options` (workers × CPUs and GPUs per worker), or join the cluster
    at `options.address`; nothing when Ray is already running in this process. Returns whether it
    started one (the caller then stops it)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    o = options
    kwargs: dict[str, Any] = dict(include_dashboard=False, configure_logging=False, log_to_driver=False)
    if o.address in (None, "", "local"):
        kwargs["num_cpus"] = max(1, math.ceil(o.workers * o.cpus_per_worker))
        if o.gpus_per_worker:
            kwargs["num_gpus"] = math.ceil(o.workers * o.gpus_per_worker)
    else:
        check_reachable(o.address)
        kwargs["address"] = o.address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RadsteerError(f"could not start or join Ray ({o.address or 'local'}): "
                            f"{str(exc).strip().splitlines()[0]}") from None
    return True


@contextmanager
def ray_session(options: ExecutionOptions) -> Iterator[None]:
    """One Ray for several steps (`radsteer run`: the sweep's and the evaluation's workers), stopped
    at the end if this started it; nothing for the local executor."""
    started = start_ray(options) if options.executor == "ray" else False
    try:
        yield
    finally:
        if started:
            _ray().shutdown()


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in one line when nothing listens at a cluster address: Ray itself retries an unreachable
    head node for minutes, printing warnings, before it gives up. `auto` is left to Ray."""
    import socket

    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RadsteerError(f"--ray-address {address}: expected HOST:PORT (e.g. head-node:6379), ray://HOST:PORT "
                            "or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise RadsteerError(f"--ray-address {address}: no Ray head answers there ({exc.strerror or exc}); start one "
                            "with `ray start --head` or leave the address out for a local Ray") from None


def shard(case_ids: Sequence[str], per_task: int) -> list[list[str]]:
    return [list(case_ids[i:i + per_task]) for i in range(0, len(case_ids), per_task)]


def cases_per_shard(rows_per_case: Sequence[int], options: ExecutionOptions, batch_size: int = 1) -> int:
    """Cases in one shard of work: `options.cases_per_task` when set; else, from about four shards
    per worker (the progress bar moves a shard at a time, and the last shards balance the workers)
    up to an equal split, the smallest shard size whose shards finish within 2 % of the soonest
    possible on `options.workers` workers, counted in batches. A shard's last batch is its only
    partly filled one and costs about as much as a full one: on small sweeps (9 rows a case,
    batches of 8) 4-case shards ran 20 batches where one process ran 18 (16 cases), while at paper
    scale (1,729 rows a case) every size is as good and four shards per worker it is."""
    if options.cases_per_task:
        return options.cases_per_task
    n, workers = len(rows_per_case), max(1, options.workers)
    if n < 1:
        return 1

    upto = [0, *accumulate(rows_per_case)]

    def finish(per_task: int) -> int:  # batches on the busiest worker, shards dealt to the least busy
        load = [0] * workers
        for i in range(0, n, per_task):
            rows = upto[min(n, i + per_task)] - upto[i]
            load[load.index(min(load))] += math.ceil(rows / max(1, batch_size))
        return max(load)

    sizes = range(max(1, math.ceil(n / (4 * workers))), math.ceil(n / workers) + 1)
    times = {k: finish(k) for k in sizes}
    best = min(times.values())
    return min(k for k, t in times.items() if t <= best * 1.02)


def fill_order(busy: Sequence[int], per_worker: int, queued: int) -> list[int]:
    """Which workers get the next queued parts, given how many each is running: one part to every
    worker before a second to any (filling the first worker up first left the second idle whenever
    there were no more parts than workers × per_worker)."""
    busy, order = list(busy), []
    for depth in range(1, per_worker + 1):
        for i, n in enumerate(busy):
            if len(order) < queued and n < depth:
                busy[i] += 1
                order.append(i)
    return order


def _ray():
    try:
        import ray
    except ImportError:
        raise RadsteerError("--executor ray needs Ray: pip install 'radsteer[distributed]'") from None
    return ray


def _cause(exc: BaseException) -> BaseException:
    return getattr(exc, "cause", None) or exc


class RayPool:
    """Ray started (or joined) and `options.workers` ShardWorker actors, each built once by
    `job_factory` (with `gpus_per_worker` GPUs and `cpus_per_worker` CPUs); `map` runs shards on them
    until every one is done. Used as a context manager: the actors are killed at the end, and a
    Ray this pool started is shut down again (a Ray already running in this process is left alone)."""

    def __init__(self, job_factory: Callable[[], Any], options: ExecutionOptions) -> None:
        if options.workers < 1:
            raise RadsteerError(f"workers must be ≥ 1, not {options.workers}")
        self.factory, self.options = job_factory, options
        self.ray = _ray()
        self.actors: list[Any] = []
        self._pids: dict[Any, int] | None = None
        self.restarts = 0
        self._started = False

    def __enter__(self) -> RayPool:
        """Start Ray and the workers, without waiting for them: each builds its job (loads a model)
        in the background while this process does its own preparation (planning the rows)."""
        ray, o = self.ray, self.options
        self._started = start_ray(o)  # whether this pool must stop Ray again
        try:
            actor_cls = ray.remote(num_cpus=o.cpus_per_worker, num_gpus=o.gpus_per_worker or None,
                                   max_restarts=o.max_restarts, max_task_retries=-1)(ShardWorker)
            self.actors = [actor_cls.remote(self.factory, o.threads_per_worker) for _ in range(o.workers)]
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    @property
    def pids(self) -> dict[Any, int]:
        """Each worker's process id, once every worker has built its job (waits for that; a job
        that could not be built is raised here as its one-line RadsteerError)."""
        if self._pids is None:
            self._pids = dict(zip(self.actors, self.get([a.pid.remote() for a in self.actors])))
        return self._pids

    def __exit__(self, *exc: object) -> None:
        for a in self.actors:
            self.ray.kill(a, no_restart=True)
        self.actors = []
        self._pids = None
        if self._started:
            self.ray.shutdown()
            self._started = False

    def get(self, refs: Any) -> Any:
        """ray.get, with a worker's own RadsteerError (bad model path, missing key ...) as one line."""
        try:
            return self.ray.get(refs)
        except Exception as exc:  # noqa: BLE001
            cause = _cause(exc)
            if isinstance(cause, RadsteerError):
                raise RadsteerError(str(cause)) from None
            raise

    def call_all(self, method: str, *args: Any) -> list[Any]:
        """`job.method(*args)` on every worker (e.g. what engine each one built)."""
        return self.get([a.call.remote(method, *args) for a in self.actors])

    def call_one(self, method: str, *args: Any) -> Any:
        """`job.method(*args)` on one worker (e.g. writing a merged result)."""
        return self.get(self.actors[0].call.remote(method, *args))

    def map(self, parts: Sequence[Any], on_result: Callable[[Any, Any], None], *, per_worker: int = 2) -> None:
        """Run every part with `job.run_shard(part)`, keeping each live worker busy with up to
        `per_worker` parts; `on_result(part, output)` runs on the driver as each one finishes.
        A part whose worker died is queued again (Ray restarts the worker; committed work is
        skipped through the store's keys); a worker that died for good hands its parts on."""
        ray = self.ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        pids = self.pids
        queue = deque(parts)
        alive = list(self.actors)
        inflight: dict[Any, tuple[Any, Any]] = {}
        while queue or inflight:
            busy = [sum(1 for a, _ in inflight.values() if a is actor) for actor in alive]
            for i in fill_order(busy, per_worker, len(queue)):
                part = queue.popleft()
                inflight[alive[i].run.remote(part)] = (alive[i], part)
            if not inflight:
                raise RadsteerError(f"every Ray worker died and could not be restarted; {len(queue)} shards of "
                                    "work are left (run the command again to finish them)")
            ready, _ = ray.wait(list(inflight), num_returns=1)
            actor, part = inflight.pop(ready[0])
            try:
                res = self.get(ready[0])
            except (ActorDiedError, ActorUnavailableError, RayActorError):
                if actor in alive:
                    alive.remove(actor)
                queue.appendleft(part)
                continue
            if pids.get(actor) != res["pid"]:  # Ray restarted this worker (a new process)
                self.restarts += 1
                pids[actor] = res["pid"]
            on_result(part, res["out"])


class RaySweep:
    """The sweep on a RayPool: shards of whole cases, rows written by the workers.

    Used as a context manager, the workers start loading their models on entry, so the caller
    can plan the rows meanwhile (on a small machine the driver's planning and the workers'
    start-up were a third of a short sweep, one after the other); `run` alone starts and stops
    its own pool. `on_ready(info)` runs on the driver once the workers have built their engines
    and before any row is generated (the caller records the manifest there). `on_workers(pids)`
    is for tests and monitoring: the workers' process ids, once they are up."""

    def __init__(self, engine_factory: Callable[[], Any], store_url: str, options: ExecutionOptions) -> None:
        if options.workers < 1:
            raise RadsteerError(f"workers must be ≥ 1, not {options.workers}")
        check_store_for_ray(store_url, options)
        self.factory, self.store_url, self.options = engine_factory, store_url, options
        self._pool: RayPool | None = None
        self._start = 0.0
        _ray()

    def __enter__(self) -> RaySweep:
        self._start = time.perf_counter()
        self._pool = RayPool(partial(SweepJob, self.factory, self.store_url), self.options).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.__exit__(*exc)

    def run(
        self,
        cases: Mapping[str, Mapping[str, Any]],
        rows: Sequence[Any],
        *,
        progress: bool = True,
        on_ready: Callable[[EngineInfo], None] | None = None,
        on_workers: Callable[[list[int]], None] | None = None,
    ) -> RaySweepReport:
        from tqdm.auto import tqdm

        if self._pool is None:
            with self:
                return self.run(cases, rows, progress=progress, on_ready=on_ready, on_workers=on_workers)
        start, o, pool = self._start, self.options, self._pool
        infos = pool.call_all("info")
        if len({i.settings_hash for i in infos}) != 1:
            raise RadsteerError("the Ray workers built different engines (settings hashes "
                                f"{sorted({i.settings_hash for i in infos})}); give every node the same "
                                "model files and package versions")
        info = infos[0]
        if on_ready is not None:
            on_ready(info)
        if on_workers is not None:
            on_workers(list(pool.pids.values()))
        with StudyStore(self.store_url) as store:
            done = store.generation_keys(info.settings_hash)
        todo = [r for r in rows if r.key() not in done]
        by_case: dict[str, list[Any]] = defaultdict(list)
        for r in todo:
            by_case[r.case_id].append(r)
        per_task = cases_per_shard([len(v) for v in by_case.values()], o, info.batch_size)
        parts = [({c: cases[c] for c in ids}, [r for c in ids for r in by_case[c]])
                 for ids in shard(list(by_case), per_task)]
        report = RaySweepReport(planned=len(rows), already_stored=len(rows) - len(todo), generated=0,
                                batches=0, seconds=0.0, workers=o.workers, shards=len(parts))
        bar = tqdm(total=len(todo), unit="row", desc=f"generating on {o.workers} Ray workers",
                   disable=not progress, dynamic_ncols=True)

        def done_part(part: Any, out: dict[str, Any]) -> None:
            report.batches += out["batches"]
            report.per_case_extras.update(out["extras"])
            bar.update(len(part[1]))

        try:
            pool.map(parts, done_part)
        finally:
            bar.close()
        report.worker_restarts = pool.restarts
        report.generated = len(todo)
        wanted = {r.key() for r in todo}
        with StudyStore(self.store_url) as store:
            report.tokens = sum(int(g["n_tokens"]) for g in store.rows("generations", settings_hash=info.settings_hash)
                                if (g["case_id"], g["feature_id"], float(g["alpha"])) in wanted)
        report.seconds = time.perf_counter() - start
        return report
