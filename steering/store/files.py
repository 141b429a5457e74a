"""Files and folders radsteer writes: never destroy what radsteer did not create.

Every output folder radsteer creates carries a marker file (`.radsteer-output`, JSON naming the
kind of output). A folder may be replaced or written into only when it is missing, empty, or
carries the marker (or another sign that radsteer wrote it, e.g. a concept-vector `cfg.json`
with its `radsteer` block). Files are replaced atomically: written beside the target, then
renamed over it, so an interrupted write never leaves half a file (docs/design.md, "Files
radsteer may delete or replace").
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from steering.errors import RadsteerError

MARKER = ".radsteer-output"


def marker_kind(folder: str | Path) -> str | None:
    """The kind of radsteer output in `folder`, or None when radsteer did not mark it."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text()).get("kind") or "")
    except (OSError, ValueError, AttributeError):
        return None


def mark(folder: str | Path, kind: str) -> None:
    (Path(folder) / MARKER).write_text(json.dumps({"kind": kind}) + "\n")


def is_replaceable_dir(folder: str | Path, kind: str, recognise: Callable[[Path], bool] | None = None) -> bool:
    """Missing, empty, or radsteer's own output of this kind."""
    p = Path(folder)
    if not p.exists():
        return True
    if not p.is_dir() or p.is_symlink():
        return False
    if not any(p.iterdir()):
        return True
    return marker_kind(p) == kind or bool(recognise and recognise(p))


def check_replaceable_dir(folder: str | Path, kind: str, *, what: str, where: str = "",
                          recognise: Callable[[Path], bool] | None = None) -> None:
    """Raise a one-line RadsteerError unless radsteer may replace `folder`."""
    p = Path(folder)
    if is_replaceable_dir(p, kind, recognise):
        return
    prefix = f"{where}: " if where else ""
    if p.exists() and not p.is_dir():
        raise RadsteerError(f"{prefix}{p} is a file, not a folder for {what}; radsteer will not replace it")
    raise RadsteerError(
        f"{prefix}{p} holds files radsteer did not write; it will not delete them to write {what} "
        f"there: name an empty or new folder"
    )


def replace_dir(target: str | Path, kind: str, write: Callable[[Path], object], *, what: str, where: str = "",
                recognise: Callable[[Path], bool] | None = None) -> Path:
    """Write a folder beside `target` with `write(tmp)`, mark it, then rename it into place.

    Refuses (nothing written) unless `target` is missing, empty or radsteer's own `kind`. An
    interrupted write leaves only a hidden temporary folder beside the target, never a half one.
    """
    target = Path(target)
    check_replaceable_dir(target, kind, what=what, where=where, recognise=recognise)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; an output folder is as readable as any other
    try:
        write(tmp)
        mark(tmp, kind)
        if target.exists():
            # Directories cannot be swapped atomically; move the old one aside (a name we just
            # made unique), move the new one in, then delete the old one — it is ours.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            old.rmdir()
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def claim_dir(folder: str | Path, kind: str, *, what: str, where: str = "",
              recognise: Callable[[Path], bool] | None = None) -> Path:
    """Create `folder` (or accept it when empty or already radsteer's `kind`) and mark it, so
    that radsteer may later overwrite its own files there."""
    p = Path(folder)
    check_replaceable_dir(p, kind, what=what, where=where, recognise=recognise)
    p.mkdir(parents=True, exist_ok=True)
    if marker_kind(p) != kind:
        mark(p, kind)
    return p


def only_files_like(folder: Path, *suffixes: str) -> bool:
    """Every entry of `folder` is a plain file with one of `suffixes` (an unmarked folder that an
    older radsteer wrote, recognised together with where it lies)."""
    return all(p.is_file() and p.suffix in suffixes for p in folder.iterdir())


def write_atomic(path: str | Path, data: str | bytes | Callable[[Path], object]) -> Path:
    """Write text, bytes, or whatever `data(tmp_path)` writes, beside `path`, then rename."""
    p = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    tmp = Path(tmp_name)
    try:
        tmp.chmod(0o644)  # mkstemp makes it private; outputs are ordinary files
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p
