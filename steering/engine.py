"""The steering engine: plan rows, pack them into batches, generate, store, resume.

One row = (case, feature, α). Each case has one unsteered baseline row (feature "", α = 0);
every feature × non-zero α is a steered row. A batch carries rows of different features and α
in a single `generate` call: each row gets its own vector and coefficient (see `SteeringHook`),
prompts are left-padded, and rows are grouped by prompt length to waste little padding.
Per-case work (MAIRA-2's image features) is done once per case and reused by all of its rows.
"""

from __future__ import annotations

import math
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from steering.adapters import ModelAdapter, pad_batch
from steering.batching import BatchSizer, padding_fraction
from steering.errors import RadsteerError
from steering.feature_bank import FeatureBank, VectorSpace
from steering.hooks import PositionPolicy, SteeringHook, prompt_steer_mask
from steering.plan import PlannedRow, plan_rows  # noqa: F401  (plan_rows: steering.engine's public API)
from steering.sampling import SeededSampler
from steering.store import StudyStore, stable_hash


@dataclass(frozen=True)
class SteeringSpec:
    """Where and how vectors are added (recorded in the manifest and the settings hash)."""

    layer: int
    space: VectorSpace = "residual"
    unit_norm: bool = False
    positions: PositionPolicy = "all"
    exclude: tuple[str, ...] = ()  # "special" and/or "image" token ids left unsteered


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()  # a row ends at the first stop sequence it writes (text excludes it)
    no_repeat_ngram_size: int = 0  # >0: a row never repeats an n-gram of its own generated text

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(d["stop"])
        # Settings left at their "off" value are absent, so studies stored before they existed keep their hash.
        for key, off in (("stop", []), ("no_repeat_ngram_size", 0)):
            if d[key] == off:
                d.pop(key)
        return d


class NonFiniteWatch:
    """A `LogitsProcessor` that notes, per row, the first step whose logits are not finite (NaN,
    +inf, or every token −inf) or carry no information (every token equal: the hidden state
    collapsed, e.g. a normalisation whose sum of squares overflowed) — e.g. after a push α·v too
    strong for the model's numbers — and ends that row with EOS, so its neighbours in the batch go on and the row is stored as an error with its
    reason instead of as text decoded from garbage. It runs before any sampler (NaN probabilities
    would make `torch.multinomial` fail for the whole batch)."""

    def __init__(self, n_rows: int, end_token: int) -> None:
        self.first_bad: list[int | None] = [None] * n_rows  # generated-token index of the first bad step
        self.kind: list[str] = [""] * n_rows
        self.end_token = end_token
        self.step = 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        nan = torch.isnan(scores).any(-1)
        flat = scores.amax(-1) == scores.amin(-1)
        bad = nan | torch.isposinf(scores).any(-1) | torch.isneginf(scores).all(-1) | flat
        if bool(bad.any()):
            for i in bad.nonzero().flatten().tolist():
                if self.first_bad[i] is None:
                    self.first_bad[i] = self.step
                    self.kind[i] = ("NaN" if bool(nan[i]) else "constant (every token equally likely)"
                                    if bool(flat[i]) and bool(torch.isfinite(scores[i]).all()) else "infinite")
            scores = scores.masked_fill(bad[:, None], float("-inf"))
            scores[bad, self.end_token] = 0.0
        self.step += 1
        return scores


class StopOnSequences(StoppingCriteria):
    """Per-row stop sequences for a batched `generate`: a row is finished at the step its own
    generated text first contains one of `stops`; the others go on. The step is remembered, so
    the row's tokens are cut exactly where a one-row run would have stopped."""

    def __init__(self, stops: Sequence[str], raw_text: Callable[[list[int]], str], n_rows: int) -> None:
        self.stops = tuple(stops)
        self.raw_text = raw_text
        self.stop_at: list[int | None] = [None] * n_rows  # number of new tokens when the row stopped

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.BoolTensor:
        # With `inputs_embeds`, generate's input_ids hold only the generated tokens.
        n = input_ids.shape[1]
        for i, at in enumerate(self.stop_at):
            if at is None and any(stop in self.raw_text(input_ids[i].tolist()) for stop in self.stops):
                self.stop_at[i] = n
        done = torch.tensor([at is not None for at in self.stop_at], dtype=torch.bool, device=input_ids.device)
        return done  # type: ignore[return-value]


def cut_at_stop(text: str, stops: Sequence[str]) -> str | None:
    """`text` up to its first stop sequence, or None when it holds none."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(hits)] if hits else None


@dataclass
class GenerationResult:
    row: PlannedRow
    text: str
    token_ids: list[int]
    finish_reason: str  # "eos" | "stop" | "length" | "error"
    seconds: float  # the batch's wall time shared equally among its rows
    error: str | None = None  # why the row failed (finish_reason "error"); its text is what came before
    grounding: list[dict[str, Any]] | None = None  # phrases with boxes, from an adapter that grounds reports

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    def store_row(self, settings_hash: str) -> dict[str, Any]:
        return dict(
            case_id=self.row.case_id, feature_id=self.row.feature_id, alpha=float(self.row.alpha),
            settings_hash=settings_hash, text=self.text, n_tokens=self.n_tokens,
            finish_reason=self.finish_reason, seconds=self.seconds,
            **({"error": self.error} if self.error is not None else {}),  # studies made before the column
            **({"grounding": self.grounding} if self.grounding is not None else {}),
        )


@dataclass
class SweepReport:
    planned: int
    already_stored: int
    generated: int
    batches: int
    seconds: float
    per_case_extras: Counter = field(default_factory=Counter)
    tokens_per_s: float = 0.0  # generated tokens / generation wall time
    padding_fraction: float = 0.0  # left-padding share of the batches' prompt positions
    batching: dict[str, Any] = field(default_factory=dict)  # BatchSizer.describe()

    def summary(self) -> str:
        text = (
            f"{self.planned} rows planned, {self.already_stored} already stored, {self.generated} generated "
            f"in {self.batches} batches ({self.seconds:.1f} s)"
        )
        if self.generated:
            text += (f"; {self.tokens_per_s:.1f} tokens/s, padding {100 * self.padding_fraction:.1f} %, "
                     f"batch size {self.batching.get('chosen')} ({self.batching.get('mode')})")
        return text


def push_problem(bank: FeatureBank, feature_ids: Sequence[str], alphas: Sequence[float], dtype: torch.dtype, *,
                 space: VectorSpace = "residual", unit_norm: bool = False) -> tuple[float, str] | None:
    """(α, why) when some α·v would not be finite in `dtype` (α = 1e300 used to steer to empty
    text), else None.

    The push α·‖v‖ and every element of α·v must be finite numbers of the model's dtype, and the
    square of every element a finite float32 (RMS/LayerNorm square the residual in float32: past
    that the normalised state collapses to zero and the model writes token 0 over and over)."""
    steered = [float(a) for a in alphas if float(a) != 0.0]
    if not steered or not feature_ids:
        return None
    vecs = bank.vectors(list(feature_ids), space=space, unit_norm=unit_norm).double()
    norms, peaks = vecs.norm(dim=-1), vecs.abs().amax(dim=-1)
    limit = torch.finfo(dtype).max
    square_limit = math.sqrt(torch.finfo(torch.float32).max)
    name = str(dtype).removeprefix("torch.")
    for a in sorted(steered, key=abs, reverse=True):
        for fid, norm, peak in zip(feature_ids, norms.tolist(), peaks.tolist(), strict=True):
            push = abs(a) * norm
            if not (math.isfinite(push) and push <= limit and abs(a) * peak <= limit):
                return a, (f"α = {a:g} pushes feature {fid!r} by α·‖v‖ = {push:.3g}, which is not a finite "
                           f"{name} number (largest {limit:.3g}); use a smaller |α|")
            if abs(a) * peak > square_limit:
                return a, (f"α = {a:g} pushes feature {fid!r} by α·‖v‖ = {push:.3g}: the next layer norm squares "
                           f"it, which overflows (|α|·max|v| must stay below {square_limit:.3g}); use a smaller |α|")
    return None


class SteeringEngine:
    """Generates steered and baseline reports for planned rows, in batches."""

    def __init__(
        self,
        adapter: ModelAdapter,
        bank: FeatureBank | None = None,
        *,
        spec: SteeringSpec,
        settings: GenerationSettings | None = None,
        batch_size: int | Literal["auto"] = 8,
    ) -> None:
        if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
            raise RadsteerError(f"batch size must be 'auto' or at least 1, not {batch_size!r}")
        self.adapter = adapter
        self.bank = bank
        self.spec = spec
        self.settings = settings or GenerationSettings()
        self.sizer = BatchSizer(None if batch_size == "auto" else batch_size)
        self.batch_lengths: list[list[int]] = []  # prompt lengths of every batch generated
        self.layer_module = adapter.layer(spec.layer)
        if bank is not None:
            bank.check_width(adapter.hidden_size, adapter.name)
        self._exclude_ids = adapter.excluded_token_ids(spec.exclude)
        self._prompt_cache: dict[str, list[int]] = {}
        self.extras_calls: Counter = Counter()  # per case: how often case_extras ran

    # -- identity ---------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Everything that decides the generated text, for the manifest and the settings hash."""
        return {
            "model": self.adapter.name,
            "layer": self.spec.layer,
            "layer_module": self.adapter.layer_module_path(self.spec.layer),
            "steering": asdict(self.spec),
            "generation": self.settings.describe(),
            # the weights' dtype decides the text too (absent for float32: older studies keep their hash)
            **({"dtype": str(self.adapter.dtype).removeprefix("torch.")}
               if self.adapter.dtype != torch.float32 else {}),
            "normalisation_factor": self.bank.normalisation_factor if self.bank else None,
            "feature_bank": self.bank.provenance.get("sha256") if self.bank else None,
        }

    def settings_hash(self) -> str:
        return stable_hash(self.describe())[:16]

    # -- planning ---------------------------------------------------------------------------
    def prompt_ids(self, case_id: str, case: Mapping[str, Any]) -> list[int]:
        if case_id not in self._prompt_cache:
            self._prompt_cache[case_id] = self.adapter.prompt_ids(case)
        return self._prompt_cache[case_id]

    @property
    def batch_size(self) -> int:
        """The fixed size, or the calibrated one (the smallest candidate before calibration)."""
        return self.sizer.chosen

    def ordered(self, cases: Mapping[str, Mapping[str, Any]], rows: Sequence[PlannedRow]) -> list[PlannedRow]:
        """Rows of all cases sorted by prompt length (then case, so a case's rows stay together):
        neighbouring rows pad little whichever case they come from."""
        for r in rows:
            if r.case_id not in cases:
                raise RadsteerError(f"row for unknown case {r.case_id!r}")
        return sorted(rows, key=lambda r: (len(self.prompt_ids(r.case_id, cases[r.case_id])), r.case_id,
                                           r.feature_id, r.alpha))

    def batches(self, cases: Mapping[str, Mapping[str, Any]], rows: Sequence[PlannedRow]) -> list[list[PlannedRow]]:
        """The ordered rows cut at the current batch size (what a fixed-size sweep generates)."""
        ordered, size = self.ordered(cases, rows), self.batch_size
        return [ordered[i : i + size] for i in range(0, len(ordered), size)]

    # -- generation -------------------------------------------------------------------------
    def generate(
        self,
        cases: Mapping[str, Mapping[str, Any]],
        rows: Sequence[PlannedRow],
        *,
        progress: bool = False,
        on_batch: Callable[[list[GenerationResult]], None] | None = None,
    ) -> list[GenerationResult]:
        """Generate every row; `on_batch` receives each finished batch (e.g. to store it)."""
        self.check_pushes(rows)
        results: list[GenerationResult] = []
        for batch_results in self._iter_batches(cases, rows, progress=progress):
            if on_batch is not None:
                on_batch(batch_results)
            results.extend(batch_results)
        return results

    def _iter_batches(
        self, cases: Mapping[str, Mapping[str, Any]], rows: Sequence[PlannedRow], *, progress: bool
    ) -> Iterator[list[GenerationResult]]:
        ordered = self.ordered(cases, rows)
        remaining = Counter(r.case_id for r in rows)
        extras: dict[str, dict[str, Any]] = {}
        bar = tqdm(total=len(rows), unit="row", desc="generating", disable=not progress, dynamic_ncols=True)
        start = 0
        try:
            while start < len(ordered):
                size = self.sizer.next_size()
                batch = ordered[start : start + size]
                for r in batch:
                    if r.case_id not in extras:
                        extras[r.case_id] = self.adapter.case_extras(cases[r.case_id])
                        self.extras_calls[r.case_id] += 1
                try:
                    out = self._generate_batch(cases, batch, extras)
                except torch.cuda.OutOfMemoryError:
                    if self.sizer.fixed is not None:
                        raise
                    self.sizer.out_of_memory(size)  # the same rows again, at a size that fits
                    torch.cuda.empty_cache()
                    continue
                start += len(batch)
                self.sizer.record(size, len(batch), sum(res.n_tokens for res in out),
                                  sum(res.seconds for res in out))
                self.batch_lengths.append([len(self.prompt_ids(r.case_id, cases[r.case_id])) for r in batch])
                for r in batch:  # free per-case features (images) once the case is done
                    remaining[r.case_id] -= 1
                    if remaining[r.case_id] == 0:
                        extras.pop(r.case_id, None)
                bar.update(len(batch))
                yield out
        finally:
            bar.close()

    def check_pushes(self, rows: Sequence[PlannedRow]) -> None:
        """Refuse, before generating anything, an α·v that overflows the model's dtype."""
        steered = [r for r in rows if not r.is_baseline]
        if not steered:
            return
        if self.bank is None:
            raise RadsteerError("steered rows need a feature bank")
        why = push_problem(self.bank, sorted({r.feature_id for r in steered}), sorted({r.alpha for r in steered}),
                           self.adapter.dtype, space=self.spec.space, unit_norm=self.spec.unit_norm)
        if why:
            raise RadsteerError(why[1])

    def _row_vectors(self, batch: Sequence[PlannedRow]) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.adapter.hidden_size
        vectors = torch.zeros(len(batch), d)
        steered = [i for i, r in enumerate(batch) if not r.is_baseline]
        if steered:
            if self.bank is None:
                raise RadsteerError("steered rows need a feature bank")
            vectors[steered] = self.bank.vectors(
                [batch[i].feature_id for i in steered], space=self.spec.space, unit_norm=self.spec.unit_norm
            )
        coefficients = torch.tensor([float(r.alpha) for r in batch])
        return vectors, coefficients

    def _row_seed(self, row: PlannedRow) -> int:
        # Same seed for a case's baseline and steered rows: they share their randomness.
        return (self.settings.seed * 1_000_003 + zlib.crc32(row.case_id.encode())) % (2**31)

    @torch.inference_mode()
    def _generate_batch(
        self, cases: Mapping[str, Mapping[str, Any]], batch: Sequence[PlannedRow], extras: Mapping[str, dict]
    ) -> list[GenerationResult]:
        adapter = self.adapter
        device = adapter.device
        prompts = [self.prompt_ids(r.case_id, cases[r.case_id]) for r in batch]
        pad = adapter.pad_token_id
        input_ids, attention_mask = pad_batch(prompts, pad, side="left")
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        embeds = adapter.embed(input_ids, [extras[r.case_id] for r in batch])

        eos = adapter.eos_token_ids
        gen_config = GenerationConfig(
            max_new_tokens=self.settings.max_new_tokens, do_sample=False, num_beams=1,
            pad_token_id=pad, eos_token_id=eos or None,
            no_repeat_ngram_size=self.settings.no_repeat_ngram_size or None,
        )
        watch = NonFiniteWatch(len(batch), eos[0] if eos else pad)
        processors = LogitsProcessorList([watch])
        if self.settings.do_sample:
            processors.append(SeededSampler([self._row_seed(r) for r in batch],
                                            temperature=self.settings.temperature, top_p=self.settings.top_p))
        stopper = StopOnSequences(self.settings.stop, adapter.raw_text, len(batch)) if self.settings.stop else None
        criteria = StoppingCriteriaList([stopper] if stopper else [])
        start = time.perf_counter()
        if all(r.is_baseline for r in batch):
            out = adapter.model.generate(inputs_embeds=embeds, attention_mask=attention_mask,
                                         generation_config=gen_config, logits_processor=processors,
                                         stopping_criteria=criteria)
        else:
            vectors, coefficients = self._row_vectors(batch)
            hook = SteeringHook(
                self.layer_module, vectors.to(device), coefficients.to(device),
                prompt_mask=prompt_steer_mask(input_ids, attention_mask, self.spec.positions, self._exclude_ids),
                policy=self.spec.positions, embedding=adapter.model.get_input_embeddings(),
                exclude_ids=self._exclude_ids,
            )
            with hook:
                out = adapter.model.generate(inputs_embeds=embeds, attention_mask=attention_mask,
                                             generation_config=gen_config, logits_processor=processors,
                                             stopping_criteria=criteria)
        seconds = (time.perf_counter() - start) / len(batch)
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        results = [self._result(r, sequences[i].tolist(), eos, seconds, stopper.stop_at[i] if stopper else None)
                   for i, r in enumerate(batch)]
        for i, res in enumerate(results):
            bad = watch.first_bad[i]
            if bad is not None and bad < res.n_tokens:  # the token chosen at the bad step was kept
                results[i] = self._failed(res, bad, watch.kind[i], sequences[i].tolist())
        return results

    def _failed(self, res: GenerationResult, step: int, kind: str, new_tokens: list[int]) -> GenerationResult:
        """A row whose logits stopped being finite at generated token `step` (0-based)."""
        alpha = res.row.alpha
        why = (f"the logits became {kind} at generated token {step + 1} "
               f"({'baseline' if res.row.is_baseline else f'feature {res.row.feature_id!r}, α = {alpha:g}'}, "
               f"{str(self.adapter.dtype).removeprefix('torch.')}): the push is too strong for the model's "
               f"numbers; use a smaller |α|")
        tokens = new_tokens[:step]
        return GenerationResult(row=res.row, text=self.adapter.decode(tokens), token_ids=tokens,
                                finish_reason="error", seconds=res.seconds, error=why, grounding=self._grounding(tokens))

    def _result(self, row: PlannedRow, new_tokens: list[int], eos: list[int], seconds: float,
                stop_at: int | None = None) -> GenerationResult:
        eos_set = set(eos)
        cut = next((i for i, t in enumerate(new_tokens) if t in eos_set), None)
        if stop_at is not None and (cut is None or stop_at <= cut):
            # Ended by a stop sequence: keep the tokens written up to it, the text before it.
            tokens = new_tokens[:stop_at]
            raw = self.adapter.raw_text(tokens)
            before = cut_at_stop(raw, self.settings.stop)
            text = self.adapter.clean_text(raw if before is None else before)
            return GenerationResult(row=row, text=text, token_ids=tokens, finish_reason="stop", seconds=seconds,
                                    grounding=self._grounding(tokens, raw if before is None else before))
        tokens = new_tokens if cut is None else new_tokens[: cut + 1]
        return GenerationResult(
            row=row, text=self.adapter.decode(tokens), token_ids=tokens,
            finish_reason="length" if cut is None else "eos", seconds=seconds, grounding=self._grounding(tokens),
        )

    def _grounding(self, tokens: list[int], raw: str | None = None) -> list[dict[str, Any]] | None:
        """The one place a row's boxes are read: for adapters that ground reports (MAIRA-2 asked for
        grounded reports), from the same raw text the stored plain text was made of."""
        if not self.adapter.grounds_reports:
            return None
        return self.adapter.grounding(self.adapter.raw_text(tokens) if raw is None else raw)

    # -- sweeps -----------------------------------------------------------------------------
    def sweep(
        self,
        store: StudyStore,
        cases: Mapping[str, Mapping[str, Any]],
        rows: Sequence[PlannedRow],
        *,
        progress: bool = True,
    ) -> SweepReport:
        """Generate every planned row not yet stored; each finished batch is committed at once,
        so a killed sweep loses at most the batch in flight and resumes where it stopped."""
        start = time.perf_counter()
        settings_hash = self.settings_hash()
        done = store.generation_keys(settings_hash)
        todo = [r for r in rows if r.key() not in done]
        n_batches = 0
        tokens = 0
        gen_seconds = 0.0
        self.batch_lengths = []

        def write(batch: list[GenerationResult]) -> None:
            nonlocal n_batches, tokens, gen_seconds
            store.add_generations([res.store_row(settings_hash) for res in batch])
            n_batches += 1
            tokens += sum(res.n_tokens for res in batch)
            gen_seconds += sum(res.seconds for res in batch)

        self.generate(cases, todo, progress=progress, on_batch=write)
        return SweepReport(
            planned=len(rows), already_stored=len(rows) - len(todo), generated=len(todo), batches=n_batches,
            seconds=time.perf_counter() - start, per_case_extras=Counter(self.extras_calls),
            tokens_per_s=tokens / gen_seconds if gen_seconds else 0.0,
            padding_fraction=padding_fraction(self.batch_lengths), batching=self.sizer.describe(),
        )
