"""Annotations out of the store as one flat table (CSV or Parquet), one row per answer.

Answers are spread into columns (label, interpretation_valid, …) so statistics read them
without JSON parsing; change-task rows carry case id and α from their generation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from steering.errors import RadsteerError
from steering.store import StudyStore

ANSWER_COLUMNS = ["label", "interpretation_valid", "coherent", "validity", "clinically_relevant",
                  "comment", "flagged", "skipped"]


def annotations_frame(store: StudyStore, task: str | None = None) -> pd.DataFrame:
    df = store.dataframe("annotations")
    if task is not None:
        df = df[df.task == task]
    answers = pd.DataFrame([dict(a or {}) for a in df.answers], index=df.index)
    for col in ANSWER_COLUMNS:
        if col not in answers:
            answers[col] = None
    answers["skipped"] = answers["skipped"].fillna(False).astype(bool)
    answers["flagged"] = answers["flagged"].fillna(False).astype(bool)
    out = pd.concat([df.drop(columns=["answers"]), answers[ANSWER_COLUMNS]], axis=1)
    gens = store.dataframe("generations")[["id", "case_id", "alpha"]].rename(columns={"id": "generation_id"})
    out = out.merge(gens, on="generation_id", how="left")
    cols = ["task", "item_key", "annotator", "generation_id", "case_id", "feature_id", "alpha", *ANSWER_COLUMNS,
            "seconds", "shown_order", "created_at", "updated_at"]
    return out[cols].sort_values(["task", "annotator", "shown_order"]).reset_index(drop=True)


def export_annotations(store: StudyStore, path: str | Path, task: str | None = None) -> int:
    """Write the annotations to `path` (.csv or .parquet); returns the number of rows."""
    path = Path(path)
    df = annotations_frame(store, task)
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        raise RadsteerError(f"--export {path}: use a .csv or .parquet file name")
    return len(df)
