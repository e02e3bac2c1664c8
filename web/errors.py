"""Every error answer has one shape: ``{"ok": false, "error", "hint", "status"}``.

No answer names a file path or a database URL: a :class:`~pex.errors.StoreError` says where the workspace is (right
on the command line, a leak over HTTP), so the API answers it with a generic 503 and logs the detail under a
reference that the answer quotes.
"""

from __future__ import annotations

import logging
import uuid

from flask import Flask, current_app, jsonify
from werkzeug.exceptions import HTTPException

from pex.errors import PexError, StoreError

log = logging.getLogger("pex.web")

HINTS = {
    404: "see /api/v1/openapi.json for the routes",
    405: "see /api/v1/openapi.json for each route's methods",
    413: "send a smaller body: fewer units or records per request",
    415: "send a JSON body with Content-Type: application/json",
}
STORE_UNAVAILABLE = "the workspace's store is unavailable"
TOO_DEEP = "the request is nested too deeply to read"
NOT_UNICODE = "the request holds text that is not valid Unicode (a lone surrogate such as \\ud800?)"


def error_response(message: str, hint: str, status: int):
    """A Flask response with the error shape."""
    response = jsonify({"ok": False, "error": message, "hint": hint, "status": status})
    response.status_code = status
    return response


def register_errors(app: Flask) -> None:
    """Turn pex errors, HTTP errors and bugs into the error shape (a bug is a 500 and is logged)."""

    @app.errorhandler(PexError)
    def pex_error(exc: PexError):
        status = exc.status if exc.status < 500 else 503  # the store is down: retry later
        return error_response(exc.message, exc.hint, status)

    @app.errorhandler(StoreError)
    def store_error(exc: StoreError):
        ref = uuid.uuid4().hex[:12]
        log.error("store error (ref %s): %s; %s", ref, exc.message, exc.hint)
        return error_response(STORE_UNAVAILABLE, f"retry later; if it lasts, the server's log says why (ref {ref})", 503)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:  # werkzeug's text ("exceeds the capacity limit") names neither the limit nor the setting
            limit = current_app.config.get("MAX_CONTENT_LENGTH")
            message = f"the request body is larger than this server's limit of {limit:,} bytes (max_content_length)"
        return error_response(message, HINTS.get(status, ""), status)

    # The two exceptions below come from what a client sent, not from a bug: pex recurses only over request
    # structures (parsing, messages quoting a value), and encodes only the client's text (hashing a unit id,
    # writing a name to the store). The routes validate their input, so these are the net under that validation:
    # whatever slips through is still the client's 4xx, never a 500 (logged, to find the check that missed it).
    @app.errorhandler(RecursionError)
    def too_deep(exc: RecursionError):
        log.warning("request nested too deeply: %s", exc)
        return error_response(TOO_DEEP, "send JSON nested a few levels deep, as the OpenAPI document shows", 400)

    @app.errorhandler(UnicodeError)
    def not_unicode(exc: UnicodeError):
        log.warning("request text not encodable: %s", exc)
        return error_response(NOT_UNICODE, "send text as UTF-8; escape only whole characters (\\uXXXX pairs)", 422)

    @app.errorhandler(Exception)
    def bug(exc: Exception):
        log.exception("unhandled error")
        return error_response(f"internal error ({exc.__class__.__name__})", "this is a bug in pex; please report it", 500)
