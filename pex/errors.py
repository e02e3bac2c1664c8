"""The one error family of pex.

Every error a user can cause is a :class:`PexError` carrying a one-line
``message`` (what is wrong) and a ``hint`` (how to fix it). The CLI prints both
and exits 2; the HTTP API maps each subclass to a status code in one handler.
Anything that is not a ``PexError`` is a bug and keeps its traceback.
"""

from __future__ import annotations


class PexError(Exception):
    """Base class for errors caused by the user's input or request."""

    status: int = 400

    def __init__(self, message: str, hint: str = "", *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # the spec field the error concerns ("unit", "metrics.revenue.max_harm", ...), set where it is raised, so
        # that a form can show the error next to its input without matching the message's words
        self.field = field

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        """The error as JSON: message, hint and status."""
        return {"ok": False, "error": self.message, "hint": self.hint, "status": self.status}


class SpecError(PexError):
    """The experiment spec (TOML) is malformed or inconsistent."""


class DataError(PexError):
    """The experiment data does not match the spec or is unusable."""

    status = 422


class NotFoundError(PexError):
    """A named experiment, dataset version or artifact does not exist."""

    status = 404


class UnauthorizedError(PexError):
    """A request without a valid API token."""

    status = 401


class ForbiddenError(PexError):
    """A valid API token whose scope does not cover the request."""

    status = 403


class StoreError(PexError):
    """The workspace cannot be opened or written."""

    status = 500


class UnavailableError(PexError):
    """The server cannot take the request now (e.g. its decision log cannot be written): retry later or elsewhere.

    Not a :class:`StoreError`: its message says what is wrong and names no path, so the API answers it as it is
    (503) rather than with the generic "store unavailable".
    """

    status = 503


class BusyError(PexError):
    """The workspace is busy: its writers' lock (or the database's write lock) was not free within the deadline.

    Not a :class:`StoreError`: nothing is broken and the message names no path, so the API answers it as it is
    (503, retry later) and the CLI exits 2 with it.
    """

    status = 503


class NotFittedError(PexError, ValueError):
    """An estimator was used before ``fit``."""


class UncertifiedError(PexError):
    """A publish of a policy version that is not certified to keep its guardrails, without an override
    (:func:`pex.services.publishing.publish_checked`): a conflict with the gate, not a malformed request."""

    status = 409
