"""Which executor runs a study's sweep: this process (`local`, the default) or Ray workers.

The protocol's `execution:` section sets it, command-line flags override it. On Ray the driver
loads no model: each worker rebuilds the study's engine from the protocol file
(`build_worker_engine`), the driver records the manifest from the workers' engine and
dispatches whole cases (steering.distributed).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import fields, replace
from functools import partial
from typing import Any

from protocols.study import Study
from steering.distributed import EXECUTORS, ExecutionOptions, RaySweep, RaySweepReport, check_store_for_ray
from steering.store import resolve_url


def add_execution_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", choices=EXECUTORS, default=None,
                        help="local: this process (default); ray: worker actors (pip install radsteer[distributed])")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="join this Ray cluster (default: start a local Ray for the run)")
    parser.add_argument("--workers", type=int, default=None, metavar="N", help="Ray workers (default 2)")


def execution_options(study: Study, args: argparse.Namespace | None = None) -> ExecutionOptions:
    """The protocol's `execution:` section, overridden by --executor / --ray-address / --workers."""
    section = study.protocol.execution.model_dump()
    opts = ExecutionOptions(**{f.name: section[f.name] for f in fields(ExecutionOptions) if f.name in section})
    if args is not None:
        over = {"executor": getattr(args, "executor", None), "address": getattr(args, "ray_address", None),
                "workers": getattr(args, "workers", None)}
        opts = replace(opts, **{k: v for k, v in over.items() if v is not None})
        if over["address"] is not None and getattr(args, "executor", None) is None:
            opts = replace(opts, executor="ray")  # an address means Ray
    if opts.workers < 1:
        from steering.errors import RadsteerError

        raise RadsteerError(f"--workers must be ≥ 1, not {opts.workers}")
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
