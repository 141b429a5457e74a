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


def build(study, *, force: bool = False, batch_size: int = 16, adapter=None, quiet: bool = False):
    """Build the study's concept vectors unless current ones exist; returns (bank or None, adapter)."""
    fs = study.protocol.features
    if fs.source != "concept":
        raise RadsteerError(f"{study.loaded.where('features', 'source')}: `vectors build` needs source: concept")
    if not fs.concepts:
        raise RadsteerError(f"{study.loaded.where('features')}: no features.concepts to build vectors from")
    state = study.concept_vectors_state()
    if state == "current" and not force:
        if not quiet:
            print(f"radsteer vectors: {study.bank_path()} is up to date (use --force to rebuild)")
        return None, adapter
    study.check_vectors_target()  # before the model is loaded: refuse a folder radsteer did not write
    adapter = adapter or study.load_adapter()
    bank = study.build_concept_vectors(adapter, batch_size=batch_size)
    if not quiet:
        prov = bank.provenance
        print(f"radsteer vectors: {bank.n_features} concept vectors ({', '.join(bank.ids)}) at layer "
              f"{study.protocol.layer} of {adapter.name}, scaled to the median token norm "
              f"{prov['median_token_norm']:.1f} ({prov['scale']}), written to {study.bank_path()}")
    return bank, adapter


def run(args: argparse.Namespace) -> int:
    from protocols.study import Study

    if args.batch_size < 1:
        raise RadsteerError(f"--batch-size must be ≥ 1, not {args.batch_size}")
    study = Study.from_protocol(args.protocol)
    build(study, force=args.force, batch_size=args.batch_size)
    return 0
