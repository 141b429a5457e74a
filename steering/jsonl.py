"""Reading JSONL inputs (cases, corpora, label pairs) with errors that name file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from steering.errors import RadsteerError


def iter_jsonl(path: str | Path, *, what: str = "JSONL file") -> Iterator[tuple[int, str, dict[str, Any]]]:
    """Yield (line number, "file:line", object) for each non-blank line, streaming the file.

    A missing file, text that is not UTF-8, a line that is not JSON or not a JSON object each
    raise one `RadsteerError` naming the file (and line).
    """
    path = Path(path)
    if not path.is_file():
        raise RadsteerError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RadsteerError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
                if not isinstance(obj, dict):
                    raise RadsteerError(f"{where}: each line must be one JSON object")
                yield lineno, where, obj
    except UnicodeDecodeError as exc:
        raise RadsteerError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise RadsteerError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
