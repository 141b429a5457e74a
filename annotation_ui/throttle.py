"""Login back-off, per account and per client.

Why both: a client guessing passwords for many accounts is stopped by its own counter, and
many clients guessing one account's password are stopped by the account's. The account limit
is looser and capped lower, so that someone hammering a colleague's name can slow that
colleague's login (by at most `cap_account` seconds) but never lock them out for long; a
successful login clears the counters it passed through.

State is in memory (one server process) and bounded: entries idle longer than `forget` are
dropped, and the table never grows past `max_entries`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Entry:
    fails: int = 0
    last: float = 0.0
    blocked_until: float = 0.0


class LoginThrottle:
    def __init__(self, *, free_client: int = 5, free_account: int = 10, base: float = 1.0,
                 cap_client: float = 300.0, cap_account: float = 60.0, forget: float = 900.0,
                 max_entries: int = 50_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.free = {"client": free_client, "account": free_account}
        self.cap = {"client": cap_client, "account": cap_account}
        self.base, self.forget, self.max_entries, self.clock = base, forget, max_entries, clock
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()

    def retry_after(self, account: str, client: str) -> int:
        """Whole seconds until this (account, client) may try again; 0 = go ahead."""
        now = self.clock()
        with self._lock:
            wait = 0.0
            for key in (("account", account), ("client", client)):
                e = self._entries.get(key)
                if e is not None:
                    wait = max(wait, e.blocked_until - now)
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, account: str, client: str) -> int:
        """Record a failed login; returns the client's failures in a row."""
        now = self.clock()
        with self._lock:
            self._prune(now)
            out = 0
            for kind, who in (("account", account), ("client", client)):
                e = self._entries.setdefault((kind, who), _Entry())
                if now - e.last > self.forget:
                    e.fails = 0
                e.fails += 1
                e.last = now
                over = e.fails - self.free[kind]
                if over >= 0:
                    e.blocked_until = now + min(self.cap[kind], self.base * 2.0 ** over)
                out = e.fails
            return out

    def succeeded(self, account: str, client: str) -> None:
        with self._lock:
            self._entries.pop(("account", account), None)
            self._entries.pop(("client", client), None)

    def _prune(self, now: float) -> None:
        if len(self._entries) < self.max_entries:
            return
        for key in [k for k, e in self._entries.items() if now - e.last > self.forget and e.blocked_until <= now]:
            del self._entries[key]
        if len(self._entries) >= self.max_entries:  # a flood of fresh names: forget the oldest half
            for key in sorted(self._entries, key=lambda k: self._entries[k].last)[: self.max_entries // 2]:
                del self._entries[key]
