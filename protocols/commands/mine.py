"""`radsteer mine PROTOCOL --corpus REPORTS.jsonl`: top-activating contexts of every feature.

Runs a corpus of reports (JSONL, one {"id", "text"} per line) through the study's unsteered
model, reads the steering layer with the SAE encoder (or projects onto the concept vectors) and
stores per feature its top-k contexts, a sample of active and of non-activating contexts, its
frequency and its activation quantiles (see `steering.mining`). Resumable: run the same
command again after an interruption and it continues from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from protocols.config import add_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("protocol", help="study protocol (YAML)")
    parser.add_argument("--corpus", required=True, help="JSONL of reports, one {\"id\", \"text\"} per line")
    parser.add_argument("--top-k", type=int, default=20, help="top-activating contexts kept per feature (default 20)")
    parser.add_argument("--samples", type=int, default=10,
                        help="random active contexts kept per feature, spread over its range (default 10)")
    parser.add_argument("--zero-samples", type=int, default=5,
                        help="random non-activating contexts kept per feature (default 5)")
    parser.add_argument("--window", type=int, default=5, help="context tokens on each side (default 5)")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per report; the rest is not mined")
    parser.add_argument("--features", choices=["all", "study"], default="all",
                        help="all features of the bank (default) or only the protocol's features")
    parser.add_argument("--batch-size", type=int, default=8, help="reports per forward pass (default 8)")
    parser.add_argument("--checkpoint-every", type=int, default=50,
                        help="batches between resumable checkpoints (default 50)")
    add_options(parser, "mine")  # --runs-dir, --no-progress, --store-url (protocols/config.py)


def run(args: argparse.Namespace) -> int:
    from protocols.runner import study_and_config
    from steering.errors import RadsteerError
    from steering.mining import FeatureMiner, MiningSettings, count_docs

    corpus = Path(args.corpus)
    if not corpus.is_file():
        raise RadsteerError(f"--corpus {corpus}: file not found (a JSONL file with one {{\"id\", \"text\"}} per line)")
    settings = MiningSettings(top_k=args.top_k, n_quantile=args.samples, n_zero=args.zero_samples,
                              window=args.window, max_length=args.max_length)
    if count_docs(corpus) == 0:
        raise RadsteerError(f"--corpus {corpus} holds no reports")
    study, config = study_and_config(args.protocol, "mine", args)
    study.check_run_dir()
    from protocols.execution import execution_options

    options = execution_options(study, config)
    if options.executor == "ray":  # whole planning chunks of the corpus on Ray workers (protocols.execution)
        from protocols.execution import mine_on_ray

        report, info = mine_on_ray(study, options, corpus, settings=settings, study_features=args.features == "study",
                                   batch_size=args.batch_size, progress=not config.ui.no_progress)
        _write_mining_json(study, corpus, info["key"], info["layer_module"], info["reader"], info["n_features"],
                           settings)
        print(f"radsteer mine: {report.summary()} on {options.workers} Ray workers")
        print(f"radsteer mine: stored in {study.run_dir} (tables feature_contexts, feature_stats)")
        return 0
    bank = study.load_bank()
    adapter = study.load_adapter()
    features = study.feature_ids(bank) if args.features == "study" else None
    miner = FeatureMiner(adapter, bank, study.protocol.layer, feature_ids=features, settings=settings,
                         batch_size=args.batch_size, checkpoint_every=args.checkpoint_every)
    with study.open_store() as store:
        study.record(store, study.engine(adapter, bank), bank)
        report = miner.run(store, corpus, progress=not config.ui.no_progress)
    from steering.store.manifest import sha256_file

    _write_mining_json(study, corpus, miner.mining_key(sha256_file(corpus)),
                       adapter.layer_module_path(study.protocol.layer), miner.reader.kind, len(miner.feature_ids),
                       settings)
    print(f"radsteer mine: {report.summary()}")
    print(f"radsteer mine: stored in {study.run_dir} (tables feature_contexts, feature_stats)")
    return 0


def _write_mining_json(study, corpus: Path, key: str, layer_module: str, reader: str, n_features: int,
                       settings) -> None:
    from steering.store.files import write_atomic
    from steering.store.manifest import sha256_file

    write_atomic(study.run_dir / "mining.json", json.dumps({
        "corpus": str(corpus.resolve()), "corpus_sha256": sha256_file(corpus), "corpus_hash": key,
        "layer": study.protocol.layer, "layer_module": layer_module, "reader": reader,
        "n_features": n_features, "settings": settings.describe(),
    }, indent=2) + "\n")
