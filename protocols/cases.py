"""Cases from a JSONL file: one study per line, with a seeded tune/test split."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steering.errors import RadsteerError
from steering.jsonl import iter_jsonl

SPLITS = ("tune", "test")


def read_cases_jsonl(path: str | Path, parse: Callable[[dict[str, Any], str], dict[str, Any]] | None = None,
                     ) -> list[dict[str, Any]]:
    """Rows of a cases file; each needs a unique `case_id`. Errors name the file and line.

    `parse(row, where)` checks and completes a row for a model kind (MAIRA-2: images resolved
    against the file's folder, `steering.maira2.cases.parse_case`), with `where` = file:line."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for n, where, row in iter_jsonl(path, what="cases file"):
        cid = row.get("case_id")
        if not isinstance(cid, str) or not cid:
            raise RadsteerError(f"{where}: case_id: missing or not a non-empty string")
        if cid in seen:
            raise RadsteerError(f"{where}: case_id {cid!r} repeats line {seen[cid]}")
        if "split" in row and row["split"] not in SPLITS:
            raise RadsteerError(f"{where}: split must be 'tune' or 'test', not {row['split']!r}")
        seen[cid] = n
        rows.append(parse(row, where) if parse is not None else row)
    if not rows:
        raise RadsteerError(f"cases file {path} has no cases")
    return rows


def assign_splits(rows: list[dict[str, Any]], tune_fraction: float, seed: int) -> list[dict[str, Any]]:
    """Keep a row's own split; otherwise draw tune/test with a seeded shuffle of case ids."""
    unassigned = sorted(r["case_id"] for r in rows if "split" not in r)
    random.Random(seed).shuffle(unassigned)
    n_tune = round(len(unassigned) * tune_fraction)
    tune = set(unassigned[:n_tune])
    return [{**r, "split": r.get("split") or ("tune" if r["case_id"] in tune else "test")} for r in rows]
