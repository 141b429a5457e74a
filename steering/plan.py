"""The sweep's plan: which (case, feature, α) rows to generate.

Plain data, no model and no torch: a Ray driver plans and shards the rows while its workers
load the model, and `validate`/`stats` count rows without importing transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from steering.store import BASELINE_FEATURE


@dataclass(frozen=True)
class PlannedRow:
    case_id: str
    feature_id: str  # BASELINE_FEATURE ("") for the unsteered row
    alpha: float

    @property
    def is_baseline(self) -> bool:
        return self.feature_id == BASELINE_FEATURE

    def key(self) -> tuple[str, str, float]:
        return (self.case_id, self.feature_id, float(self.alpha))


def plan_rows(case_ids: Sequence[str], feature_ids: Sequence[str], alphas: Sequence[float]) -> list[PlannedRow]:
    """One baseline per case, then every feature × non-zero α (α = 0 *is* the baseline)."""
    rows: list[PlannedRow] = []
    for case_id in case_ids:
        rows.append(PlannedRow(case_id, BASELINE_FEATURE, 0.0))
        rows.extend(PlannedRow(case_id, f, float(a)) for f in feature_ids for a in alphas if float(a) != 0.0)
    return rows
