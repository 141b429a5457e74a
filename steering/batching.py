"""How many rows go into one `generate` call.

A fixed batch size is the protocol's word. `auto` calibrates on the sweep's own first batches: the
length-sorted rows are cut into batches of 8, 16, 32 and 64 rows in turn, each batch is generated
and stored like any other (greedy output does not depend on the batching, so nothing is wasted),
and its generated tokens per second are measured; the rest of the sweep uses the fastest size. A
size that runs out of accelerator memory is dropped and its rows are re-run at the best smaller
size. Batches later in the sort have longer prompts, so the calibration slightly favours smaller
sizes; it is a choice among four, not a fit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

CALIBRATION_SIZES = (8, 16, 32, 64)


@dataclass
class BatchSizer:
    """Hands out batch sizes and learns from the tokens/s of each finished batch."""

    fixed: int | None = None  # None: calibrate
    candidates: tuple[int, ...] = CALIBRATION_SIZES
    measured: dict[int, float] = field(default_factory=dict)  # size → generated tokens/s
    too_big: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.fixed is not None and self.fixed < 1:
            raise ValueError(f"batch size must be at least 1, not {self.fixed}")
        self._queue = [] if self.fixed is not None else list(self.candidates)

    @property
    def calibrating(self) -> bool:
        return bool(self._queue)

    def next_size(self) -> int:
        if self.fixed is not None:
            return self.fixed
        if self._queue:
            return self._queue[0]
        return self.chosen

    @property
    def chosen(self) -> int:
        """The fastest size measured so far (the smallest candidate before any measurement)."""
        if self.fixed is not None:
            return self.fixed
        usable = {s: v for s, v in self.measured.items() if s not in self.too_big}
        if usable:
            return max(usable, key=usable.get)
        fits = [s for s in self.candidates if s not in self.too_big]
        return min(fits) if fits else 1

    def record(self, size: int, rows: int, tokens: int, seconds: float) -> None:
        """A batch of `rows` rows (asked for `size`) generated `tokens` tokens in `seconds`."""
        if self._queue and self._queue[0] == size:
            self._queue.pop(0)
            if rows == size and seconds > 0:  # a short last batch says nothing about its size
                self.measured[size] = tokens / seconds

    def out_of_memory(self, size: int) -> int:
        """`size` did not fit: never try it or anything larger again; returns the size to retry with."""
        if self.fixed is not None:
            raise RuntimeError("a fixed batch size ran out of memory")  # the caller re-raises the real error
        self.too_big.update(s for s in self.candidates if s >= size)
        self._queue = [s for s in self._queue if s < size]
        smaller = [s for s in self.candidates if s < size]
        if not smaller:
            return max(1, size // 2)
        return self.chosen if self.chosen < size else max(smaller)

    def describe(self) -> dict[str, object]:
        return {"mode": "fixed" if self.fixed is not None else "auto", "chosen": self.chosen,
                "tokens_per_s": {str(k): round(v, 1) for k, v in sorted(self.measured.items())},
                "out_of_memory": sorted(self.too_big)}


def padding_fraction(batches: Iterable[Sequence[int]]) -> float:
    """Share of left-padding in the prompt positions of all batches (each batch: its prompt lengths)."""
    padded = total = 0
    for lengths in batches:
        if lengths:
            width = max(lengths)
            total += width * len(lengths)
            padded += sum(width - n for n in lengths)
    return padded / total if total else 0.0
