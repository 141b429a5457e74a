"""Cases from a JSONL file: one study per line, with a seeded tune/test split."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from steering.errors import RadsteerError

SPLITS = ("tune", "test")


def read_cases_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a cases file; each needs a unique `case_id`. Errors name the file and line."""
    path = Path(path)
    if not path.exists():
        raise RadsteerError(f"cases file not found: {path}")
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RadsteerError(f"cannot read cases file {path}: {exc}") from exc
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RadsteerError(f"{path}:{n}: not valid JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise RadsteerError(f"{path}:{n}: each line must be a JSON object")
        cid = row.get("case_id")
        if not isinstance(cid, str) or not cid:
            raise RadsteerError(f"{path}:{n}: case_id: missing or not a non-empty string")
        if cid in seen:
            raise RadsteerError(f"{path}:{n}: case_id {cid!r} repeats line {seen[cid]}")
        if "split" in row and row["split"] not in SPLITS:
            raise RadsteerError(f"{path}:{n}: split must be 'tune' or 'test', not {row['split']!r}")
        seen[cid] = n
        rows.append(row)
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
