"""`radsteer annotate RUN_DIR` — serve the radiologists' annotation app, add users, export.

Queue and blinding settings: a flag, else the run's frozen protocol.yaml (`annotation:` section), else
the one default of protocols/config.py (blinded, disagreements first, overlap 0.2, seed 0).

    radsteer annotate runs/study                         # http://127.0.0.1:7860, both tasks + adjudication
    radsteer annotate runs/study --task feature --overlap 0.2 --seed 0   # serve only this task
    radsteer annotate runs/study --show-automated --no-disagreements-first   # override the protocol
    radsteer annotate runs/study --add-user alice         # asks for a password (or --password-stdin)
    radsteer annotate runs/study --add-user bob --task change             # bob reads only the change task
    radsteer annotate runs/study --add-user carol --adjudicator           # resolves disagreements and flags
    radsteer annotate runs/study --remove-user bob                        # his sessions end at once
    radsteer annotate runs/study --export annotations.parquet
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from protocols.config import Config, add_options, resolve_for_run_dir
from protocols.errors import RadsteerError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the study directory (holds study.sqlite)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; any other needs an annotators file)")
    parser.add_argument("--port", type=int, default=None, help="port (default: first free from 7860)")
    parser.add_argument("--task", choices=["change", "feature"], action="append", default=None,
                        help="change validation (baseline vs steered report) or feature validity; repeatable. "
                             "Serving: the tasks this server offers (default both). With --add-user: the "
                             "tasks assigned to that annotator (default all)")
    parser.add_argument("--assignments", metavar="FILE", default=None,
                        help='JSON {"annotator": ["change", "feature"], …}: tasks per annotator (overrides '
                             "the tasks stored with each account)")
    # --annotators, --overlap, --seed, --[no-]disagreements-first, --blinded/--show-automated, --store-url:
    # flag, else the frozen protocol's `annotation:` section, else the one default (protocols/config.py)
    add_options(parser, "annotate")
    parser.add_argument("--add-user", metavar="NAME", help="add or update an annotator, then exit")
    parser.add_argument("--admin", action="store_true", help="with --add-user: an admin (progress view, no queue)")
    parser.add_argument("--adjudicator", action="store_true",
                        help="with --add-user: an adjudicator (final answers on disagreements and flagged items)")
    parser.add_argument("--remove-user", metavar="NAME", help="remove an account (its sessions end), then exit")
    parser.add_argument("--password-stdin", action="store_true", help="with --add-user: read the password from stdin")
    parser.add_argument("--export", metavar="FILE", help="write the annotations to FILE (.csv/.parquet), then exit")


SETTING_KEYS = ("annotate.overlap", "annotate.seed", "annotate.disagreements_first", "annotate.blinded",
                "annotate.annotators_file")


def annotate_config(args: argparse.Namespace | None, run_dir: Path, **flags: object) -> Config:
    """The app's settings: flag, else RUN_DIR/protocol.yaml's `annotation:` section, else the default.

    A frozen protocol that does not validate stops here (strict): blinding and overlap are part of the
    study's method, so they are never silently replaced by defaults.
    """
    return resolve_for_run_dir("annotate", args, run_dir, strict=True, flags=flags or None)


def accounts_file(config: Config, run_dir: Path) -> Path:
    chosen = config.annotate.annotators_file
    return Path(chosen) if chosen else run_dir / "annotators.json"


def _where(config: Config, run_dir: Path) -> str:
    """How to name the annotators file's origin in an error: the flag, or the protocol field."""
    if config.sources["annotate.annotators_file"] == "flag":
        return "--annotators"
    return f"{run_dir / 'protocol.yaml'}: annotation.annotators_file"


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    from steering.store import has_study

    if not has_study(run_dir):  # before anything is written: a mistyped RUN_DIR creates nothing
        raise RadsteerError(f"{run_dir}: no study.sqlite here; run `radsteer sweep` first or check the path")
    if args.export:  # needs no settings: a broken protocol.yaml never keeps the annotations in
        from annotation_ui.export import export_annotations
        from steering.store import StudyStore

        with StudyStore.open(run_dir) as store:
            n = export_annotations(store, args.export)
        print(f"{n} annotations written to {args.export}")
        return 0
    config = annotate_config(args, run_dir)
    accounts_path = accounts_file(config, run_dir)
    if args.add_user:
        from annotation_ui.accounts import add_user

        if args.admin and args.adjudicator:
            raise RadsteerError("--admin and --adjudicator: choose one role")
        role = "admin" if args.admin else "adjudicator" if args.adjudicator else "annotator"
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass(
            f"password for {args.add_user}: ")
        add_user(accounts_path, args.add_user, password, role=role, tasks=tuple(args.task) if args.task else None)
        print(f"{role} {args.add_user!r} saved in {accounts_path} (their old sessions, if any, have ended)")
        return 0
    if args.remove_user:
        from annotation_ui.accounts import Accounts

        Accounts(accounts_path).remove(args.remove_user)
        print(f"{args.remove_user!r} removed from {accounts_path} (their sessions have ended)")
        return 0
    from annotation_ui.accounts import Accounts
    from annotation_ui.app import check_serving, open_app

    opts = config.annotate
    if opts.annotators_file and not accounts_path.exists():
        raise RadsteerError(f"{_where(config, run_dir)}: {accounts_path}: file not found; create it with "
                            f"`radsteer annotate {run_dir} --add-user NAME`")
    check_serving(args.host, Accounts(accounts_path) if accounts_path.exists() else None)  # before any work
    tasks = tuple(dict.fromkeys(args.task)) if args.task else ("change", "feature")
    app = open_app(run_dir, tasks, annotators=opts.annotators_file, overlap=opts.overlap, seed=opts.seed,
                   disagreements_first=opts.disagreements_first, show_automated=not opts.blinded,
                   assignments=args.assignments)
    if not (run_dir / "protocol.yaml").exists():
        print(f"radsteer annotate: note: {run_dir} has no protocol.yaml: settings are flags and defaults",
              file=sys.stderr)
    print(f"radsteer annotate: settings {config.explain(SETTING_KEYS[:4])}", flush=True)
    who = f"{len(app.accounts)} accounts from {accounts_path}" if app.accounts else "single local user, no login"
    print(f"radsteer annotate: tasks {', '.join(tasks)}, {who}; Ctrl+C to stop", flush=True)
    app.launch(args.host, args.port, block=True)
    return 0
