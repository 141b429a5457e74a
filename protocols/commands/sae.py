"""`radsteer sae train`: a TopK SAE for a model's steering layer, trained by EleutherAI's sparsify.

    radsteer sae train --corpus REPORTS.jsonl --layer 8 --out saes/demo-l8            # the demo model
    radsteer sae train --model-kind hf_causal_lm --model /models/llama --corpus R.jsonl --layer 15 --out DIR

The corpus is JSONL, one `{"id", "text"}` per line (the same file `radsteer mine` reads). The
folder written is sparsify's layout (`cfg.json` + `sae.safetensors`) plus `radsteer.json` (trainer,
version, corpus hash, layer, held-out FVU); point a protocol's `features.path` at it (`source: sae`).
Running it again with the same corpus and settings reuses the SAE; see steering/sae_training.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from protocols.config import add_options
from steering.errors import RadsteerError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["train"], help="train: train (or reuse) an SAE")
    parser.add_argument("--corpus", required=True, help="JSONL of reports, one {\"id\", \"text\"} per line")
    parser.add_argument("--layer", type=int, required=True, help="decoder layer whose output the SAE reads")
    parser.add_argument("--out", required=True, help="folder to write (created; an existing foreign folder is refused)")
    parser.add_argument("--model-kind", choices=["demo", "hf_causal_lm"], default="demo",
                        help="demo (bundled SmolLM2, default) or hf_causal_lm (with --model)")
    parser.add_argument("--model", default=None, help="local model directory (not needed for the demo model)")
    parser.add_argument("--dtype", default="float32", help="model dtype while reading activations (default float32)")
    parser.add_argument("--expansion-factor", type=int, default=8, help="latents per model dimension (default 8)")
    parser.add_argument("-k", "--k", type=int, default=16, help="active latents per token (TopK; default 16)")
    parser.add_argument("--seq-len", type=int, default=64, help="tokens per training sequence (default 64)")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per step (default 16)")
    parser.add_argument("--epochs", type=int, default=1, help="passes over the corpus (default 1)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: sparsify's for the width)")
    parser.add_argument("--max-tokens", type=int, default=None, help="use at most this many corpus tokens")
    parser.add_argument("--seed", type=int, default=0, help="seed of the SAE's initialisation and batch order "
                        "(default 0)")
    parser.add_argument("--force", action="store_true", help="replace an SAE radsteer trained with other settings")
    add_options(parser, "sae")  # --threads, --no-progress (protocols/config.py)


def run(args: argparse.Namespace) -> int:
    from protocols.config import resolve
    from steering.models import load_adapter
    from steering.sae_training import SAETrainSettings, train_sae

    config = resolve("sae", args)  # no protocol: flags, else defaults

    if args.model_kind == "hf_causal_lm" and not args.model:
        raise RadsteerError("--model-kind hf_causal_lm needs --model (a local model directory)")
    if args.max_tokens is not None and args.max_tokens < args.seq_len:
        raise RadsteerError(f"--max-tokens must be at least --seq-len ({args.seq_len}), not {args.max_tokens}")
    settings = SAETrainSettings(layer=args.layer, expansion_factor=args.expansion_factor, k=args.k,
                                seq_len=args.seq_len, batch_size=args.batch_size, epochs=args.epochs, lr=args.lr,
                                seed=args.seed, max_tokens=args.max_tokens)
    corpus = Path(args.corpus)
    if not corpus.is_file():
        raise RadsteerError(f"--corpus {corpus}: file not found (a JSONL file with one {{\"id\", \"text\"}} per line)")
    if config.ui.threads is not None:
        import torch

        torch.set_num_threads(config.ui.threads)
    adapter = load_adapter(args.model_kind, args.model, dtype=args.dtype, device="cpu")
    result = train_sae(adapter, corpus, Path(args.out), settings, force=args.force, progress=not config.ui.no_progress)
    print(f"radsteer sae: {result.summary()}")
    return 0
