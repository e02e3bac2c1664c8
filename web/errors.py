"""Every error answer has one shape: ``{"ok": false, "error", "hint", "status"}``."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from pex.errors import PexError

log = logging.getLogger("pex.web")

HINTS = {
    404: "see /api/v1/openapi.json for the routes",
    405: "see /api/v1/openapi.json for each route's methods",
    413: "send fewer units per request",
    415: "send a JSON body with Content-Type: application/json",
}


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

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        return error_response(exc.description or exc.name, HINTS.get(status, ""), status)

    @app.errorhandler(Exception)
    def bug(exc: Exception):
        log.exception("unhandled error")
        return error_response(f"internal error ({exc.__class__.__name__})", "this is a bug in pex; please report it", 500)
