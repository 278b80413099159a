"""API tokens: named secrets with scopes, kept hashed in the ``tokens`` table.

The table is configuration, not history: tokens are never written as events, a
rebuild never touches them, and every node reading the same database shares
them. Only a SHA-256 of each secret is stored; the secret is shown once, when it
is made (or read from a file, for provisioning containers and scripts).
Verification reads a snapshot of the table that is at most ``refresh`` seconds
old, so a token created or revoked on one node holds on every node within that
time, and a request costs one hash and one dictionary lookup.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from orderlog.domain.errors import FieldError, StoreUnavailableError, ValidationError
from orderlog.domain.order import is_blank
from orderlog.storage.peek import peek
from orderlog.storage.store import EventStore

ADMIN = "admin"
SCOPES = ("orders:write", "orders:read", "events:read", "metrics:read", ADMIN)
SCOPES_SAID = ", ".join(SCOPES)
SECRET_PREFIX = "olt_"
MIN_SECRET_LENGTH = 24
MAX_NAME_LENGTH = 64


@dataclass(frozen=True)
class Token:
    name: str
    scopes: frozenset[str]
    created_at: str

    def allows(self, scope: str) -> bool:
        return ADMIN in self.scopes or scope in self.scopes


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(text: str) -> frozenset[str]:
    """``orders:write,orders:read`` as a set; ValidationError naming an unknown scope."""
    scopes = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = sorted(scopes - set(SCOPES))
    if unknown:
        said = f"unknown scope{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}"
        raise ValidationError([FieldError("--scopes", f"{said}; the scopes are {SCOPES_SAID}")])
    if not scopes:
        raise ValidationError([FieldError("--scopes", f"name one or more of {SCOPES_SAID}")])
    return scopes


class TokenStore:
    def __init__(self, store: EventStore, *, refresh: float = 1.0) -> None:
        self.store = store
        self._p = store.param
        self._refresh = refresh
        self._lock = threading.Lock()
        self._by_digest: dict[str, Token] = {}
        self._read_at = float("-inf")

    # -- managing -----------------------------------------------------------------------

    def create(self, name: str, scopes: Iterable[str], secret: str | None = None) -> str:
        """Store a new token and return its secret (generated unless given)."""
        _check_name(name)
        scope_set = frozenset(scopes)
        if not scope_set or scope_set - set(SCOPES):
            raise ValidationError([FieldError("--scopes", f"must be some of {', '.join(SCOPES)}")])
        if secret is None:
            secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        elif len(secret) < MIN_SECRET_LENGTH or not secret.isprintable() or " " in secret:
            raise ValidationError(
                [
                    FieldError(
                        "secret",
                        f"must be at least {MIN_SECRET_LENGTH} printable characters, no spaces",
                    )
                ]
            )
        p = self._p
        if self.get(name) is not None:
            raise ValidationError([FieldError("--name", f"a token named {name!r} exists")])
        with self.store.writing() as cursor:
            cursor.execute(
                f"INSERT INTO tokens (name, secret_sha256, scopes, created_at) "
                f"VALUES ({p}, {p}, {p}, {p})",
                [
                    name,
                    digest(secret),
                    ",".join(sorted(scope_set)),
                    datetime.now(UTC).isoformat(timespec="seconds"),
                ],
            )
        self._read_at = float("-inf")
        return secret

    def revoke(self, name: str) -> bool:
        """Remove the token; False if there was none of that name."""
        with self.store.writing() as cursor:
            cursor.execute(f"DELETE FROM tokens WHERE name = {self._p}", [name])
            removed = cursor.rowcount > 0
        self._read_at = float("-inf")
        return removed

    def list(self) -> list[Token]:
        rows = self.store.read("SELECT name, scopes, created_at FROM tokens ORDER BY name")
        return [Token(name, frozenset(scopes.split(",")), at) for name, scopes, at in rows]

    def get(self, name: str) -> Token | None:
        return next((t for t in self.list() if t.name == name), None)

    # -- checking -----------------------------------------------------------------------

    def any(self) -> bool:
        """Whether any token exists (as of the snapshot, at most ``refresh`` seconds old)."""
        return bool(self._snapshot())

    def verify(self, secret: str) -> Token | None:
        return self._snapshot().get(digest(secret))

    def _snapshot(self) -> dict[str, Token]:
        """The tokens as last read. A stale snapshot is refreshed in the background, never
        on a request's time: a stalled database must not hold every request up behind
        the one refreshing (nor one request for a read and then for its own write)."""
        now = time.monotonic()
        if now - self._read_at < self._refresh:
            return self._by_digest
        if self._read_at == float("-inf"):  # never read (or just changed here): read now
            with self._lock:
                if self._read_at == float("-inf"):
                    self._read(now)
            return self._by_digest
        if self._lock.acquire(blocking=False):  # one refresh at a time
            threading.Thread(target=self._refresh_now, name="orderlog-tokens", daemon=True).start()
        return self._by_digest

    def _refresh_now(self) -> None:
        try:
            self._read(time.monotonic())
        except StoreUnavailableError:
            pass  # keep the last snapshot through an outage; the next request tries again
        finally:
            self._lock.release()

    def _read(self, now: float) -> None:
        rows = self.store.read("SELECT name, secret_sha256, scopes, created_at FROM tokens")
        self._by_digest = {
            sha: Token(name, frozenset(scopes.split(",")), at) for name, sha, scopes, at in rows
        }
        self._read_at = now


def _check_name(name: str) -> None:
    if not 1 <= len(name) <= MAX_NAME_LENGTH or not name.isprintable() or is_blank(name):
        raise ValidationError(
            [
                FieldError(
                    "--name", f"must be 1 to {MAX_NAME_LENGTH} printable characters, not blank"
                )
            ]
        )


def any_token_stored(url: str, timeout: float | None = None) -> bool:
    """Whether the database at ``url`` holds an API token, found before the node opens
    its log: nothing is created, migrated or written (a start refused for want of a
    token leaves no trace). No SQLite file, or no tokens table yet, holds none.

    StartupError, in one line with a hint, when the database cannot be read.
    """
    return bool(peek(url, "tokens", "SELECT 1 FROM tokens LIMIT 1", timeout))
