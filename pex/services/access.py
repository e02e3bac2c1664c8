"""Who may call the API: bearer tokens with a scope, checked against the store and remembered briefly."""

from __future__ import annotations

import re
import threading
import time

from pex.errors import ForbiddenError, UnauthorizedError
from pex.store.tokens import SCOPES, TokenRecord
from pex.store.workspace import Workspace

FIRST_TOKEN_NAME = "admin-first-start"
# what `pex token create` makes (pex_<hex id>_<url-safe secret>), with room to spare: anything else is unknown
# without a look-up, so a made-up header (a NUL for PostgreSQL, 8 KiB of junk for the cache) never reaches the store
TOKEN_SHAPE = re.compile(r"pex_[0-9a-f]{1,64}_[A-Za-z0-9_-]{1,128}")


def first_start_token(ws: Workspace) -> str | None:
    """On a workspace that never had a token, create an admin token and return it (to be shown once); else None."""
    if ws.has_tokens():
        return None
    _record, token = ws.create_token("admin", FIRST_TOKEN_NAME)
    return token


class TokenChecker:
    """Checks ``Authorization: Bearer`` headers. A token's verdict is kept for ``ttl`` seconds so that a request
    costs no database query; a revoked token therefore stops working within ``ttl`` seconds."""

    def __init__(self, ws: Workspace, ttl: float = 2.0, max_entries: int = 10_000) -> None:
        self._ws = ws
        self.ttl = ttl
        self._max = max_entries
        self._seen: dict[str, tuple[float, TokenRecord | None]] = {}
        self._lock = threading.Lock()

    def require(self, authorization: str | None, scope: str) -> TokenRecord:
        """The token of an ``Authorization`` header if it allows ``scope``; else 401 (no valid token) or 403."""
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        if not authorization:
            raise UnauthorizedError("this route needs an API token",
                                    "send 'Authorization: Bearer <token>'; `pex token create --scope decide` makes one")
        kind, _, token = authorization.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise UnauthorizedError("the Authorization header must read 'Bearer <token>'",
                                    "send 'Authorization: Bearer <token>'")
        token = token.strip()
        record = self._lookup(token) if TOKEN_SHAPE.fullmatch(token) else None
        if record is None:
            raise UnauthorizedError("the API token is unknown or revoked", "`pex token list` shows the valid tokens")
        if not record.allows(scope):
            wanted = "scope 'admin'" if scope == "admin" else f"scope {scope!r} or 'admin'"
            raise ForbiddenError(f"token {record.name!r} has scope {record.scope!r}; this route needs {scope!r}",
                                 f"use a token with {wanted}; `pex token create --scope {scope}` makes one")
        return record

    def _lookup(self, token: str) -> TokenRecord | None:
        now = time.monotonic()
        with self._lock:
            hit = self._seen.get(token)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        record = self._ws.verify_token(token)
        with self._lock:
            if len(self._seen) >= self._max:  # a flood of made-up tokens must not grow memory without bound
                self._seen.clear()
            self._seen[token] = (now, record)
        return record
