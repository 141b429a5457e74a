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
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
    cases_per_task: int | None = None  # None: about four shards per worker
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


def engine_info(engine: Any) -> EngineInfo:
    from steering.cpu import cpu_info  # imports torch: only where a model runs

    adapter = engine.adapter
    return EngineInfo(name=adapter.name, path=str(adapter.path) if adapter.path else None,
                      layer_module=adapter.layer_module_path(engine.spec.layer),
                      settings_hash=engine.settings_hash(), describe=engine.describe(),
                      dtype=str(adapter.dtype).removeprefix("torch."), device=str(adapter.device),
                      prompt=getattr(adapter, "prompt_style", None), cpu=cpu_info())


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


class SweepWorker:
    """The actor: one engine (one model), one store connection, shards of whole cases."""

    def __init__(self, engine_factory: Callable[[], Any], store_url: str, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.engine = engine_factory()
        self.store = StudyStore(store_url)

    def pid(self) -> int:
        return os.getpid()

    def info(self) -> EngineInfo:
        return engine_info(self.engine)

    def sweep(self, cases: Mapping[str, Mapping[str, Any]], rows: Sequence[Any]) -> dict[str, Any]:
        report = self.engine.sweep(self.store, cases, rows, progress=False)
        return {"generated": report.generated, "already_stored": report.already_stored,
                "batches": report.batches, "extras": dict(report.per_case_extras), "pid": os.getpid()}


def check_store_for_ray(store_url: str, options: ExecutionOptions) -> None:
    """A cluster's workers may run on other machines, which cannot reach a local SQLite file."""
    if options.address not in (None, "", "local") and is_sqlite(store_url):
        raise RadsteerError(
            f"--ray-address {options.address}: workers on other machines cannot write the SQLite file "
            f"{public_url(store_url)}; give a database server with --store-url postgresql+psycopg://USER@HOST/DB")


def shard(case_ids: Sequence[str], per_task: int) -> list[list[str]]:
    return [list(case_ids[i:i + per_task]) for i in range(0, len(case_ids), per_task)]


def _ray():
    try:
        import ray
    except ImportError:
        raise RadsteerError("--executor ray needs Ray: pip install 'radsteer[distributed]'") from None
    return ray


def _cause(exc: BaseException) -> BaseException:
    return getattr(exc, "cause", None) or exc


class RaySweep:
    """Start (or join) Ray, start the workers, then run shards until every planned row is stored.

    `on_ready(info)` runs on the driver once the workers have built their engines and before
    any row is generated (the caller records the manifest there). `on_workers(pids)` is for
    tests and monitoring: the workers' process ids, once they are up."""

    def __init__(self, engine_factory: Callable[[], Any], store_url: str, options: ExecutionOptions) -> None:
        if options.workers < 1:
            raise RadsteerError(f"workers must be ≥ 1, not {options.workers}")
        check_store_for_ray(store_url, options)
        self.factory, self.store_url, self.options = engine_factory, store_url, options
        self.ray = _ray()

    def _start_ray(self) -> bool:
        """Returns whether this run started Ray (and so must stop it)."""
        ray = self.ray
        if ray.is_initialized():
            return False
        o = self.options
        kwargs: dict[str, Any] = dict(include_dashboard=False, configure_logging=False, log_to_driver=False)
        if o.address in (None, "", "local"):
            kwargs["num_cpus"] = max(1, math.ceil(o.workers * o.cpus_per_worker))
            if o.gpus_per_worker:
                kwargs["num_gpus"] = math.ceil(o.workers * o.gpus_per_worker)
        else:
            kwargs["address"] = o.address
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RadsteerError(f"could not start or join Ray ({o.address or 'local'}): "
                                f"{str(exc).strip().splitlines()[0]}") from None
        return True

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

        start = time.perf_counter()
        ray, o = self.ray, self.options
        started = self._start_ray()
        actor_cls = ray.remote(num_cpus=o.cpus_per_worker, num_gpus=o.gpus_per_worker or None,
                               max_restarts=o.max_restarts, max_task_retries=-1)(SweepWorker)
        actors = [actor_cls.remote(self.factory, self.store_url, o.threads_per_worker) for _ in range(o.workers)]
        try:
            try:
                infos = ray.get([a.info.remote() for a in actors])
            except Exception as exc:  # noqa: BLE001 - the worker's own error (bad model path, width ...)
                cause = _cause(exc)
                if isinstance(cause, RadsteerError):
                    raise RadsteerError(str(cause)) from None
                raise
            if len({i.settings_hash for i in infos}) != 1:
                raise RadsteerError("the Ray workers built different engines (settings hashes "
                                    f"{sorted({i.settings_hash for i in infos})}); give every node the same "
                                    "model files and package versions")
            info = infos[0]
            if on_ready is not None:
                on_ready(info)
            pids = ray.get([a.pid.remote() for a in actors])
            if on_workers is not None:
                on_workers(pids)
            with StudyStore(self.store_url) as store:
                done = store.generation_keys(info.settings_hash)
            todo = [r for r in rows if r.key() not in done]
            by_case: dict[str, list[Any]] = defaultdict(list)
            for r in todo:
                by_case[r.case_id].append(r)
            per_task = o.cases_per_task or max(1, math.ceil(len(by_case) / (4 * o.workers)))
            shards = deque(shard(list(by_case), per_task))
            report = RaySweepReport(planned=len(rows), already_stored=len(rows) - len(todo), generated=0,
                                    batches=0, seconds=0.0, workers=o.workers, shards=len(shards))
            bar = tqdm(total=len(todo), unit="row", desc=f"generating on {o.workers} Ray workers",
                       disable=not progress, dynamic_ncols=True)
            try:
                self._dispatch(actors, dict(zip(actors, pids)), shards, cases, by_case, report, bar)
            finally:
                bar.close()
            report.generated = len(todo)
            wanted = {r.key() for r in todo}
            with StudyStore(self.store_url) as store:
                report.tokens = sum(int(g["n_tokens"]) for g in store.rows("generations", settings_hash=info.settings_hash)
                                    if (g["case_id"], g["feature_id"], float(g["alpha"])) in wanted)
            report.seconds = time.perf_counter() - start
            return report
        finally:
            for a in actors:
                ray.kill(a, no_restart=True)
            if started:
                ray.shutdown()

    def _dispatch(self, actors: list[Any], pids: dict[Any, int], shards: deque, cases: Mapping[str, Mapping[str, Any]],
                  by_case: Mapping[str, list[Any]], report: RaySweepReport, bar: Any) -> None:
        """Keep every live worker busy with up to two shards; a shard whose worker died for
        good goes back to the queue for the others."""
        ray = self.ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        alive = list(actors)
        inflight: dict[Any, tuple[Any, list[str]]] = {}

        def submit(actor: Any) -> None:
            part = shards.popleft()
            sub_cases = {c: cases[c] for c in part}
            sub_rows = [r for c in part for r in by_case[c]]
            inflight[actor.sweep.remote(sub_cases, sub_rows)] = (actor, part)

        while shards or inflight:
            for actor in alive:
                while shards and sum(1 for a, _ in inflight.values() if a is actor) < 2:
                    submit(actor)
            if not inflight:
                raise RadsteerError("every Ray worker died and could not be restarted; "
                                    f"{sum(len(by_case[c]) for s in shards for c in s)} rows are left (run again)")
            ready, _ = ray.wait(list(inflight), num_returns=1)
            ref = ready[0]
            actor, part = inflight.pop(ref)
            try:
                out = ray.get(ref)
            except (ActorDiedError, ActorUnavailableError, RayActorError):
                if actor in alive:
                    alive.remove(actor)
                shards.appendleft(part)  # its committed rows are skipped when the shard runs again
                continue
            except Exception as exc:  # noqa: BLE001
                cause = _cause(exc)
                if isinstance(cause, RadsteerError):
                    raise RadsteerError(str(cause)) from None
                raise
            report.batches += out["batches"]
            report.per_case_extras.update(out["extras"])
            if pids.get(actor) != out["pid"]:  # Ray restarted this worker (a new process)
                report.worker_restarts += 1
            pids[actor] = out["pid"]
            bar.update(sum(len(by_case[c]) for c in part))
