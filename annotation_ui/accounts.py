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

ROLES = ("annotator", "admin")
"""`annotator`: gets a queue and annotates. `admin`: sees everyone's progress, has no queue."""

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

    def check(self, password: str) -> bool:
        return hmac.compare_digest(_hash(password, bytes.fromhex(self.salt), self.n, self.r, self.p), self.hash)


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
        if self.path.exists():
            self.users = _read(self.path)

    def reload(self) -> None:
        self.users = _read(self.path) if self.path.exists() else {}

    # ---- questions ------------------------------------------------------------------------

    def verify(self, name: str, password: str) -> bool:
        """True when `name` exists and `password` is its password (re-reads the file first)."""
        try:
            self.reload()
        except RadsteerError:
            return False
        account = self.users.get(name)
        ok = (account or _DUMMY).check(password)
        return account is not None and ok

    def annotators(self) -> list[str]:
        return sorted(n for n, a in self.users.items() if a.role == "annotator")

    def is_admin(self, name: str) -> bool:
        a = self.users.get(name)
        return a is not None and a.role == "admin"

    def __contains__(self, name: object) -> bool:
        return name in self.users

    def __len__(self) -> int:
        return len(self.users)

    # ---- changes --------------------------------------------------------------------------

    def add(self, name: str, password: str, role: str = "annotator") -> Account:
        """Add a user or change an existing user's password/role; writes the file (mode 0600)."""
        if not NAME_RE.match(name):
            raise RadsteerError(f"user name {name!r}: use 1-64 letters, digits, '_', '.' or '-'")
        if role not in ROLES:
            raise RadsteerError(f"role {role!r}: must be one of {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD:
            raise RadsteerError(f"password for {name!r}: at least {MIN_PASSWORD} characters, please")
        salt = secrets.token_bytes(16)
        account = Account(name, role, salt.hex(), _hash(password, salt, **_SCRYPT), **_SCRYPT)
        self.users[name] = account
        self.save()
        return account

    def save(self) -> None:
        data = {"version": 1, "users": [
            {"name": a.name, "role": a.role,
             "scrypt": {"n": a.n, "r": a.r, "p": a.p, "salt": a.salt, "hash": a.hash}}
            for a in sorted(self.users.values(), key=lambda a: a.name)
        ]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, self.path)


def _read(path: Path) -> dict[str, Account]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        users = {}
        for u in data["users"]:
            s = u["scrypt"]
            if u["role"] not in ROLES:
                raise ValueError(f"unknown role {u['role']!r}")
            users[u["name"]] = Account(u["name"], u["role"], s["salt"], s["hash"], int(s["n"]), int(s["r"]),
                                       int(s["p"]))
        return users
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RadsteerError(
            f"annotators file {path}: cannot read it ({exc}); recreate it with "
            f"`radsteer annotate RUN_DIR --add-user NAME`"
        ) from exc


def add_user(path: str | Path, name: str, password: str, role: str = "annotator") -> Account:
    """Add (or update) one user in the annotators file at `path`."""
    return Accounts(path).add(name, password, role)
