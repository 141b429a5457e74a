"""`radsteer sweep PROTOCOL`: generate every feature × α × case row; resumable."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("protocol", help="study protocol (YAML)")
    parser.add_argument("--runs-dir", default="runs", help="where runs/<name>/ is written (default: runs)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N cases (a quick look)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    from protocols.execution import add_execution_arguments

    add_execution_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from protocols.study import Study

    study = Study.from_protocol(args.protocol, args.runs_dir, limit=args.limit)
    study.check_run_dir()
    _ = study.cases  # read and check the cases before loading any model
    from protocols.execution import execution_options, sweep_on_ray

    options = execution_options(study, args)
    if options.executor == "ray":  # the workers load the model; this process only dispatches
        report = sweep_on_ray(study, options, progress=not args.no_progress)
        print(f"radsteer sweep: {report.summary()}")
        print(f"radsteer sweep: study stored in {study.run_dir}")
        return 0
    bank = study.load_bank()
    adapter = study.load_adapter()
    engine = study.engine(adapter, bank)
    with study.open_store() as store:
        study.record(store, engine, bank)
        report = engine.sweep(store, study.cases, study.planned_rows(bank), progress=not args.no_progress)
    print(f"radsteer sweep: {report.summary()}")
    print(f"radsteer sweep: study stored in {study.run_dir}")
    return 0
