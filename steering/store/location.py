"""Where a study's database lives: `runs/<name>/study.sqlite` by default, or a server.

The run directory always keeps protocol.yaml, manifest.json and the files a study writes; only
the tables may live elsewhere. The URL comes from, in order: the caller (`--store-url`), the
environment (`RADSTEER_STORE_URL`), the run directory's `store.json` (written the first time a
study is opened on a server, without any password, so that `radsteer evaluate runs/<name>`
finds the same database later), else the SQLite file. Passwords come from the URL given at run
time or libpq's own sources (PGPASSWORD, ~/.pgpass), never from a file radsteer wrote.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sqlalchemy.engine import make_url

from steering.errors import RadsteerError

DB_FILENAME = "study.sqlite"
STORE_URL_ENV = "RADSTEER_STORE_URL"
STORE_FILENAME = "store.json"


def sqlite_url(run_dir: str | Path) -> str:
    return f"sqlite:///{(Path(run_dir) / DB_FILENAME).resolve()}"


def public_url(url: str) -> str:
    """The URL without its password: safe to print, log or write to disk."""
    try:
        return make_url(url)._replace(password=None).render_as_string(hide_password=False)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as the user's text, minus nothing secret
        return "<unparsable store URL>"


def recorded_url(run_dir: str | Path) -> str | None:
    path = Path(run_dir) / STORE_FILENAME
    if not path.is_file():
        return None
    try:
        url = json.loads(path.read_text(encoding="utf-8"))["url"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RadsteerError(f"{path}: not a radsteer store file ({exc}); it should hold {{\"url\": ...}}") from None
    return str(url)


def resolve_url(run_dir: str | Path, url: str | None = None) -> str:
    """The study's database URL (see the module docstring for the order)."""
    chosen = url or os.environ.get(STORE_URL_ENV) or recorded_url(run_dir) or sqlite_url(run_dir)
    try:
        make_url(chosen)
    except Exception as exc:  # noqa: BLE001 - sqlalchemy raises ArgumentError and others
        raise RadsteerError(f"store URL {chosen.split('@')[-1]!r} is not a database URL ({exc}); "
                            "e.g. postgresql+psycopg://user@host/db") from None
    return chosen


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def has_study(run_dir: str | Path, url: str | None = None) -> bool:
    """Whether the run directory's study has a database: its SQLite file, or a server URL."""
    resolved = resolve_url(run_dir, url)
    if is_sqlite(resolved):
        database = make_url(resolved).database
        return bool(database) and Path(database).is_file()
    return True


def record_url(run_dir: str | Path, url: str) -> None:
    """Write `store.json` (password masked) so later commands on this run directory find the
    server; atomic, and only when it changes."""
    if is_sqlite(url):
        return
    path = Path(run_dir) / STORE_FILENAME
    shown = public_url(url)
    if path.is_file():
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("url") == shown:
                return
        except ValueError:
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(STORE_FILENAME + ".tmp")
    tmp.write_text(json.dumps({"url": shown}, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
