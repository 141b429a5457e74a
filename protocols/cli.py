"""The `radsteer` command line.

Each subcommand lives in `protocols/commands/<name>.py` with `add_arguments(parser)` and
`run(args) -> int`; modules are imported only when their subcommand runs, so `radsteer stats`
never pays for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from protocols.errors import RadsteerError

COMMANDS: dict[str, str] = {
    "sweep": "generate steered reports for every feature × α × case of a protocol",
    "evaluate": "label every steered report of a study (entity diff, LLM judge, combined)",
    "label": "label steered/baseline pairs from a JSONL file produced anywhere",
    "annotate": "serve the radiologists' annotation app for a study",
    "stats": "on/off-target rates, dose-response and agreement statistics of a study",
    "report": "write the self-contained HTML study report",
    "run": "sweep → evaluate → stats → report, each step resumable",
    "demo": "the whole pipeline on the bundled SmolLM2 model, offline, on the CPU",
    "validate": "check a protocol, its files and the model/SAE widths without generating",
    "generate": "steer one case and print the baseline and steered reports side by side",
    "mine": "top-activating contexts of every feature over a corpus of reports",
    "activations": "read steered texts back through the model: the target feature's activation",
    "vectors": "build concept vectors (difference of means) in the SAELens layout",
    "sae": "train a TopK SAE on a model's steering layer over a report corpus (EleutherAI sparsify)",
    "interpret": "explain every mined feature and score the explanations by detection (F1)",
    "concepts": "list and search the concepts a feature may target (findings, devices, longitudinal, textual)",
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="radsteer",
        description="Clinician-validated steering studies of radiology report generators.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers = {}
    for name, help_text in COMMANDS.items():
        subparsers[name] = sub.add_parser(name, help=help_text, description=help_text)
    return parser, subparsers


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, subparsers = build_parser()
    name = argv[0] if argv and argv[0] in COMMANDS else None
    if name is None:
        args = parser.parse_args(argv)  # prints help / usage errors
        parser.print_help()
        return 2
    module = importlib.import_module(f"protocols.commands.{name}")
    try:
        module.add_arguments(subparsers[name])  # may list plugins (e.g. extractors): a broken one is one line
    except (RadsteerError, ValueError, ImportError) as exc:
        print(f"radsteer {name}: error: {exc}", file=sys.stderr)
        return 2
    _one_line_warnings(name)
    from protocols.config import BY_KEY

    store_url = BY_KEY["store.url"]  # added by add_options to every command that opens a study
    args = parser.parse_args(argv)
    if getattr(args, "print_config", False):  # what the command would use, and where each value came from
        from protocols.config import config_for_args, print_config

        try:
            print_config(config_for_args(name, args))
        except RadsteerError as exc:
            print(f"radsteer {name}: error: {exc}", file=sys.stderr)
            return 2
        return 0
    from steering.store.location import STORE_URL_ENV

    saved = os.environ.get(STORE_URL_ENV)
    if getattr(args, store_url.dest, None):  # every StudyStore.open of this command, and its workers
        os.environ[STORE_URL_ENV] = getattr(args, store_url.dest)
    try:
        return int(module.run(args) or 0)
    except RadsteerError as exc:
        print(f"radsteer {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"radsteer {name}: interrupted; everything finished so far is stored — run again to resume",
              file=sys.stderr)
        return 130
    finally:  # a caller's environment (e.g. tests calling main) is left as it was
        if saved is None:
            os.environ.pop(STORE_URL_ENV, None)
        else:
            os.environ[STORE_URL_ENV] = saved


def _one_line_warnings(name: str) -> None:
    """radsteer's own warnings print as one line, like its errors (no source line, no traceback)."""
    import warnings

    from steering.errors import RadsteerWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, RadsteerWarning):
            print(f"radsteer {name}: warning: {message}", file=file or sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


if __name__ == "__main__":
    raise SystemExit(main())
