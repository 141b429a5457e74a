"""`radsteer vectors build PROTOCOL [--force]`: concept vectors (difference of means) for a protocol.

Reads the protocol's `features.concepts` (positive and negative example sentences per concept),
runs them through the protocol's model, and writes one direction per concept at the steering
layer to `features.path` in the SAELens layout (see steering/concept_vectors.py for the scale).
Vectors that already match the protocol's sentences, layer and scale are kept unless --force.
"""

from __future__ import annotations

import argparse

from steering.errors import RadsteerError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["build"], help="build: compute and save the concept vectors")
    parser.add_argument("protocol", help="study protocol (YAML) with features.source: concept")
    parser.add_argument("--force", action="store_true", help="rebuild even if current vectors exist")
    parser.add_argument("--batch-size", type=int, default=16, help="sentences per forward pass (default 16)")


def run(args: argparse.Namespace) -> int:
    from protocols.study import Study

    if args.batch_size < 1:
        raise RadsteerError(f"--batch-size must be ≥ 1, not {args.batch_size}")
    study = Study.from_protocol(args.protocol)
    study.ensure_concept_vectors(force=args.force, batch_size=args.batch_size)
    return 0
