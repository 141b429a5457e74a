"""Which executor runs a study's sweep: this process (`local`, the default) or Ray workers.

The protocol's `execution:` section sets it, command-line flags override it. On Ray the driver
loads no model: each worker rebuilds the study's engine from the protocol file
(`build_worker_engine`), the driver records the manifest from the workers' engine and
dispatches whole cases (steering.distributed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from functools import partial
from typing import Any

from protocols.study import Study
from steering.distributed import ExecutionOptions, RaySweep, RaySweepReport, check_store_for_ray
from steering.store import resolve_url


def execution_options(study: Study, config: Any = None) -> ExecutionOptions:
    """The protocol's `execution:` section, with the resolved --executor / --ray-address / --workers
    (protocols.config) on top; an address alone means Ray."""
    section = study.protocol.execution.model_dump()
    opts = ExecutionOptions(**{f.name: section[f.name] for f in fields(ExecutionOptions) if f.name in section})
    if config is not None:
        over = {"executor": config.get("execution.executor"), "address": config.get("execution.address"),
                "workers": config.get("execution.workers")}
        opts = replace(opts, **{k: v for k, v in over.items() if v is not None})
        if opts.address and config.sources.get("execution.executor") != "flag":
            opts = replace(opts, executor="ray")
    return opts


def build_worker_engine(protocol_path: str, runs_dir: str, limit: int | None) -> Any:
    """Run inside each Ray worker: the study's engine, exactly as the local executor builds it."""
    study = Study.from_protocol(protocol_path, runs_dir, limit=limit)
    bank = study.load_bank()
    adapter = study.load_adapter()
    return study.engine(adapter, bank)


def sweep_on_ray(study: Study, options: ExecutionOptions, *, progress: bool = True,
                 on_workers: Callable[[list[int]], None] | None = None) -> RaySweepReport:
    """The whole sweep on Ray workers; concept vectors must be current (built beforehand)."""
    study.check_run_dir()
    check_store_for_ray(resolve_url(study.run_dir), options)  # before anything is written
    _ = study.cases  # read and check the cases before any worker starts
    bank = study.load_bank()
    rows = study.planned_rows(bank)
    with study.open_store() as store:
        url = store.url
    factory = partial(build_worker_engine, str(study.loaded.path.resolve()), str(study.run_dir.parent.resolve()),
                      study.limit)

    def ready(info) -> None:
        with study.open_store() as store:
            study.record(store, info, bank)

    return RaySweep(factory, url, options).run(study.cases, rows, progress=progress, on_ready=ready,
                                               on_workers=on_workers)
