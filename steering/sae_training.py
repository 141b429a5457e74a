"""Train a TopK sparse autoencoder on a model's steering layer with EleutherAI's sparsify.

radsteer does not train SAEs itself: `sparsify` (PyPI `eai-sparsify`, the `sae` extra) does,
with its own `Trainer` (TopK SAE, FVU loss, its default Signum + schedule-free optimiser). radsteer
prepares what the trainer reads and keeps what it writes:

- **Activations** are the output of decoder layer L — the steering point (`layers[L]`), the same
  hook point as the engine and the miner. Layer L's output depends only on layers ≤ L, so the
  trainer is handed the base transformer cut after L (the same modules, no copy, restored after):
  no final norm, no LM head, and for the demo (L = 8 of 30) a third of the full forward cost.
- **Tokens**: the corpus (JSONL `{"id", "text"}`) is tokenised and packed into sequences of
  `seq_len` tokens, each starting with the end-of-text token as a separator; separators are
  excluded from training (`exclude_tokens`), so position 0 — an attention sink whose hidden state
  is an outlier — is never a training example, as it is never mined.
- **Output**: sparsify's own run layout — `OUT/<hookpoint>/` (e.g. `OUT/layers.8/`, the name
  giving the layer) with `cfg.json` + `sae.safetensors`, what `SparseCoder.save_to_disk` writes
  and `steering.sae_loaders` reads — plus `radsteer.json` in that folder:
  trainer, its version, corpus SHA-256, model, layer and module path, settings, tokens seen and
  the fraction of variance unexplained (FVU) on held-out tokens. Written beside the target and
  renamed into place, so an interrupted run never leaves a half-written SAE.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from steering.adapters import ModelAdapter
from steering.errors import RadsteerError
from steering.mining import read_corpus
from steering.store import stable_hash
from steering.store.manifest import sha256_file

TRAINER = "eai-sparsify"
META_FILE = "radsteer.json"
INSTALL_HINT = "SAE training needs EleutherAI's sparsify: pip install 'radsteer[sae]' (PyPI eai-sparsify)"


@dataclass(frozen=True)
class SAETrainSettings:
    """Everything that changes the trained SAE (part of its cache key)."""

    layer: int
    expansion_factor: int = 8
    k: int = 16  # active latents per token (TopK)
    seq_len: int = 64  # tokens per training sequence (packed documents)
    batch_size: int = 16  # sequences per optimiser step
    epochs: int = 1  # passes over the corpus (each shuffled with `seed`)
    lr: float | None = None  # None: sparsify's default for the width
    seed: int = 0
    max_tokens: int | None = None  # cap on corpus tokens used (None: all)

    def __post_init__(self) -> None:
        for name in ("expansion_factor", "k", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise RadsteerError(f"SAE training setting {name} must be at least 1, not {getattr(self, name)}")
        if self.seq_len < 2:
            raise RadsteerError(f"SAE training setting seq_len must be at least 2, not {self.seq_len}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise RadsteerError(f"SAE training setting lr must be a positive number, not {self.lr}")

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainedSAE:
    path: Path  # the hookpoint folder (cfg.json + sae.safetensors + radsteer.json): a protocol's features.path
    meta: dict[str, Any]
    reused: bool  # True when an identical SAE was already there (nothing trained)

    def summary(self) -> str:
        m = self.meta
        what = "reused" if self.reused else f"trained in {m.get('seconds', 0):.1f} s"
        return (f"SAE {m['num_latents']} latents (k={m['settings']['k']}) at {m['layer_module']}: {what}, "
                f"{m['n_tokens']} tokens × {m['settings']['epochs']} epoch(s), held-out FVU {m['fvu_heldout']:.3f} "
                f"({self.path})")


def sparsify_version() -> str:
    try:
        import sparsify
    except ModuleNotFoundError as exc:
        raise RadsteerError(INSTALL_HINT) from exc
    return str(getattr(sparsify, "__version__", "unknown"))


def training_key(adapter: ModelAdapter, corpus_sha256: str, settings: SAETrainSettings,
                 model_id: str | None = None) -> str:
    """Hash of what decides the SAE: model (`model_id`, default its name and path), corpus, settings
    and trainer version."""
    model = model_id or [adapter.name, adapter.path]
    return stable_hash({"model": model, "dtype": str(adapter.dtype),
                        "corpus": corpus_sha256, "settings": settings.describe(),
                        "trainer": [TRAINER, sparsify_version()]})[:16]


def read_meta(folder: Path) -> dict[str, Any] | None:
    """radsteer's provenance of an SAE folder it trained, or None (not ours / unreadable)."""
    try:
        data = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def pack_sequences(adapter: ModelAdapter, corpus: Path, settings: SAETrainSettings) -> tuple[torch.Tensor, int]:
    """Corpus → [N, seq_len] token ids, each row starting with the separator; returns it and the separator."""
    tok = adapter.tokenizer
    sep = adapter.eos_token_ids[0] if adapter.eos_token_ids else adapter.pad_token_id
    stream: list[int] = []
    for doc in read_corpus(corpus):
        ids = tok(doc.text, add_special_tokens=False)["input_ids"]
        stream.append(sep)
        stream.extend(int(i) for i in ids)
        if settings.max_tokens is not None and len(stream) >= settings.max_tokens:
            stream = stream[: settings.max_tokens]
            break
    body = settings.seq_len - 1
    rows = [[sep, *stream[i : i + body]] for i in range(0, len(stream) - body + 1, body)]
    if not rows:
        raise RadsteerError(f"corpus {corpus} is too small: {len(stream)} tokens, fewer than one sequence "
                            f"of {settings.seq_len}")
    return torch.tensor(rows, dtype=torch.long), sep


def _layers_path(adapter: ModelAdapter) -> str:
    base = adapter.model.base_model
    path = next((name for name, mod in base.named_modules() if mod is adapter.layers), None)
    if not path:
        raise RadsteerError(f"cannot find the decoder layers of {adapter.name} inside its base model")
    return path


def hookpoint(adapter: ModelAdapter, layer: int) -> str:
    """sparsify's name of layer L's output: the module path inside the base model (`layers.8`)."""
    return f"{_layers_path(adapter)}.{layer % adapter.num_layers}"


@contextlib.contextmanager
def cut_after_layer(adapter: ModelAdapter, layer: int):
    """Yield the base transformer running only layers 0..L (modules shared, restored on exit)."""
    base = adapter.model.base_model
    path = _layers_path(adapter)
    parent = base.get_submodule(path.rpartition(".")[0]) if "." in path else base
    attr = path.rpartition(".")[2]
    full = getattr(parent, attr)
    setattr(parent, attr, nn.ModuleList(list(full)[: layer % len(full) + 1]))
    try:
        yield base
    finally:
        setattr(parent, attr, full)


@torch.inference_mode()
def heldout_fvu(sae: Any, adapter: ModelAdapter, layer: int, seqs: torch.Tensor, sep: int) -> float:
    """Fraction of variance unexplained on held-out sequences (separator positions excluded)."""
    from steering.feature_reader import LayerReader

    reader = LayerReader(adapter, layer)
    xs = [reader.hidden(chunk, torch.ones_like(chunk))[chunk != sep].float().cpu() for chunk in seqs.split(16)]
    x = torch.cat(xs)
    err = sum(float((sae(part.to(sae.device)).sae_out.float().cpu() - part).pow(2).sum()) for part in x.split(2048))
    return err / float((x - x.mean(0)).pow(2).sum())


def train_sae(
    adapter: ModelAdapter,
    corpus: str | Path,
    out: str | Path,
    settings: SAETrainSettings,
    *,
    force: bool = False,
    progress: bool = True,
    model_id: str | None = None,
) -> TrainedSAE:
    """Train (or reuse) the SAE for `settings.layer` of `adapter` on `corpus`, into `out/<hookpoint>/`.

    `out` is created by radsteer: an existing folder without radsteer's `radsteer.json` is never
    touched; one trained with other settings is replaced only with `force`. `model_id` names the
    model in the reuse key when its path is not stable (the demo model lives in a user cache).
    """
    corpus, out = Path(corpus), Path(out)
    if not corpus.is_file():
        raise RadsteerError(f"corpus not found: {corpus} (a JSONL file with one {{\"id\", \"text\"}} per line)")
    adapter.layer(settings.layer)  # a clear error for a layer the model lacks
    hook = hookpoint(adapter, settings.layer)
    corpus_sha = sha256_file(corpus)
    key = training_key(adapter, corpus_sha, settings, model_id)
    if out.exists():
        meta = read_meta(out / hook)
        if meta is None or sorted(p.name for p in out.iterdir()) != [hook]:
            raise RadsteerError(f"{out} exists and was not written by `radsteer sae train` for layer {settings.layer}; "
                                f"it is left untouched: choose another --out")
        if meta.get("key") == key:
            return TrainedSAE(out / hook, meta, reused=True)
        if not force:
            raise RadsteerError(f"{out} holds an SAE trained from another corpus or settings "
                                f"(corpus {meta.get('corpus_sha256', '?')[:12]}…): pass --force to replace it")
    version = sparsify_version()
    from datasets import Dataset
    from sparsify import SaeConfig, SparseCoder, TrainConfig, Trainer

    seqs, sep = pack_sequences(adapter, corpus, settings)
    n_held = max(1, len(seqs) // 20)  # 5 % of sequences held out for the FVU
    gen = torch.Generator().manual_seed(settings.seed)
    order = torch.randperm(len(seqs), generator=gen)
    held, train = seqs[order[:n_held]], seqs[order[n_held:]]
    if len(train) < settings.batch_size:
        raise RadsteerError(f"corpus {corpus} gives {len(train)} training sequences, fewer than one batch of "
                            f"{settings.batch_size}: use a larger corpus or a smaller --batch-size")
    rng = random.Random(settings.seed)
    epochs = []
    for _ in range(settings.epochs):
        idx = list(range(len(train)))
        rng.shuffle(idx)
        epochs.append(train[idx])
    data = Dataset.from_dict({"input_ids": torch.cat(epochs).tolist()}).with_format("torch")

    work = out.with_name(f".{out.name}.training-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)  # our own leftover from a killed run of this process id
    start = time.perf_counter()
    precision = torch.get_float32_matmul_precision()
    try:
        with cut_after_layer(adapter, settings.layer) as base:
            cfg = TrainConfig(
                SaeConfig(expansion_factor=settings.expansion_factor, k=settings.k),
                batch_size=settings.batch_size, lr=settings.lr, hookpoints=[hook],
                init_seeds=[settings.seed], exclude_tokens=[sep], log_to_wandb=False,
                save_dir=str(work), run_name="run", save_every=10**9,
            )
            quiet = io.StringIO()  # the trainer prints its set-up; keep the user's terminal for ours
            with contextlib.redirect_stdout(quiet), \
                    (contextlib.nullcontext() if progress else contextlib.redirect_stderr(quiet)):  # its tqdm bar
                Trainer(cfg, data, base).fit()
        torch.set_float32_matmul_precision(precision)  # sparsify sets "high" process-wide
        folder = work / "run" / hook
        sae = SparseCoder.load_from_disk(folder)
        fvu = heldout_fvu(sae, adapter, settings.layer, held, sep)
        meta = {
            "key": key, "trainer": TRAINER, "trainer_version": version, "trainer_config": cfg.to_dict(),
            "corpus": str(corpus.resolve()), "corpus_sha256": corpus_sha, "model": adapter.name,
            "model_path": adapter.path, "dtype": str(adapter.dtype).removeprefix("torch."),
            "layer": settings.layer, "layer_module": adapter.layer_module_path(settings.layer),
            "hookpoint": hook, "settings": settings.describe(), "num_latents": int(sae.num_latents),
            "n_tokens": int((train != sep).sum()), "n_heldout_tokens": int((held != sep).sum()),
            "fvu_heldout": fvu, "seconds": time.perf_counter() - start,
        }
        stage = out.with_name(f".{out.name}.new-{os.getpid()}")
        shutil.rmtree(stage, ignore_errors=True)
        (stage / hook).mkdir(parents=True)
        for name in ("cfg.json", "sae.safetensors"):
            shutil.copyfile(folder / name, stage / hook / name)
        (stage / hook / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        _replace_dir(stage, out)
    finally:
        torch.set_float32_matmul_precision(precision)
        shutil.rmtree(work, ignore_errors=True)
    return TrainedSAE(out / hook, meta, reused=False)


def _replace_dir(stage: Path, out: Path) -> None:
    """Put `stage` at `out` by renames only; `out`, if any, is radsteer's (checked by the caller)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists():
        try:
            stage.rename(out)
            return
        except OSError:  # another process put one there meanwhile
            pass
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    out.rename(old)
    stage.rename(out)
    shutil.rmtree(old, ignore_errors=True)
