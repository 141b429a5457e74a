"""MAIRA-2 studies as JSONL: one imaging study per line.

    {"case_id": "p10-s5", "frontal": "img/p10_s5_pa.png", "lateral": "img/p10_s5_lat.png",
     "prior_frontal": "img/p10_s4_pa.png", "prior_report": "...", "indication": "...",
     "technique": "PA and lateral", "comparison": "...", "split": "test"}

`case_id` and `frontal` are required; every other field is optional (absent text sections become
"N/A" in the prompt). Image paths are relative to the JSONL file (absolute paths also work) and
are resolved and checked when the file is read (`protocols.cases.read_cases_jsonl` with
`parse_case`), so a sweep never starts on a study whose images are missing. Errors name the
file, the line and the field.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from steering.errors import RadsteerError

IMAGE_FIELDS = ("frontal", "lateral", "prior_frontal")
TEXT_FIELDS = ("prior_report", "indication", "technique", "comparison")
SPLITS = ("tune", "test")
KNOWN_FIELDS = ("case_id", *IMAGE_FIELDS, *TEXT_FIELDS, "split")


def parse_case(raw: Any, *, base_dir: Path, where: str) -> dict[str, Any]:
    """Validate one study; image paths resolved against `base_dir`. `where` names file:line."""
    if not isinstance(raw, dict):
        raise RadsteerError(f"{where}: each line must be a JSON object, not {type(raw).__name__}")
    for name in sorted(set(raw) - set(KNOWN_FIELDS)):  # extra columns pass through; typos do not
        close = difflib.get_close_matches(name, KNOWN_FIELDS, n=1, cutoff=0.8)
        if close:
            raise RadsteerError(f"{where}: unknown field {name!r} — did you mean {close[0]!r}?")
    case_id = raw.get("case_id")
    if not isinstance(case_id, str) or not case_id.strip():
        raise RadsteerError(f"{where}: field 'case_id' is missing or empty (a non-empty string is required)")
    case: dict[str, Any] = {k: v for k, v in raw.items() if k not in KNOWN_FIELDS}
    case["case_id"] = case_id
    for field in IMAGE_FIELDS:
        value = raw.get(field)
        if value is None or value == "":
            if field == "frontal":
                raise RadsteerError(f"{where}: case {case_id!r} has no 'frontal' image (required)")
            case[field] = None
            continue
        if not isinstance(value, str):
            raise RadsteerError(f"{where}: field {field!r} of case {case_id!r} must be an image path string")
        path = Path(value).expanduser()
        path = path if path.is_absolute() else (base_dir / path)
        if not path.is_file():
            raise RadsteerError(f"{where}: {field} image of case {case_id!r} not found: {path}")
        case[field] = str(path.resolve())
    for field in TEXT_FIELDS:
        value = raw.get(field)
        if value is not None and not isinstance(value, str):
            raise RadsteerError(f"{where}: field {field!r} of case {case_id!r} must be a string or null")
        case[field] = value
    if "split" in raw:  # absent: the protocol's seeded split assigns it (protocols.cases.assign_splits)
        split = raw["split"]
        if split not in SPLITS:
            raise RadsteerError(f"{where}: field 'split' of case {case_id!r} must be one of {SPLITS}, not {split!r}")
        case["split"] = split
    return case


def resolve_case_images(case: dict[str, Any], source: str | Path) -> dict[str, Any]:
    """One study read elsewhere (a protocol's cases file, `--case`): images resolved against the
    directory of `source` (the file the case came from) and checked."""
    source = Path(source)
    where = f"{source} (case {case.get('case_id')!r})"
    return parse_case(case, base_dir=source.parent, where=where)

