"""Detection scores of a feature explanation (Paulo et al. 2024): how well predictions made from the
description alone separate held-out active from inactive contexts.

Precision is undefined when nothing is predicted active; it is then reported as None, and F1
is 0 whenever there are active examples (no active example was found), so a description that
says nothing scores 0, never "undefined" and never high.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class DetectionScores:
    precision: float | None
    recall: float | None
    f1: float | None
    balanced_accuracy: float | None
    n_active: int
    n_inactive: int
    tp: int
    fp: int
    fn: int
    tn: int
    recall_by_quantile: dict[str, float | None] = field(default_factory=dict)
    recall_by_kind: dict[str, float | None] = field(default_factory=dict)  # negatives: 1 - fp rate per kind

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def detection_scores(labels: Sequence[bool], predictions: Sequence[bool], quantiles: Sequence[str | None] = (),
                     kinds: Sequence[str] = ()) -> DetectionScores:
    """Scores of `predictions` against `labels`; recall per quantile of the active examples and
    specificity per kind of negative ("random", "hard")."""
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    tp = sum(1 for y, p in zip(labels, predictions) if y and p)
    fn = sum(1 for y, p in zip(labels, predictions) if y and not p)
    fp = sum(1 for y, p in zip(labels, predictions) if not y and p)
    tn = sum(1 for y, p in zip(labels, predictions) if not y and not p)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    if tp + fn == 0:
        f1 = None
    elif precision is None or recall is None or precision + recall == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    specificity = _ratio(tn, tn + fp)
    balanced = None if recall is None or specificity is None else (recall + specificity) / 2
    by_q: dict[str, float | None] = {}
    if quantiles:
        for q in sorted({q for q, y in zip(quantiles, labels) if y and q is not None}):
            idx = [i for i, (qq, y) in enumerate(zip(quantiles, labels)) if y and qq == q]
            by_q[q] = _ratio(sum(1 for i in idx if predictions[i]), len(idx))
    by_kind: dict[str, float | None] = {}
    if kinds:
        for k in sorted({k for k, y in zip(kinds, labels) if not y}):
            idx = [i for i, (kk, y) in enumerate(zip(kinds, labels)) if not y and kk == k]
            by_kind[k] = _ratio(sum(1 for i in idx if not predictions[i]), len(idx))
    return DetectionScores(precision, recall, f1, balanced, tp + fn, tn + fp, tp, fp, fn, tn, by_q, by_kind)
