"""Who uses the UI: a named token (``pex token create --name alice --scope admin``), logged in by pasting it.

The session (Flask's signed, HttpOnly, SameSite=Lax cookie) holds only the token's id, never its secret. The token
is reloaded from the store on every request, so revoking it (``pex token revoke alice``) logs its user out at their
next request. ``view`` tokens read; ``admin`` tokens also act; ``decide`` tokens are the API's and may not log in.
The JSON twins also accept ``Authorization: Bearer <view or admin token>``, so scripts can read them.
Every form and POST carries a CSRF token (Flask-WTF's CSRFProtect over the whole app).
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

from flask import Flask, current_app, redirect, request, url_for
from flask_login import LoginManager, UserMixin
from flask_wtf.csrf import CSRFProtect

from pex.store.tokens import TokenRecord, split_token
from pex.store.workspace import Workspace

SECRET_FILE = "ui-secret"
UI_SCOPES = ("view", "admin")  # the scopes that may log in; "decide" is for the decision API only


class User(UserMixin):
    """A logged-in token: ``id`` (the token's id, all the session keeps), ``name`` and ``scope``."""

    def __init__(self, record: TokenRecord) -> None:
        self.id = record.id
        self.name = record.name
        self.scope = record.scope

    @property
    def can_act(self) -> bool:
        """Whether this user may take actions (admin tokens only)."""
        return self.scope == "admin"


class LoginRefused(Exception):
    """Why a pasted token may not log in: ``message`` and ``hint``, shown next to the field."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


def check_login(ws: Workspace, pasted: str) -> User:
    """The user of a pasted token, or :class:`LoginRefused` saying why not."""
    token = pasted.strip()
    if not token:
        raise LoginRefused("paste a token to log in", "`pex token create --scope view --name YOUR-NAME` makes one")
    record = ws.verify_token(token) if split_token(token) is not None else None
    if record is None:
        raise LoginRefused("this token is unknown or revoked",
                           "check that you pasted all of it; `pex token list` shows the valid tokens, "
                           "`pex token create --scope view` makes one")
    if record.scope not in UI_SCOPES:
        raise LoginRefused(f"this token ({record.name}) may only ask for decisions; log in with a view or admin token",
                           "`pex token create --scope view` makes one that may read every page")
    return User(record)


def load_user(ident: str) -> User | None:
    """The session's token, read again from the store on every request: revoked or gone -> logged out."""
    record = current_app.extensions["pex"].ws.get_token(ident)
    if record is None or record.revoked_at is not None or record.scope not in UI_SCOPES:
        return None
    return User(record)


def load_bearer(req) -> User | None:
    """``Authorization: Bearer <token>`` on a GET of a JSON twin (scripts reading pages as data); nothing else."""
    header = req.headers.get("Authorization")
    if not header or req.method != "GET" or not req.path.endswith(".json"):
        return None
    kind, _, token = header.partition(" ")
    token = token.strip()
    if kind.lower() != "bearer" or split_token(token) is None:
        return None
    record = current_app.extensions["pex"].ws.verify_token(token)
    if record is None or record.scope not in UI_SCOPES:
        return None
    return User(record)


def unauthorized():
    """Not logged in: a JSON twin answers 401 in the API's error shape; a page sends the browser to the login form."""
    from web.errors import error_response

    if request.path.endswith(".json"):
        return error_response("this page needs a logged-in view or admin token",
                              "log in at /ui/login, or send 'Authorization: Bearer <view or admin token>'", 401)
    return redirect(url_for("home.login", next=request.full_path.rstrip("?") if request.method == "GET" else None))


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of this UI only (never another site: open redirects)."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target.rstrip("?")
    return url_for("home.experiments")


def init(app: Flask) -> None:
    """Flask-Login and CSRF protection on ``app``."""
    manager = LoginManager()
    manager.session_protection = "basic"
    manager.user_loader(load_user)
    manager.request_loader(load_bearer)
    manager.unauthorized_handler(unauthorized)
    manager.init_app(app)
    CSRFProtect(app)


def stored_secret(home: Path | str) -> str:
    """The key that signs session cookies, kept in ``<home>/ui-secret``: made once (mode 0600) and read by every
    later start, so sessions survive a restart. Two workers starting at once agree: each writes its candidate to a
    private file and hard-links it into place, which fails for all but the first; the others read the winner's."""
    path = Path(home) / SECRET_FILE
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    candidate = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(candidate, path)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
    finally:
        candidate.unlink(missing_ok=True)
    return _read_secret(path)


def _read_secret(path: Path) -> str:
    text = path.read_text(encoding="ascii").strip()
    if len(text) < 32:
        from pex.errors import StoreError

        raise StoreError(f"the UI's key file {path} is damaged (too short)",
                         "delete it: `pex ui` makes a new one (everyone logs in again)")
    return text
