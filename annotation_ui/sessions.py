"""Login sessions kept in the study store, so a server restart logs nobody out.

The browser holds a random token in an HttpOnly cookie; the store holds only its SHA-256 (a
copy of the database hands out no logins), the annotator, and the account's credential version
at login. Every request looks the session up and compares that version with the account's
current one in the annotators file (re-read when it changes): a changed password or role, or a
removed account, ends every session of that account at its next request.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta, timezone

from annotation_ui.accounts import Accounts
from steering.store import StudyStore

COOKIE = "radsteer_session"
DEFAULT_TTL = timedelta(hours=12)
"""A working day: long enough for a reading session, short enough that a forgotten browser on a
shared workstation does not stay logged in for a week."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class Sessions:
    def __init__(self, store: StudyStore, accounts: Accounts, ttl: timedelta = DEFAULT_TTL) -> None:
        self.store, self.accounts, self.ttl = store, accounts, ttl

    def start(self, name: str, credential: str) -> str:
        """A new session for `name` (just authenticated under `credential`); returns the cookie token."""
        now = datetime.now(timezone.utc)
        self.store.delete_sessions(expired_before=now)
        token = secrets.token_urlsafe(32)
        self.store.add_session(token_hash(token), name, credential, now + self.ttl)
        return token

    def user(self, token: str | None) -> str | None:
        """The annotator of a live session, or None (no, unknown, expired or revoked session)."""
        if not token or len(token) > 100:
            return None
        row = self.store.session(token_hash(token))
        if row is None:
            return None
        if row["expires_at"] <= datetime.now(timezone.utc):
            self.store.delete_sessions(token_hash=row["token_hash"])
            return None
        account = self.accounts.get(row["annotator"])
        if account is None or account.credential != row["credential"]:
            self.store.delete_sessions(token_hash=row["token_hash"])  # revoked: the account changed
            return None
        return row["annotator"]

    def end(self, token: str | None) -> None:
        if token and len(token) <= 100:
            self.store.delete_sessions(token_hash=token_hash(token))
