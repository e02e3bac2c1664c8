"""Errors as pages: what went wrong and how to fix it (the :class:`~pex.errors.PexError`'s message and hint), never
a stack trace. A JSON twin (a path ending ``.json``) answers in the API's error shape instead (web/errors.py).

Statuses are the API's: a PexError's own (404 for an unknown experiment, 422 for bad data...), a broken store 503
with a reference (its message names paths, which a browser must not see), a bug 500 with a reference; both
references are in the server's log next to the detail.
"""

from __future__ import annotations

import logging
import uuid

from flask import Flask, current_app, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from pex.errors import PexError, StoreError
from web.errors import STORE_UNAVAILABLE, error_response

log = logging.getLogger("pex.web.ui")

# what each HTTP error means to someone using the pages, and what to do about it
PAGES = {
    400: ("the request could not be understood", "go back and try again"),
    401: ("this page needs you to log in", "log in with a view or admin token"),
    403: ("your token may not do this", "only admin tokens may take actions; `pex token create --scope admin` makes one"),
    404: ("there is no such page", "start again from the experiments list"),
    405: ("this address does not take that kind of request", "use the page's buttons and links"),
}


def _wants_json() -> bool:
    return request.path.endswith(".json")


def render_error(message: str, hint: str, status: int, ref: str | None = None):
    """The error page (or the JSON twin's error) with ``status``."""
    if _wants_json():
        return error_response(message, hint, status)
    return render_template("error.html", message=message, hint=hint, status=status, ref=ref), status


def _upload_limit_message() -> tuple[str, str]:
    limit = current_app.config.get("UI_MAX_UPLOAD") or current_app.config.get("MAX_CONTENT_LENGTH") or 0
    return (f"the file is larger than this server's upload limit of {limit / 2**20:,.0f} MiB",
            "upload a smaller file (Parquet is usually much smaller than CSV), or raise PEX_UI_MAX_UPLOAD "
            "(ui_max_upload in the PEX_CONFIG file) and restart `pex ui`")


def init(app: Flask) -> None:
    """Register the UI's error handlers on ``app``."""

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return render_error(f"the form's security token is missing or expired ({exc.description})",
                            "reload the page and submit the form again; pex refuses forms that it did not serve", 400)

    @app.errorhandler(PexError)
    def pex_error(exc: PexError):
        if isinstance(exc, StoreError):
            ref = uuid.uuid4().hex[:12]
            log.error("store error (ref %s): %s; %s", ref, exc.message, exc.hint)
            return render_error(STORE_UNAVAILABLE, f"retry later; if it lasts, see the server's log (ref {ref})", 503,
                                ref)
        status = exc.status if exc.status < 500 else 503
        return render_error(exc.message, exc.hint, status)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        if status == 413:
            message, hint = _upload_limit_message()
        elif status in PAGES:
            message, hint = PAGES[status]
            if status == 403 and exc.description and not exc.description.startswith("You don't have"):
                message = exc.description  # a view's own reason (werkzeug's default text says nothing useful)
        else:
            message, hint = exc.name.lower(), "go back and try again"
        return render_error(message, hint, status)

    @app.errorhandler(Exception)
    def bug(exc: Exception):
        ref = uuid.uuid4().hex[:12]
        log.exception("unhandled error in the UI (ref %s)", ref)
        return render_error(f"something went wrong inside pex (reference {ref})",
                            "this is a bug in pex: see the server's log for this reference, and please report it",
                            500, ref)
