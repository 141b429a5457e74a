"""`features.select`: the protocol's features chosen from a `radsteer interpret` run.

As in the paper, steer the features whose explanation detects them well: F1 ≥ `min_f1`, at most
`max_features` (best F1 first, ties by id), optionally only those with a target concept in the
listed categories (finding, device, longitudinal, textual). Each chosen feature becomes an
item `{id, description, targets}` exactly as if it had been written in the protocol.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from steering.errors import RadsteerError

REQUIRED = ("feature_id", "description", "targets", "explainer", "f1")


def _norm(fid: str) -> str:
    return fid[1:] if fid[:1] == "f" and fid[1:].isdigit() else fid


def read_interpretations(path: Path, where: str) -> list[dict[str, Any]]:
    """Rows of an interpretations.csv; a missing file or column is one line naming it."""
    if not path.is_file():
        raise RadsteerError(f"{where}: {path} not found: run `radsteer interpret` on the study that mined "
                            f"these features first")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise RadsteerError(f"{where}: {path} has no column(s) {', '.join(missing)} "
                                    f"(not an interpretations.csv written by radsteer interpret)")
            rows = []
            for n, row in enumerate(reader, start=2):
                f1_text = (row.get("f1") or "").strip()
                try:
                    f1 = float(f1_text) if f1_text else math.nan
                except ValueError:
                    raise RadsteerError(f"{path}:{n}: f1 {f1_text!r} is not a number") from None
                if not (math.isnan(f1) or 0 <= f1 <= 1):
                    raise RadsteerError(f"{path}:{n}: f1 {f1} is outside [0, 1]")
                if not (row.get("feature_id") or "").strip():
                    raise RadsteerError(f"{path}:{n}: feature_id is empty")
                targets = [t for t in (row.get("targets") or "").split(";") if t.strip()]
                rows.append({"feature_id": row["feature_id"].strip(), "description": row.get("description") or "",
                             "targets": targets, "explainer": row.get("explainer") or "", "f1": f1})
    except (OSError, UnicodeDecodeError) as exc:
        raise RadsteerError(f"{where}: cannot read {path}: {exc}") from None
    return rows


def select_features(path: Path, spec: Any, *, where: str, exclude: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The chosen items ({id, description, targets}), best F1 first; `exclude`: explicit item ids."""
    from evaluation.interpret_lexicon import concept_category

    rows = read_interpretations(path, where)
    skip = {_norm(str(e)) for e in exclude}
    wanted = set(spec.concepts) if spec.concepts else None
    keep = []
    for r in rows:
        if math.isnan(r["f1"]) or r["f1"] < spec.min_f1 or _norm(r["feature_id"]) in skip:
            continue
        if spec.explainer and r["explainer"] != spec.explainer:
            continue
        if wanted is not None and not {concept_category(t) for t in r["targets"]} & wanted:
            continue
        keep.append(r)
    keep.sort(key=lambda r: (-r["f1"], r["feature_id"]))
    if spec.one_per_target:  # best first: a feature sharing a target with a better one is skipped
        seen: set[str] = set()
        distinct = []
        for r in keep:
            if not seen & set(r["targets"]):
                seen |= set(r["targets"])
                distinct.append(r)
        keep = distinct
    if spec.max_features is not None:
        keep = keep[: spec.max_features]
    if not keep and not skip:
        cats = f" with targets in {', '.join(sorted(wanted))}" if wanted else ""
        raise RadsteerError(f"{where}: no feature of {path} has F1 ≥ {spec.min_f1:g}{cats} "
                            f"({len(rows)} interpreted); lower features.select.min_f1 or list items")
    return [{"id": r["feature_id"], "description": r["description"], "targets": r["targets"],
             "interpretability": round(r["f1"], 6)} for r in keep]


def selection_record(loaded: Any) -> dict[str, Any] | None:
    """What the manifest records about a selection: settings, the file's hash and the chosen ids."""
    fs = loaded.protocol.features
    if fs.select is None:
        return None
    from steering.store.manifest import sha256_file

    path = loaded.resolve(fs.select.interpretations)
    return {**fs.select.model_dump(mode="json"), "interpretations": str(path),
            "sha256": sha256_file(path) if path.is_file() else None,
            "features": [i.id for i in fs.items]}  # every steered feature, explicit and selected
