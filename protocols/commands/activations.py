"""`radsteer activations RUN_DIR`: the mechanistic check of a finished sweep.

Every steered report is read back through the unsteered model and the target feature's
activation (mean and max over the report's tokens) is stored beside the baseline report's, in
the `activation_checks` table (see `steering.activation_check`). Resumable.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from protocols.config import add_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the study directory (holds protocol.yaml, study.sqlite)")
    parser.add_argument("--batch-size", type=int, default=8, help="reports per forward pass (default 8)")
    parser.add_argument("--without-prompt", action="store_true",
                        help="read each report alone instead of after its case's prompt")
    add_options(parser, "activations")  # --no-progress, --store-url (protocols/config.py)


def study_for_run_dir(run_dir: Path):
    """The Study of a run directory, from its frozen protocol.

    Relative paths in a protocol are relative to the original file, so the original (named in
    the manifest) is used when it still exists with the same content; otherwise the frozen copy.
    """
    from protocols.loader import load_protocol
    from protocols.study import PROTOCOL_FILENAME, Study
    from steering.errors import RadsteerError
    from steering.store import DB_FILENAME, has_study, read_manifest

    frozen = run_dir / PROTOCOL_FILENAME
    if not frozen.is_file() or not has_study(run_dir):
        raise RadsteerError(f"{run_dir} is not a study run directory (needs {PROTOCOL_FILENAME} and {DB_FILENAME}); "
                            f"run `radsteer sweep PROTOCOL` first")
    loaded = load_protocol(frozen)
    original = read_manifest(run_dir).get("protocol_path")
    if original and Path(original).is_file():
        candidate = load_protocol(original)
        if candidate.canonical_hash() == loaded.canonical_hash():
            loaded = candidate
    return Study(loaded, run_dir)


def run(args: argparse.Namespace) -> int:
    from protocols.config import resolve
    from steering.activation_check import ActivationChecker
    from steering.store import StudyStore

    run_dir = Path(args.run_dir)
    study = study_for_run_dir(run_dir)
    config = resolve("activations", args, protocol=study.protocol, protocol_dir=study.loaded.base_dir)
    bank = study.load_bank()
    adapter = study.load_adapter()
    checker = ActivationChecker(adapter, bank, study.protocol.layer, with_prompt=not args.without_prompt,
                                batch_size=args.batch_size)
    with StudyStore.open(run_dir) as store:
        report = checker.run(store, progress=not config.ui.no_progress)
    print(f"radsteer activations: {report.summary()}")
    print(f"radsteer activations: stored in {run_dir} (table activation_checks)")
    return 0
