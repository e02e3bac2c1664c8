"""Every UI page has a JSON twin (datasette's rule): ``GET /ui/X`` renders a template over the dict that
``GET /ui/X.json`` returns, and both come from the same :mod:`pex.services.pages` function.

The cell rule, which the browser tests check on every page: a table built from a list in the page's dict carries
``data-twin="<key>"`` (a dotted path into the dict) and each of its cells ``data-field="<field>"``; the cell's text
is ``str(row[field])`` of the row at the same position (``_macros.html``'s ``twin_table`` writes such tables). So
the dict holds the display text of a cell (``"+2.3% (+0.4% to +4.1%)"``) next to its raw numbers, and whatever a
page shows can be fetched and tested as data.

Actions are POSTs from forms: CSRF-protected (Flask-WTF, on the whole app), allowed to ``admin`` tokens only, and
answered with a redirect to the page that shows their result (post/redirect/get).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, render_template
from flask_login import current_user, login_required

from pex.store.workspace import Workspace

View = Callable[..., dict[str, Any]]


def workspace() -> Workspace:
    """The workspace the UI app opened (``create_ui_app``): what every view passes to its pages function."""
    return current_app.extensions["pex"].ws


def can_act() -> bool:
    """Whether the logged-in token may take actions (publish, run, cancel): only ``admin`` may; ``view`` reads."""
    return bool(getattr(current_user, "is_authenticated", False)) and current_user.scope == "admin"


def actor() -> str:
    """Who takes an action, as the audit trail records it: ``token:<name>``, like the API's publishes."""
    return f"token:{current_user.name}"


def page(bp: Blueprint, rule: str, template: str) -> Callable[[View], View]:
    """Register ``GET rule`` (``template`` rendered with ``page`` = the view's dict) and ``GET rule + ".json"`` (the
    same dict as JSON) on ``bp``. The view returns what one :mod:`pex.services.pages` function built; it reads
    nothing else, so the two cannot disagree. Both need a logged-in ``view`` or ``admin`` token."""

    def register(view: View) -> View:
        @functools.wraps(view)
        def as_html(**kwargs: Any) -> str:
            return render_template(template, page=view(**kwargs), can_act=can_act())

        def as_json(**kwargs: Any) -> Any:
            return jsonify(view(**kwargs))

        as_json.__name__ = f"{view.__name__}_json"
        bp.add_url_rule(rule, view.__name__, login_required(as_html), methods=["GET"])
        bp.add_url_rule(f"{rule}.json", as_json.__name__, login_required(as_json), methods=["GET"])
        return view

    return register


def action(bp: Blueprint, rule: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``POST rule``: a logged-in ``admin`` token only (a ``view`` token gets 403), CSRF-checked by the app's
    CSRFProtect before the view runs (400 without a valid token). The view returns a redirect."""

    def register(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            if not can_act():
                abort(403)
            return view(*args, **kwargs)

        bp.add_url_rule(rule, view.__name__, login_required(inner), methods=["POST"])
        return inner

    return register
