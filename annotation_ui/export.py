"""The one export of the reader study: one row per read (CSV or Parquet).

The table is `evaluation.reader_study.reads_table` — the same rows `radsteer stats` writes as
stats/reader_reads — so the export and the statistics never disagree. The file is written
beside its target and renamed; an existing file is replaced only when it is an earlier export
(its header / Parquet metadata says so), never a user's file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from evaluation.reader_study import READ_COLUMNS, reads_table
from evaluation.study_data import from_store
from steering.errors import RadsteerError
from steering.store import StudyStore
from steering.store.files import write_atomic

MARK = b"radsteer.reader_reads"
"""Parquet key-value metadata that marks an export radsteer wrote."""


def annotations_frame(store: StudyStore, task: str | None = None) -> pd.DataFrame:
    """One row per read (see `reads_table`), of one task or both."""
    df = reads_table(from_store(store))
    return df[df.task == task].reset_index(drop=True) if task is not None else df


def _is_our_export(path: Path) -> bool:
    try:
        if path.suffix == ".csv":
            with open(path, encoding="utf-8", errors="replace") as fh:
                return fh.readline().rstrip("\r\n") == ",".join(READ_COLUMNS)
        import pyarrow.parquet as pq

        meta = pq.read_schema(path).metadata or {}
        return MARK in meta
    except (OSError, ValueError, ImportError):
        return False


def export_annotations(store: StudyStore, path: str | Path, task: str | None = None) -> int:
    """Write the reads to `path` (.csv or .parquet); returns the number of rows."""
    path = Path(path)
    if path.suffix not in (".csv", ".parquet"):
        raise RadsteerError(f"--export {path}: use a .csv or .parquet file name")
    if path.exists() and (not path.is_file() or not _is_our_export(path)):
        raise RadsteerError(f"--export {path}: exists and is not a radsteer export; choose another name "
                            "(nothing was overwritten)")
    if not path.parent.is_dir():
        raise RadsteerError(f"--export {path}: folder {path.parent} does not exist")
    df = annotations_frame(store, task)
    if path.suffix == ".csv":
        write_atomic(path, lambda tmp: df.to_csv(tmp, index=False))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        safe = df.astype({c: "string" for c in ("created_at", "updated_at", "item_key", "comment")})
        safe = safe.astype({c: "object" for c in ("blinded", "label", "interpretation_valid", "coherent",
                                                  "validity", "clinically_relevant", "case_id", "feature_id",
                                                  "entity_diff", "llm_judge", "combined")})
        table = pa.Table.from_pandas(safe, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), MARK: b"1"})
        write_atomic(path, lambda tmp: pq.write_table(table, tmp))
    return len(df)
