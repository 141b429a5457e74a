"""Shared stub for subcommands whose issue is not done yet."""

from __future__ import annotations

import argparse
import sys


def not_yet(name: str, issue: str) -> int:
    print(f"radsteer {name}: not implemented yet (tracked in the issue '{issue}')", file=sys.stderr)
    return 2


def add_passthrough(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
