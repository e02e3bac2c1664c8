"""Routes that need a token: ``@requires("decide")`` or ``@requires("admin")`` (admin may do everything)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import current_app, g, request


def requires(scope: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Answer 401 without a valid bearer token and 403 when its scope does not cover ``scope``."""

    def wrap(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            g.token = current_app.extensions["pex"].tokens.require(request.headers.get("Authorization"), scope)
            return view(*args, **kwargs)

        inner.scope = scope  # read by the OpenAPI document and the auth tests
        return inner

    return wrap
