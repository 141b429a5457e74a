"""Feature evidence: the token contexts of a report corpus that make each feature fire.

Radiologists judge a feature's interpretation from the texts that activate it. `FeatureMiner`
runs a corpus (JSONL, one `{"id", "text"}` per line) through the *unsteered* model in padded
batches, reads the output of the steering layer `layers[L]`, encodes it with the SAE encoder
(or projects it onto unit-normalised concept vectors, see `steering.feature_reader`) and keeps,
for every feature:

- **top** — its `top_k` highest-activating token contexts over the whole corpus;
- **quantile** — a uniform random sample of the tokens where it is active (activation > 0):
  sorted by activation, these spread over the feature's range, so mid-range examples are shown
  beside the extremes;
- **zero** — a uniform random sample of tokens where it is not active (non-activating examples);
- **stats** — number of tokens, frequency (fraction of tokens with activation > 0), maximum,
  and quantiles of the active activations.

Memory is bounded by features × k, never by corpus size. Each kind is a *streaming top-k*:
per feature a running [k] tensor of scores (the activation, or a pseudo-random key for the
samples) with the positions and context windows of its entries; every batch proposes its own
top-k candidates per feature and `torch.topk` over [k + candidates] keeps the best. Random keys
are a hash of (document, position), so sampling needs no random state, is reproducible, and a
resumed run samples exactly what an uninterrupted one would.

Quantiles come from a fixed-bin histogram per feature over a known range in log space:
`n_bins` bins spanning 10^lo … 10^hi (default 1e-4 … 1e4, 128 bins: 16 bins per decade, i.e.
bins ~15 % wide, interpolated geometrically within a bin); values outside the range are
counted in the first/last bin. A histogram's error is relative and bounded, needs no second
pass and merges trivially, which reservoir-based quantiles do not offer.

Which tokens count: padding, special tokens (BOS/EOS/…) and each document's position 0 (the
BOS, or without one an attention sink whose hidden state is an outlier) are never mined and
never appear in a context window; documents are truncated at `max_length` tokens.

Resumable: every `checkpoint_every` batches the running state (safetensors bytes in
`mining_state`) and the ids of the documents it covers (`mining_progress`) are committed in
one transaction, so a killed run resumes from the last checkpoint without counting any
document twice. Both are keyed by a hash of the corpus file and of every setting that changes
the result (model, bank, layer, features, k, window, …), so a changed setting starts afresh.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from tqdm.auto import tqdm

from steering.adapters import ModelAdapter, pad_batch
from steering.errors import RadsteerError
from steering.feature_bank import FeatureBank
from steering.feature_reader import FeatureReader, LayerReader
from steering.jsonl import iter_jsonl
from steering.store import StudyStore, stable_hash
from steering.store.manifest import sha256_file
from steering.store.repositories import MiningCheckpoint

KINDS = ("top", "quantile", "zero")
CHUNK_BATCHES = 32  # batches' worth of documents sorted by length together (`FeatureMiner.plan`)
_MASK31 = (1 << 31) - 1


# ---------------------------------------------------------------------------------------------
# settings and corpus
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MiningSettings:
    """Everything that changes what is mined (part of the resume key)."""

    top_k: int = 20
    n_quantile: int = 10  # size of the uniform sample of active tokens
    n_zero: int = 5  # size of the uniform sample of non-active tokens
    window: int = 5  # context tokens on each side
    max_length: int = 512  # tokens per document; the rest is not mined
    n_bins: int = 128
    log10_range: tuple[float, float] = (-4.0, 4.0)
    quantile_levels: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("top_k", "n_quantile", "n_zero", "n_bins"):
            if getattr(self, name) < 1:
                raise RadsteerError(f"mining setting {name} must be at least 1, not {getattr(self, name)}")
        if self.window < 0:
            raise RadsteerError(f"mining setting window must be 0 or more tokens, not {self.window}")
        if self.max_length < 2:
            raise RadsteerError(f"mining setting max_length must be at least 2 tokens, not {self.max_length}")
        lo, hi = self.log10_range
        if not lo < hi:
            raise RadsteerError(f"mining setting log10_range must be (low, high) with low < high, not {self.log10_range}")
        if any(not 0 < q < 1 for q in self.quantile_levels):
            raise RadsteerError(f"quantile levels must lie strictly between 0 and 1: {self.quantile_levels}")

    @property
    def width(self) -> int:
        return 2 * self.window + 1

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CorpusDoc:
    ordinal: int  # position among the corpus's documents (stable for a given file)
    doc_id: str
    text: str


def read_corpus(path: str | Path) -> Iterator[CorpusDoc]:
    """Stream a JSONL corpus of reports; each bad line is a one-line error naming file and line."""
    path = Path(path)
    seen: set[str] = set()  # the only per-document memory: ids, to refuse duplicates
    ordinal = 0
    for _lineno, where, rec in iter_jsonl(path, what="corpus"):
        if "id" not in rec or rec["id"] is None or str(rec["id"]).strip() == "":
            raise RadsteerError(f"{where}: missing field \"id\" (a unique document id)")
        if not isinstance(rec.get("text"), str):
            raise RadsteerError(f"{where}: field \"text\" must be a string (the report)")
        doc_id = str(rec["id"])
        if len(doc_id) > 200:
            raise RadsteerError(f"{where}: id is longer than 200 characters")
        if doc_id in seen:
            raise RadsteerError(f"{where}: duplicate id {doc_id!r}; document ids must be unique")
        seen.add(doc_id)
        yield CorpusDoc(ordinal, doc_id, rec["text"])
        ordinal += 1


def count_docs(path: str | Path) -> int:
    with open(path, encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def uniform_keys(doc: torch.Tensor, pos: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A reproducible pseudo-random number in [0, 1) per (document, position): a stateless hash."""
    x = (doc.long() * 1_000_003 + pos.long() * 7_919 + int(seed) * 15_485_863) & _MASK31
    for _ in range(3):  # multiply-xorshift rounds; products stay below 2^63
        x = ((x ^ (x >> 16)) * 0x45D9F3B) & _MASK31
    return x.double().div(float(1 << 31)).float()


# ---------------------------------------------------------------------------------------------
# streaming state
# ---------------------------------------------------------------------------------------------


class ContextTracker:
    """Per feature, the `size` entries with the highest scores seen so far, with their contexts.

    Feature-major tensors (one row per feature): score/act [F, size]; doc/pos [F, size];
    ctx_ids/ctx_acts [F, size, width]. Entries never filled keep score -inf; token id -1 marks
    a window slot outside the document.
    """

    _FIELDS = ("score", "act", "doc", "pos", "ctx_ids", "ctx_acts")

    def __init__(self, size: int, n_features: int, width: int, device: torch.device | str = "cpu") -> None:
        self.size, self.width = size, width
        self.score = torch.full((n_features, size), -math.inf, device=device)
        self.act = torch.zeros((n_features, size), device=device)
        self.doc = torch.full((n_features, size), -1, dtype=torch.long, device=device)
        self.pos = torch.full((n_features, size), -1, dtype=torch.int32, device=device)
        self.ctx_ids = torch.full((n_features, size, width), -1, dtype=torch.int32, device=device)
        self.ctx_acts = torch.zeros((n_features, size, width), device=device)

    def update(self, scores: torch.Tensor, batch: ActivationBatch) -> None:
        """Merge one batch, given its scores [F, N] (feature-major).

        Each feature proposes its batch's top candidates; only features where a candidate beats
        the current k-th entry are merged (top-k over [k + candidates]), so the work per batch
        shrinks as the running lists fill with high scores.
        """
        n = scores.shape[1]
        if n == 0:
            return
        r = min(self.size, n)
        cand_score, cand_idx = scores.topk(r, dim=1)  # [F, r]
        changed = (cand_score[:, 0] > self.score[:, -1]).nonzero(as_tuple=True)[0]
        if changed.numel() == 0:
            return
        cand_score, cand_idx = cand_score[changed], cand_idx[changed]  # [C, r]
        win = batch.windows[cand_idx]  # [C, r, W] indices into the batch's tokens (n = outside)
        acts_t = batch.acts_t[changed]  # [C, N]
        acts_pad = torch.cat([acts_t, acts_t.new_zeros(len(changed), 1)], dim=1)  # [C, N + 1]
        ids_pad = torch.cat([batch.token_ids.int(), batch.token_ids.new_full((1,), -1).int()])
        new = {
            "score": cand_score,
            "act": acts_t.gather(1, cand_idx),
            "doc": batch.doc[cand_idx],
            "pos": batch.pos[cand_idx].int(),
            "ctx_ids": ids_pad[win],
            "ctx_acts": acts_pad.gather(1, win.reshape(len(changed), -1)).reshape(win.shape),
        }
        merged = torch.cat([self.score[changed], cand_score], dim=1)
        sel = merged.topk(self.size, dim=1).indices  # [C, size], sorted by score
        for name in self._FIELDS:
            both = torch.cat([getattr(self, name)[changed], new[name]], dim=1)
            idx = sel if both.dim() == 2 else sel[..., None].expand(-1, -1, self.width)
            getattr(self, name)[changed] = both.gather(1, idx)

    def merge(self, other: ContextTracker) -> None:
        """Keep, per feature, the best `size` entries of this tracker and `other` (another shard's).

        Equal scores go to the earlier document, then the earlier position, so shards merged in any
        order give the same lists; the best k of the shards' best k are the best k of the corpus."""
        both = {n: torch.cat([getattr(self, n), getattr(other, n).to(self.score.device)], dim=1)
                for n in self._FIELDS}
        order = torch.argsort(both["pos"], dim=1, stable=True)
        order = order.gather(1, torch.argsort(both["doc"].gather(1, order), dim=1, stable=True))
        order = order.gather(1, torch.argsort(-both["score"].gather(1, order), dim=1, stable=True))
        sel = order[:, : self.size]
        for name in self._FIELDS:
            idx = sel if both[name].dim() == 2 else sel[..., None].expand(-1, -1, self.width)
            setattr(self, name, both[name].gather(1, idx))

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.{n}": getattr(self, n).contiguous().cpu() for n in self._FIELDS}

    def load(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        for n in self._FIELDS:
            old = getattr(self, n)
            new = state[f"{prefix}.{n}"]
            if new.shape != old.shape:
                raise RadsteerError(f"stored mining state has {prefix}.{n} of shape {tuple(new.shape)}, "
                                    f"expected {tuple(old.shape)}; delete the run's mining state to start afresh")
            setattr(self, n, new.to(old.device))


class ActivationHistogram:
    """Per-feature counts of active activations in fixed log-spaced bins (see module docstring)."""

    def __init__(self, n_features: int, n_bins: int, log10_range: tuple[float, float],
                 device: torch.device | str = "cpu") -> None:
        self.n_bins = n_bins
        self.lo, self.hi = log10_range
        self.step = (self.hi - self.lo) / n_bins
        self.counts = torch.zeros((n_features, n_bins), dtype=torch.long, device=device)

    def update(self, acts_t: torch.Tensor, active: torch.Tensor) -> None:
        """Count a batch's active values; `acts_t`/`active` are feature-major [F, N]."""
        feat, tok = active.nonzero(as_tuple=True)
        if tok.numel() == 0:
            return
        values = acts_t[feat, tok]
        bins = ((values.log10() - self.lo) / self.step).floor().clamp_(0, self.n_bins - 1).long()
        flat = self.counts.view(-1)
        flat += torch.bincount(feat * self.n_bins + bins, minlength=flat.numel())

    def active_counts(self) -> torch.Tensor:
        return self.counts.sum(1)

    def quantiles(self, levels: Sequence[float]) -> torch.Tensor:
        """[F, len(levels)] quantiles of the active activations (NaN for a never-active feature)."""
        counts = self.counts.double().cpu()
        total = counts.sum(1, keepdim=True)
        cum = counts.cumsum(1)
        out = torch.full((counts.shape[0], len(levels)), math.nan, dtype=torch.double)
        for j, q in enumerate(levels):
            target = q * total  # [F, 1]
            b = torch.searchsorted(cum, target).clamp_(max=self.n_bins - 1)  # first bin reaching target
            before = torch.where(b > 0, cum.gather(1, (b - 1).clamp(min=0)), torch.zeros_like(target))
            in_bin = counts.gather(1, b).clamp(min=1)
            frac = ((target - before) / in_bin).clamp(0, 1)
            value = torch.pow(10.0, self.lo + (b.double() + frac) * self.step)
            out[:, j] = torch.where(total > 0, value, torch.full_like(value, math.nan))[:, 0]
        return out


@dataclass
class ActivationBatch:
    """Activations of one padded batch, flattened to its mined tokens (row-major)."""

    acts: torch.Tensor  # [N, F]
    doc: torch.Tensor  # [N] corpus ordinal
    pos: torch.Tensor  # [N] position in the document's token sequence
    token_ids: torch.Tensor  # [N]
    windows: torch.Tensor  # [N, W] indices into the N tokens; N marks a slot outside the document
    doc_ids: list[str] = field(default_factory=list)  # every document of the batch (mined or empty)
    _acts_t: torch.Tensor | None = field(default=None, repr=False)

    @property
    def acts_t(self) -> torch.Tensor:
        """Feature-major activations [F, N] (computed once)."""
        if self._acts_t is None:
            self._acts_t = self.acts.T.contiguous()
        return self._acts_t


class MiningState:
    """The running state: three trackers, the histogram and the token count."""

    def __init__(self, n_features: int, settings: MiningSettings, device: torch.device | str = "cpu") -> None:
        s = settings
        self.trackers = {
            "top": ContextTracker(s.top_k, n_features, s.width, device),
            "quantile": ContextTracker(s.n_quantile, n_features, s.width, device),
            "zero": ContextTracker(s.n_zero, n_features, s.width, device),
        }
        self.histogram = ActivationHistogram(n_features, s.n_bins, s.log10_range, device)
        self.n_tokens = 0
        self.n_docs = 0
        self.seed = s.seed

    def update(self, batch: ActivationBatch) -> None:
        acts_t = batch.acts_t  # [F, N]
        active = acts_t > 0
        neg = torch.tensor(-math.inf, device=acts_t.device)
        keys = uniform_keys(batch.doc, batch.pos, self.seed).to(acts_t.device)[None, :]
        self.trackers["top"].update(torch.where(active, acts_t, neg), batch)
        self.trackers["quantile"].update(torch.where(active, keys, neg), batch)
        self.trackers["zero"].update(torch.where(active, neg, keys), batch)
        self.histogram.update(acts_t, active)
        self.n_tokens += int(batch.acts.shape[0])
        self.n_docs += len(batch.doc_ids)

    def merge(self, other: MiningState) -> None:
        """Add another shard's state (disjoint documents): contexts merged, counts added."""
        for kind, tracker in self.trackers.items():
            tracker.merge(other.trackers[kind])
        self.histogram.counts += other.histogram.counts.to(self.histogram.counts.device)
        self.n_tokens += other.n_tokens
        self.n_docs += other.n_docs

    def to_bytes(self) -> bytes:
        tensors: dict[str, torch.Tensor] = {"histogram": self.histogram.counts.contiguous().cpu(),
                                            "n_tokens": torch.tensor([self.n_tokens], dtype=torch.long)}
        for kind, tracker in self.trackers.items():
            tensors.update(tracker.state(kind))
        return st_save(tensors)

    def load_bytes(self, blob: bytes, n_docs: int) -> None:
        tensors = st_load(blob)
        for kind, tracker in self.trackers.items():
            tracker.load(tensors, kind)
        hist = tensors["histogram"]
        if hist.shape != self.histogram.counts.shape:
            raise RadsteerError("stored mining state does not match these settings; delete it to start afresh")
        self.histogram.counts = hist.to(self.histogram.counts.device)
        self.n_tokens = int(tensors["n_tokens"][0])
        self.n_docs = n_docs


# ---------------------------------------------------------------------------------------------
# the miner
# ---------------------------------------------------------------------------------------------


@dataclass
class MiningReport:
    docs_total: int = 0
    docs_already_mined: int = 0
    docs_mined: int = 0
    tokens_mined: int = 0
    docs_truncated: int = 0
    batches: int = 0
    checkpoints: int = 0
    features: int = 0
    contexts_stored: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        parts = [f"{self.docs_mined} documents mined ({self.tokens_mined} tokens)"]
        if self.docs_already_mined:
            parts.append(f"{self.docs_already_mined} already mined before (resumed)")
        if self.docs_truncated:
            parts.append(f"{self.docs_truncated} truncated")
        parts.append(f"{self.contexts_stored} contexts of {self.features} features stored")
        parts.append(f"{self.seconds:.1f} s")
        return "; ".join(parts)


class FeatureMiner:
    """Mines top-activating contexts, samples and statistics of a feature bank over a corpus.

    Args:
        adapter: the model (read unsteered).
        bank: the feature bank; its encoder reads SAE features, concept vectors are projected.
        layer: the steering layer L (its output is read).
        feature_ids: which features to mine (default: every feature of the bank).
        settings: `MiningSettings`.
        batch_size: documents per forward pass.
        checkpoint_every: batches between checkpoints of the running state.
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        bank: FeatureBank,
        layer: int,
        *,
        feature_ids: Sequence[str] | None = None,
        settings: MiningSettings | None = None,
        batch_size: int = 8,
        checkpoint_every: int = 50,
    ) -> None:
        if batch_size < 1:
            raise RadsteerError(f"--batch-size must be at least 1, not {batch_size}")
        if checkpoint_every < 1:
            raise RadsteerError(f"checkpoint_every must be at least 1 batch, not {checkpoint_every}")
        bank.check_width(adapter.hidden_size, adapter.name)
        self.adapter, self.bank, self.layer = adapter, bank, layer
        self.settings = settings or MiningSettings()
        self.batch_size, self.checkpoint_every = batch_size, checkpoint_every
        ids = list(bank.ids) if feature_ids is None else [bank.canonical_id(f) for f in feature_ids]
        if not ids:
            raise RadsteerError("no features to mine")
        self.feature_ids = ids
        self.layer_reader = LayerReader(adapter, layer)
        self.reader = FeatureReader(bank, [bank.index(f) for f in ids])
        self.device = adapter.device
        self._excluded = sorted(adapter.special_token_ids() | {adapter.pad_token_id})
        self.reader.to(self.device)
        self._display: dict[int, str] = {}
        ref = adapter.tokenizer("a", add_special_tokens=False)["input_ids"]
        self._ref = (int(ref[0]), adapter.tokenizer.decode([int(ref[0])])) if ref else None

    # -- identity ---------------------------------------------------------------------------
    def mining_key(self, corpus_sha256: str) -> str:
        """Hash of the corpus and of every setting that changes the result (the resume key)."""
        return stable_hash({
            "corpus": corpus_sha256, "model": [self.adapter.name, self.adapter.path],
            "bank": self.bank.provenance.get("sha256") or self.bank.provenance.get("path"),
            "layer": self.layer, "features": stable_hash(self.feature_ids), "reader": self.reader.kind,
            "settings": self.settings.describe(),
        })

    # -- batches ----------------------------------------------------------------------------
    def _tokenize(self, text: str) -> list[int]:
        ids = self.adapter.tokenizer(text, add_special_tokens=True)["input_ids"]
        return [int(i) for i in ids]

    def plan(self, docs: Iterator[CorpusDoc], chunk_batches: int = CHUNK_BATCHES) -> Iterator[list[tuple[CorpusDoc, list[int]]]]:
        """Batches of (document, token ids), sorted by length within chunks of the stream.

        Sorting within a bounded chunk keeps padding low without reading the corpus into memory;
        the plan depends only on the corpus and the batch size, so a resumed run forms the same
        batches as an uninterrupted one.
        """
        chunk: list[tuple[CorpusDoc, list[int]]] = []
        size = self.batch_size * chunk_batches

        def flush() -> Iterator[list[tuple[CorpusDoc, list[int]]]]:
            chunk.sort(key=lambda d: (len(d[1]), d[0].ordinal))
            for i in range(0, len(chunk), self.batch_size):
                yield chunk[i : i + self.batch_size]
            chunk.clear()

        for doc in docs:
            chunk.append((doc, self._tokenize(doc.text)))
            if len(chunk) >= size:
                yield from flush()
        if chunk:
            yield from flush()

    @torch.inference_mode()
    def activations(self, batch: Sequence[tuple[CorpusDoc, list[int]]]) -> ActivationBatch:
        """Run one batch (right-padded, attention-masked) and read its mined tokens' activations."""
        max_len = self.settings.max_length
        seqs = [ids[:max_len] for _, ids in batch]
        input_ids, mask = pad_batch(seqs, self.adapter.pad_token_id)
        valid = mask.bool() & ~torch.isin(input_ids, torch.tensor(self._excluded, dtype=torch.long))
        valid[:, 0] = False  # BOS or attention sink
        rows, cols = valid.nonzero(as_tuple=True)
        doc_ids = [d.doc_id for d, _ in batch]
        n_feat = self.reader.n_features
        if rows.numel() == 0:
            empty = torch.zeros(0, dtype=torch.long, device=self.device)
            return ActivationBatch(torch.zeros((0, n_feat), device=self.device), empty, empty, empty,
                                   torch.zeros((0, self.settings.width), dtype=torch.long, device=self.device),
                                   doc_ids)
        hidden = self.layer_reader.hidden(input_ids, mask)  # [B, T, d] on the model's device
        rows_d, cols_d = rows.to(hidden.device), cols.to(hidden.device)
        acts = self.reader(hidden[rows_d, cols_d]).float()
        n = rows.numel()
        offsets = torch.arange(-self.settings.window, self.settings.window + 1)
        idx = torch.arange(n)[:, None] + offsets[None, :]
        inside = (idx >= 0) & (idx < n)
        same_doc = inside & (rows[idx.clamp(0, n - 1)] == rows[:, None])
        windows = torch.where(same_doc, idx, torch.full_like(idx, n))
        ordinals = torch.tensor([d.ordinal for d, _ in batch], dtype=torch.long)
        dev = acts.device
        return ActivationBatch(acts, ordinals[rows].to(dev), cols.to(dev), input_ids[rows, cols].to(dev),
                               windows.to(dev), doc_ids)

    # -- the run ----------------------------------------------------------------------------
    def run(
        self,
        store: StudyStore,
        corpus: str | Path,
        *,
        progress: bool = True,
        on_batch: Callable[[int], None] | None = None,
    ) -> MiningReport:
        """Mine the corpus into the store, resuming any interrupted run with the same key.

        `on_batch(n_batches_done)` is called after each batch (tests use it to interrupt a run).
        """
        start = time.perf_counter()
        corpus = Path(corpus)
        if not corpus.is_file():
            raise RadsteerError(f"corpus not found: {corpus} (a JSONL file with one {{\"id\", \"text\"}} per line)")
        key = self.mining_key(sha256_file(corpus))
        state = MiningState(len(self.feature_ids), self.settings, self.device)
        checkpoint = store.mining_checkpoint(key)
        if checkpoint is not None:
            state.load_bytes(checkpoint.state, checkpoint.n_docs)
        report = MiningReport(docs_total=count_docs(corpus), docs_already_mined=state.n_docs,
                              features=len(self.feature_ids))
        pending: list[str] = []  # documents mined since the last checkpoint
        bar = tqdm(total=report.docs_total, initial=state.n_docs, unit="doc", desc="mining",
                   disable=not progress, dynamic_ncols=True)
        try:
            for batch in self.plan(read_corpus(corpus)):
                done = self._done(store, key, [d.doc_id for d, _ in batch])
                todo = [b for b in batch if b[0].doc_id not in done]
                if not todo:
                    continue
                pending.extend(self._mine_batch(todo, state, report))
                bar.update(len(todo))
                if report.batches % self.checkpoint_every == 0:
                    self._checkpoint(store, key, state, pending)
                    report.checkpoints += 1
                if on_batch is not None:
                    on_batch(report.batches)
            if pending:
                self._checkpoint(store, key, state, pending)
                report.checkpoints += 1
        finally:
            bar.close()
        report.contexts_stored = self._finalize(store, key, state, corpus)
        report.seconds = time.perf_counter() - start
        return report

    def mine_docs(self, docs: Sequence[CorpusDoc], skip: set[str] | frozenset[str] = frozenset()
                  ) -> tuple[MiningState, MiningReport]:
        """A fresh state over `docs` (a Ray worker's shard: whole planning chunks of the corpus, so
        its batches are the ones a single process forms), leaving out the documents in `skip`."""
        state = MiningState(len(self.feature_ids), self.settings, self.device)
        report = MiningReport(features=len(self.feature_ids))
        for batch in self.plan(iter(docs)):
            todo = [b for b in batch if b[0].doc_id not in skip]
            if not todo:
                continue
            self._mine_batch(todo, state, report)
        return state, report

    def _mine_batch(self, todo: list, state: MiningState, report: MiningReport) -> list[str]:
        """One forward pass folded into `state` and counted in `report` (the local run and a Ray
        shard mine the same way); the ids of the documents it covered."""
        report.docs_truncated += sum(len(ids) > self.settings.max_length for _, ids in todo)
        acts = self.activations(todo)
        state.update(acts)
        report.docs_mined += len(todo)
        report.tokens_mined += int(acts.acts.shape[0])
        report.batches += 1
        return list(acts.doc_ids)

    def _done(self, store: StudyStore, key: str, doc_ids: list[str]) -> set[str]:
        return store.mined_documents(key, doc_ids)

    def _checkpoint(self, store: StudyStore, key: str, state: MiningState, pending: list[str]) -> None:
        """State and the documents it covers, in one transaction: never one without the other."""
        store.save_mining_checkpoint(MiningCheckpoint(key, state.n_docs, state.to_bytes()), pending)
        pending.clear()

    # -- results ----------------------------------------------------------------------------
    def _token_text(self, token_id: int) -> str:
        """A token as display text, with its leading space: ''.join(tokens) reads as the text."""
        if token_id not in self._display:
            tok = self.adapter.tokenizer
            text = tok.decode([token_id])
            if self._ref is not None:
                both = tok.decode([self._ref[0], token_id])
                if both.startswith(self._ref[1]):
                    text = both[len(self._ref[1]) :]
            self._display[token_id] = text
        return self._display[token_id]

    def context_rows(self, state: MiningState, corpus: Path | None, chunk: int = 512,
                     names: Mapping[int, str] | None = None) -> Iterator[dict[str, Any]]:
        """feature_contexts rows of the final state, feature by feature.

        Tensors are turned into Python lists a chunk of features at a time: fast, and the
        temporary lists stay bounded however many features there are.
        """
        if names is None:
            assert corpus is not None
            names = doc_names(corpus, needed_ordinals(state))
        w = self.settings.window
        for start in range(0, len(self.feature_ids), chunk):
            part: dict[str, dict[str, list]] = {}
            for kind, t in state.trackers.items():
                sl = slice(start, start + chunk)
                part[kind] = {
                    "score": t.score[sl].tolist(), "act": t.act[sl].tolist(), "doc": t.doc[sl].tolist(),
                    "pos": t.pos[sl].tolist(), "ctx_ids": t.ctx_ids[sl].tolist(),
                    # rounded in float64 so that the stored JSON holds short decimals
                    "ctx_acts": t.ctx_acts[sl].double().mul(1e6).round().div(1e6).tolist(),
                }
            for jj, fid in enumerate(self.feature_ids[start : start + chunk]):
                for kind in KINDS:
                    t = {n: v[jj] for n, v in part[kind].items()}
                    entries = [i for i, s in enumerate(t["score"]) if s > -math.inf]
                    if kind != "top":  # samples are shown in activation order, like the top list
                        entries.sort(key=lambda i: (-t["act"][i], t["doc"][i], t["pos"][i]))
                    for rank, i in enumerate(entries):
                        ids, acts = t["ctx_ids"][i], t["ctx_acts"][i]
                        keep = [s for s, tid in enumerate(ids) if tid >= 0]
                        yield {
                            "feature_id": fid, "kind": kind, "rank": rank,
                            "activation": t["act"][i],
                            "doc_id": names[t["doc"][i]],
                            "token_index": t["pos"][i],
                            "tokens": [self._token_text(ids[s]) for s in keep],
                            "activations": [acts[s] for s in keep],
                            "center": keep.index(w),
                        }

    def stats_rows(self, state: MiningState, key: str) -> list[dict[str, Any]]:
        counts = state.histogram.active_counts().cpu()
        levels = self.settings.quantile_levels
        quant = state.histogram.quantiles(levels)
        top = state.trackers["top"]
        best = top.score[:, 0].cpu()
        rows = []
        for j, fid in enumerate(self.feature_ids):
            mx = float(best[j]) if best[j] > -math.inf else 0.0
            q = {f"p{round(level * 100, 1):g}": (None if math.isnan(v) else min(float(v), mx))
                 for level, v in zip(levels, quant[j].tolist())}
            rows.append({
                "feature_id": fid, "corpus_hash": key, "n_tokens": state.n_tokens,
                "frequency": float(counts[j]) / state.n_tokens if state.n_tokens else 0.0,
                "max_activation": mx,
                "quantiles": {"of": "active tokens (activation > 0)", "n_active": int(counts[j]), **q},
            })
        return rows

    def _finalize(self, store: StudyStore, key: str, state: MiningState, corpus: Path | None,
                  chunk: int = 5000, names: Mapping[int, str] | None = None) -> int:
        """Replace the mined features' contexts and stats in one transaction (rows in chunks);
        `names` (corpus ordinal → document id) spares reading the corpus (a Ray worker's case)."""
        return store.replace_feature_evidence(self.feature_ids, self.context_rows(state, corpus, names=names),
                                              self.stats_rows(state, key), chunk=chunk)

    def finalize_state(self, store: StudyStore, key: str, blob: bytes, n_docs: int,
                       names: Mapping[int, str]) -> int:
        """`_finalize` of a state sent as bytes (the Ray driver's merged shards)."""
        state = MiningState(len(self.feature_ids), self.settings, self.device)
        state.load_bytes(blob, n_docs)
        return self._finalize(store, key, state, None, names=names)


def needed_ordinals(state: MiningState) -> set[int]:
    """The corpus ordinals of every document a state's contexts come from."""
    out: set[int] = set()
    for t in state.trackers.values():
        out |= set(t.doc[t.score > -math.inf].tolist())
    return out


def doc_names(corpus: Path, ordinals: set[int]) -> dict[int, str]:
    names: dict[int, str] = {}
    for doc in read_corpus(corpus):
        if doc.ordinal in ordinals:
            names[doc.ordinal] = doc.doc_id
    return names
