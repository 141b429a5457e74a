"""`radsteer validate PROTOCOL`: check a protocol, its files and the model/SAE widths, generating nothing.

Reads the model's config.json (or the demo model's GGUF header) for its hidden size and layer
count — never the weights — and the feature bank for its width and feature ids. Writes nothing.
"""

from __future__ import annotations

import argparse

from protocols.config import add_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("protocol", help="study protocol (YAML)")
    add_options(parser, "validate")  # --runs-dir (protocols/config.py)


def run(args: argparse.Namespace) -> int:
    from protocols.plan import check_study, describe
    from protocols.runner import study_and_config

    study, _ = study_and_config(args.protocol, "validate", args)
    study.check_run_dir()
    checked = check_study(study)
    print("radsteer validate: OK")
    for line in describe(checked):
        print(f"  {line}")
    for w in checked.warnings:
        print(f"  note: {w}")
    return 0
