"""Annotator accounts: a JSON file of salted scrypt password hashes.

Why a file and not Gradio's plain (user, password) tuples: a reader study keeps its accounts
next to the study for months, and a file of plain passwords would leak every login. The file
holds only salts and hashes (scrypt, memory-hard), is written with mode 0600, and is re-read
on each login so that a coordinator can add a radiologist without restarting the server.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from steering.errors import RadsteerError

ROLES = ("annotator", "adjudicator", "admin")
"""`annotator`: gets a queue per assigned task and annotates. `adjudicator`: resolves the double
reads on which annotators disagreed and the flagged items. `admin`: sees everyone's progress."""

TASKS = ("change", "feature")
"""The annotation tasks an annotator can be assigned (all of them unless the account says)."""

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MIN_PASSWORD = 8
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    salt: str  # hex
    hash: str  # hex
    n: int = _SCRYPT["n"]
    r: int = _SCRYPT["r"]
    p: int = _SCRYPT["p"]
    tasks: tuple[str, ...] = TASKS

    def check(self, password: str) -> bool:
        return hmac.compare_digest(_hash(password, bytes.fromhex(self.salt), self.n, self.r, self.p), self.hash)

    @property
    def credential(self) -> str:
        """The account's credential version: changes with its password (new salt) or role, so a
        session that began under another version is refused (see `annotation_ui.sessions`)."""
        return hashlib.sha256(f"{self.name}:{self.role}:{self.salt}:{self.hash}".encode()).hexdigest()[:32]


def _hash(password: str, salt: bytes, n: int, r: int, p: int) -> str:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024,
                          dklen=32).hex()


_DUMMY = Account("", "annotator", "00" * 16, "00" * 32)
"""Checked against for unknown users so that a wrong user name costs the same time as a wrong
password and the login page does not reveal which names exist."""


class Accounts:
    """The accounts of one study, loaded from `path` (which may not exist yet)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.users: dict[str, Account] = {}
        self._stamp: tuple | None = None
        self.reload()

    def _file_stamp(self) -> tuple | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload(self) -> None:
        stamp = self._file_stamp()
        self.users = _read(self.path) if stamp is not None else {}
        self._stamp = stamp

    def refresh(self) -> None:
        """Re-read the file when it changed (a stat per call): a removed account or changed password
        takes effect on the next request. An unreadable file keeps the last good accounts."""
        if self._file_stamp() != self._stamp:
            try:
                self.reload()
            except RadsteerError:
                pass

    def get(self, name: str) -> Account | None:
        self.refresh()
        return self.users.get(name)

    def tasks_of(self, name: str) -> tuple[str, ...]:
        """The annotation tasks of an annotator (none for admins and adjudicators)."""
        a = self.get(name)
        return a.tasks if a is not None and a.role == "annotator" else ()

    # ---- questions ------------------------------------------------------------------------

    def verify(self, name: str, password: str) -> bool:
        """True when `name` exists and `password` is its password (re-reads the file if it changed).

        Costs one scrypt (~50 ms of CPU) whether or not the user exists; the server calls it in a
        worker thread, never on its event loop."""
        return self.check(name, password) is not None

    def check(self, name: str, password: str) -> Account | None:
        """The account when `password` is right (the account as it was when checked), else None."""
        account = self.get(name)
        ok = (account or _DUMMY).check(password)
        return account if account is not None and ok else None

    def annotators(self, task: str | None = None) -> list[str]:
        return sorted(n for n, a in self.users.items() if a.role == "annotator" and (task is None or task in a.tasks))

    def role(self, name: str) -> str | None:
        a = self.get(name)
        return a.role if a is not None else None

    def is_admin(self, name: str) -> bool:
        return self.role(name) == "admin"

    def __contains__(self, name: object) -> bool:
        return name in self.users

    def __len__(self) -> int:
        return len(self.users)

    # ---- changes --------------------------------------------------------------------------

    def add(self, name: str, password: str, role: str = "annotator", tasks: tuple[str, ...] | None = None) -> Account:
        """Add a user or change an existing user's password/role/tasks; writes the file (mode 0600).

        `tasks`: the annotator's tasks (default: all, or the ones the account already had)."""
        if tasks is not None:
            bad = [t for t in tasks if t not in TASKS]
            if bad or not tasks:
                raise RadsteerError(f"--task {', '.join(bad) or '(none)'}: expected one or more of {', '.join(TASKS)}")
        elif name in self.users:
            tasks = self.users[name].tasks
        if not NAME_RE.match(name):
            raise RadsteerError(f"user name {name!r}: use 1-64 letters, digits, '_', '.' or '-'")
        if role not in ROLES:
            raise RadsteerError(f"role {role!r}: must be one of {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD:
            raise RadsteerError(f"password for {name!r}: at least {MIN_PASSWORD} characters, please")
        salt = secrets.token_bytes(16)
        account = Account(name, role, salt.hex(), _hash(password, salt, **_SCRYPT), **_SCRYPT,
                          tasks=tuple(t for t in TASKS if t in (tasks or TASKS)))
        self.users[name] = account
        self.save()
        return account

    def save(self) -> None:
        data = {"version": 1, "users": [
            {"name": a.name, "role": a.role, "tasks": list(a.tasks),
             "scrypt": {"n": a.n, "r": a.r, "p": a.p, "salt": a.salt, "hash": a.hash}}
            for a in sorted(self.users.values(), key=lambda a: a.name)
        ]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, self.path)
        self._stamp = self._file_stamp()

    def remove(self, name: str) -> None:
        """Delete an account (its sessions stop working on their next request)."""
        if name not in self.users:
            raise RadsteerError(f"user {name!r} is not in {self.path}")
        del self.users[name]
        self.save()


def _read(path: Path) -> dict[str, Account]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        users = {}
        for u in data["users"]:
            s = u["scrypt"]
            if u["role"] not in ROLES:
                raise ValueError(f"unknown role {u['role']!r}")
            tasks = tuple(u.get("tasks") or TASKS)
            if any(t not in TASKS for t in tasks):
                raise ValueError(f"user {u['name']!r}: unknown task in {list(tasks)}")
            users[u["name"]] = Account(u["name"], u["role"], s["salt"], s["hash"], int(s["n"]), int(s["r"]),
                                       int(s["p"]), tasks=tasks)
        return users
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RadsteerError(
            f"annotators file {path}: cannot read it ({exc}); recreate it with "
            f"`radsteer annotate RUN_DIR --add-user NAME`"
        ) from exc


def add_user(path: str | Path, name: str, password: str, role: str = "annotator",
             tasks: tuple[str, ...] | None = None) -> Account:
    """Add (or update) one user in the annotators file at `path`."""
    return Accounts(path).add(name, password, role, tasks)
