"""API tokens: created with a random secret shown once, kept as a SHA-256 of that secret, revoked by date.

A token reads ``pex_<id>_<secret>``. The secret is 32 random bytes, so a plain SHA-256 is enough to make a
stolen table useless (slow password hashes exist for guessable passwords, which these are not), and checking a
token costs one indexed lookup and one hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from pex.errors import NotFoundError, PexError
from pex.store.engine import db
from pex.store.records import utc
from pex.store.schema import tokens

# decide: the decision API (decisions, outcomes); view: read-only pages of the UI; admin: everything
SCOPES = ("decide", "view", "admin")
PREFIX = "pex_"


@dataclass(frozen=True)
class TokenRecord:
    """A stored token, without its secret."""

    id: str
    name: str
    scope: str
    created_at: datetime
    revoked_at: datetime | None

    def allows(self, scope: str) -> bool:
        """Whether this token may use routes of ``scope`` (``admin`` may use every route; ``view``, the UI's
        read-only pages, only routes of scope ``view``: never the decision API nor an action)."""
        return self.revoked_at is None and (self.scope == "admin" or self.scope == scope)

    def to_dict(self) -> dict[str, Any]:
        """The record for JSON output (never the secret)."""
        return {"id": self.id, "name": self.name, "scope": self.scope, "created_at": self.created_at.isoformat(),
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str] | None:
    """The (id, secret) of a token string, None when it is not shaped like a pex token."""
    if not token.startswith(PREFIX):
        return None
    ident, sep, secret = token[len(PREFIX):].partition("_")
    return (ident, secret) if sep and ident and secret else None


class TokensMixin:
    """Workspace methods for API tokens."""

    @db("create a token in")
    def create_token(self, scope: str, name: str | None = None) -> tuple[TokenRecord, str]:
        """A new token of ``scope``; returns its record and the token string (shown once, never stored)."""
        if scope not in SCOPES:
            raise PexError(f"unknown token scope {scope!r}", f"use one of: {', '.join(SCOPES)}")
        ident, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        name = name or f"{scope}-{ident}"
        with self.engine.begin() as conn:
            conn.execute(tokens.insert().values(id=ident, name=name, scope=scope, secret_hash=_hash(secret), created_at=now))
        return TokenRecord(ident, name, scope, now, None), f"{PREFIX}{ident}_{secret}"

    @db("read the tokens of")
    def list_tokens(self) -> list[TokenRecord]:
        """Every token, revoked ones included, oldest first."""
        with self._read() as conn:
            return [_record(r) for r in conn.execute(sa.select(tokens).order_by(tokens.c.created_at, tokens.c.id))]

    @db("read the tokens of")
    def get_token(self, token_id: str) -> TokenRecord | None:
        """The token with id ``token_id`` (revoked or not), None when there is none; the UI reloads its session's
        token with it on every request, so that revoking logs its user out."""
        with self._read() as conn:
            row = conn.execute(sa.select(tokens).where(tokens.c.id == token_id)).first()
        return _record(row) if row is not None else None

    @db("check a token against")
    def verify_token(self, token: str) -> TokenRecord | None:
        """The record of a valid, unrevoked token string; None for anything else."""
        parts = split_token(token)
        if parts is None:
            return None
        with self._read() as conn:
            row = conn.execute(sa.select(tokens).where(tokens.c.id == parts[0])).first()
        if row is None or row.revoked_at is not None or not hmac.compare_digest(row.secret_hash, _hash(parts[1])):
            return None
        return _record(row)

    @db("revoke a token in")
    def revoke_token(self, ref: str) -> TokenRecord:
        """Revoke a token by id or name (the only UPDATE of the table); revoking twice keeps the first date."""
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(tokens).where((tokens.c.id == ref) | (tokens.c.name == ref))).all()
            if not rows:
                raise NotFoundError(f"no token with id or name {ref!r}", "`pex token list` shows them")
            if len(rows) > 1:
                raise PexError(f"{len(rows)} tokens are named {ref!r}", "revoke by id (`pex token list` shows ids)")
            row = rows[0]
            if row.revoked_at is None:
                conn.execute(tokens.update().where(tokens.c.id == row.id).values(revoked_at=datetime.now(UTC)))
            row = conn.execute(sa.select(tokens).where(tokens.c.id == row.id)).first()
        return _record(row)

    @db("count the tokens of")
    def has_tokens(self) -> bool:
        """Whether any token (revoked or not) was ever created."""
        with self._read() as conn:
            return conn.execute(sa.select(tokens.c.id).limit(1)).first() is not None


def _record(row: Any) -> TokenRecord:
    return TokenRecord(row.id, row.name, row.scope, utc(row.created_at), utc(row.revoked_at) if row.revoked_at else None)
