"""`radsteer concepts [QUERY]` — the concepts a feature may target, searchable.

Lists every finding, device, longitudinal and textual concept of the vocabulary (anatomy too
with `--category anatomy`) with its id, category and name; a QUERY keeps the concepts whose id,
name or a synonym contains all of its words (`radsteer concepts effusion`).
"""

from __future__ import annotations

import argparse
import json

from evaluation.vocabulary import CATEGORIES, TARGET_CATEGORIES, load_vocabulary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", nargs="*", help="words to search for in ids, names and synonyms")
    parser.add_argument("--category", choices=CATEGORIES, default=None,
                        help="only this category (default: every category a target may name)")
    parser.add_argument("--synonyms", action="store_true", help="also print each concept's synonyms")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def run(args: argparse.Namespace) -> int:
    vocab = load_vocabulary()
    wanted = (args.category,) if args.category else TARGET_CATEGORIES
    found = [c for c in vocab.search(" ".join(args.query)) if c.kind in wanted]
    for c in found:
        if args.json:
            print(json.dumps(c.to_json()))
            continue
        print(f"{c.id:28s} {c.kind:13s} {c.name}")
        if args.synonyms:
            for phrase in dict.fromkeys((*c.names, *c.synonyms)):
                print(f"{'':28s} {'':13s}   {phrase}")
    if not found:
        print(f"no concept matches {' '.join(args.query)!r}" if args.query else "no concepts")
        return 1
    return 0
