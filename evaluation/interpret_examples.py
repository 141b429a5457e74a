"""The evidence a feature is explained from, and the held-out examples its explanation is scored on.

Built from what `radsteer mine` stored (`feature_contexts`): the top-activating contexts, a
uniform sample of active tokens (spread over the feature's activation range) and a sample of
non-activating tokens. Detection scoring (Paulo et al. 2024) only means something if the scorer
is tested on examples the explainer never saw, so each feature's contexts are split once, by a
seeded hash of (feature, document, position):

- **shown** (to the explainer): the first `n_top_shown` top contexts, half of the active sample
  and half of the non-activating sample;
- **held-out active**: every other active context, labelled with the quartile of the feature's
  activation distribution it falls in (q1 … q4, from the mined quantiles), so recall can be read
  per quantile; contexts whose window overlaps a shown one are dropped (no leakage);
- **held-out inactive**: the other non-activating contexts whose whole window is inactive (a
  window with an active neighbour is not a negative). Those that mention the explanation's
  concepts or share its words are *hard* negatives, the rest *random*; random ones are capped at
  the number of active examples so the two classes stay comparable.

Everything here is pure Python on stored rows: no model, no torch.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

_WORD = re.compile(r"[a-z][a-z']+")
STOPWORDS = frozenset(
    "the a an of and or in on at to with without for from by is are was were be been no not any this that "
    "there their its it as than into onto mentions mention mentioning describing describes description "
    "report reports text token tokens word words feature fires activates".split()
)


@dataclass(frozen=True)
class Context:
    """One stored context window around a token of the corpus."""

    kind: str  # "top" | "quantile" | "zero" (as mined)
    rank: int
    doc_id: str
    token_index: int
    activation: float  # the feature's activation at the centre token
    tokens: tuple[str, ...]
    activations: tuple[float, ...]
    center: int

    @property
    def text(self) -> str:
        return "".join(self.tokens).strip()

    @property
    def active(self) -> bool:
        return self.activation > 0

    @property
    def window_inactive(self) -> bool:
        return all(a <= 0 for a in self.activations)

    @property
    def span(self) -> tuple[int, int]:
        """Token positions of the window in its document."""
        start = self.token_index - self.center
        return start, start + len(self.tokens) - 1

    def marked(self, open_mark: str = "<<", close_mark: str = ">>") -> str:
        """The text with every active token wrapped in marks (how an explainer sees activations)."""
        out = []
        for tok, act in zip(self.tokens, self.activations):
            if act > 0:
                lead = tok[: len(tok) - len(tok.lstrip())]
                out.append(f"{lead}{open_mark}{tok.strip()}{close_mark}")
            else:
                out.append(tok)
        return "".join(out).strip()

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Context:
        return cls(kind=row["kind"], rank=int(row["rank"]), doc_id=str(row["doc_id"]),
                   token_index=int(row["token_index"]), activation=float(row["activation"]),
                   tokens=tuple(row["tokens"]), activations=tuple(float(a) for a in row["activations"]),
                   center=int(row["center"] if row["center"] is not None else 0))


@dataclass(frozen=True)
class Example:
    """A held-out detection example: a context the scorer labels active or inactive."""

    context: Context
    label: bool  # truly active
    kind: str  # "active" | "random" | "hard"
    quantile: str | None = None  # "q1".."q4" for active examples

    @property
    def text(self) -> str:
        return self.context.text

    def to_json(self, prediction: bool | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "kind": self.kind, "label": self.label,
                               "activation": self.context.activation, "doc_id": self.context.doc_id,
                               "token_index": self.context.token_index}
        if self.quantile is not None:
            out["quantile"] = self.quantile
        if prediction is not None:
            out["prediction"] = prediction
        return out


@dataclass(frozen=True)
class SplitSettings:
    n_top_shown: int = 10  # top contexts shown to the explainer
    shown_fraction: float = 0.5  # of the active and of the non-activating samples
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        return {"n_top_shown": self.n_top_shown, "shown_fraction": self.shown_fraction, "seed": self.seed}


@dataclass
class FeatureEvidence:
    """One feature's contexts, split into what the explainer sees and what the scorer is tested on."""

    feature_id: str
    shown_active: list[Context]  # top first, then samples in activation order
    shown_inactive: list[Context]
    heldout_active: list[Example]
    heldout_inactive_pool: list[Context]  # fully inactive windows not shown
    frequency: float | None = None
    quantile_edges: tuple[float, float, float] | None = None  # p25, p50, p75 of the active activations
    notes: list[str] = field(default_factory=list)

    def negatives(self, is_hard: Callable[[Context], bool], cap: int | None = None) -> list[Example]:
        """Held-out inactive examples: every hard one, and random ones up to `cap` (default: as many
        as there are active examples), in a stable order."""
        cap = len(self.heldout_active) if cap is None else cap
        hard = [Example(c, False, "hard") for c in self.heldout_inactive_pool if is_hard(c)]
        rand = [Example(c, False, "random") for c in self.heldout_inactive_pool if not is_hard(c)][: max(cap, 0)]
        return hard + rand


def _unit_hash(*parts: object) -> float:
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def _quartile(activation: float, edges: tuple[float, float, float] | None) -> str | None:
    if edges is None:
        return None
    p25, p50, p75 = edges
    if activation <= p25:
        return "q1"
    if activation <= p50:
        return "q2"
    if activation <= p75:
        return "q3"
    return "q4"


def _overlaps(c: Context, shown: Iterable[Context]) -> bool:
    a0, a1 = c.span
    for s in shown:
        if s.doc_id == c.doc_id:
            b0, b1 = s.span
            if a0 <= b1 and b0 <= a1:
                return True
    return False


def split_evidence(feature_id: str, rows: Sequence[dict[str, Any]], stats: dict[str, Any] | None = None,
                   settings: SplitSettings | None = None) -> FeatureEvidence:
    """Split one feature's stored context rows (see the module docstring)."""
    s = settings or SplitSettings()
    ctx = [Context.from_row(r) for r in rows]
    top = sorted((c for c in ctx if c.kind == "top"), key=lambda c: c.rank)
    sample = [c for c in ctx if c.kind == "quantile"]
    zero = [c for c in ctx if c.kind == "zero"]

    def shown_part(cs: list[Context]) -> tuple[list[Context], list[Context]]:
        keyed = sorted(cs, key=lambda c: _unit_hash(s.seed, feature_id, c.doc_id, c.token_index))
        k = round(len(keyed) * s.shown_fraction)
        if cs and k == 0 and len(cs) > 1:
            k = 1
        return keyed[:k], keyed[k:]

    shown_top, rest_top = top[: s.n_top_shown], top[s.n_top_shown :]
    shown_sample, rest_sample = shown_part(sample)
    shown_zero, rest_zero = shown_part(zero)
    shown_active = shown_top + sorted((c for c in shown_sample if (c.doc_id, c.token_index) not in
                                       {(t.doc_id, t.token_index) for t in shown_top}),
                                      key=lambda c: -c.activation)
    edges = None
    if stats is not None:
        q = stats.get("quantiles") or {}
        if all(q.get(k) is not None for k in ("p25", "p50", "p75")):
            edges = (float(q["p25"]), float(q["p50"]), float(q["p75"]))
    seen: set[tuple[str, int]] = set()
    heldout: list[Example] = []
    for c in [*rest_top, *rest_sample]:
        key = (c.doc_id, c.token_index)
        if key in seen or not c.active or _overlaps(c, shown_active):
            continue
        seen.add(key)
        heldout.append(Example(c, True, "active", _quartile(c.activation, edges)))
    shown_keys = {(c.doc_id, c.token_index) for c in shown_zero}
    pool = [c for c in rest_zero if c.window_inactive and (c.doc_id, c.token_index) not in shown_keys]
    notes = []
    if not top:
        notes.append("never active in the mined corpus")
    if len(zero) < 4:
        notes.append(f"only {len(zero)} non-activating contexts mined (radsteer mine --zero-samples N gives more)")
    return FeatureEvidence(feature_id, shown_active, shown_zero, heldout, pool,
                           frequency=None if stats is None else float(stats.get("frequency", 0.0)),
                           quantile_edges=edges, notes=notes)


def description_words(description: str) -> set[str]:
    """Content words of a description (for hard negatives that share its wording)."""
    return {w for w in _WORD.findall(description.lower()) if w not in STOPWORDS and len(w) > 2}
