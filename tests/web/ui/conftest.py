"""Shared fixtures of the UI's Flask test-client tests.

- ``ui_template`` (session): a workspace with a small simulated experiment ``exp`` run through the whole pipeline
  (a copy of :func:`tests.conftest.small_run`'s: 2,000 units, every kind of policy, one run in the store) and four
  tokens (:class:`UiWorkspace`). Never modify it.
- ``ui_home``: a private copy of it for one test (publish, run jobs, revoke tokens at will).
- ``ui_app``: the UI app (``create_ui_app``) on ``ui_home``.
- ``ui_client``: a factory ``ui_client(scope)`` -> a :class:`UiClient` logged in through the login form with the
  token of ``scope`` ("admin" or "view"); ``ui_client(None)`` is not logged in. ``client.post_form(url, data)``
  posts a form with the session's CSRF token, as the pages' forms do.
- :func:`check_twin` (a plain function: ``from tests.web.ui.conftest import check_twin``): a page's tables equal
  its ``.json`` twin by the cell rule of web/ui/twins.py.

CSRF protection stays on in these tests (as in production): a test that wants a POST without the token uses
``client.post`` directly.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.web.ui.cell_rule import assert_cell_rule

SECRET = "tests-only-secret-key-0123456789abcdef"  # tests pass a key: no ui-secret file is written in a template
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class UiWorkspace:
    """A workspace for the UI tests: ``home``, ``tokens`` (scope -> token string: admin, view, decide and revoked,
    an admin token revoked before the tests start), the experiment's name and its spec and CSV."""

    home: Path
    tokens: dict[str, str]
    experiment: str
    spec: Path
    data: Path

    def moved(self, home: Path) -> UiWorkspace:
        return UiWorkspace(home, self.tokens, self.experiment, self.spec, self.data)


class UiClient(FlaskClient):
    """A test client that logs in through the form and posts forms with the session's CSRF token."""

    def csrf_token(self) -> str:
        """The session's CSRF token, read from a page (the login form, or the logout form of any page)."""
        page = self.get("/ui/login", follow_redirects=True)
        found = CSRF_FIELD.search(page.get_data(as_text=True))
        assert found, f"no CSRF token on {page.request.path}"
        return found.group(1)

    def login(self, token: str) -> Any:
        """Log in by pasting ``token``; returns the answer (a redirect when it worked, the form with the reason
        when not)."""
        return self.post("/ui/login", data={"token": token, "csrf_token": self.csrf_token()})

    def post_form(self, url: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """POST ``data`` to ``url`` with the CSRF token, as a page's form does."""
        return self.post(url, data={**(data or {}), "csrf_token": self.csrf_token()}, **kwargs)


@pytest.fixture(scope="session")
def ui_template(tmp_path_factory, small_run) -> UiWorkspace:
    """small_run's workspace (the experiment ``exp`` ingested, analysed and run) with a token of every kind."""
    from pex.store.workspace import Workspace

    base = tmp_path_factory.mktemp("ui")
    source = Path(small_run.out).parent
    shutil.copytree(source / "ws", base / "ws")
    with Workspace(base / "ws") as ws:
        tokens = {scope: ws.create_token(scope, f"ui-{scope}")[1] for scope in ("admin", "view", "decide")}
        tokens["revoked"] = ws.create_token("admin", "ui-revoked")[1]
        ws.revoke_token("ui-revoked")
    return UiWorkspace(base / "ws", tokens, "exp", source / "exp" / "exp.toml", source / "exp" / "exp.csv")


@pytest.fixture
def ui_home(tmp_path, ui_template) -> UiWorkspace:
    """A private copy of :func:`ui_template` for one test."""
    shutil.copytree(ui_template.home, tmp_path / "ws")
    return ui_template.moved(tmp_path / "ws")


@pytest.fixture
def ui_app(ui_home) -> Iterator[Flask]:
    """The UI app on :func:`ui_home` (closed after the test)."""
    from web.ui import create_ui_app

    app = create_ui_app({"HOME": str(ui_home.home), "SECRET_KEY": SECRET})
    app.test_client_class = UiClient
    yield app
    app.extensions["pex"].close()


@pytest.fixture
def ui_client(ui_app, ui_home) -> Callable[[str | None], UiClient]:
    """``ui_client(scope)``: a new client logged in with the ``scope`` token ("admin", "view"), or none (None)."""

    def make(scope: str | None = "admin") -> UiClient:
        client = ui_app.test_client()
        if scope is not None:
            answer = client.login(ui_home.tokens[scope])
            assert answer.status_code == 302, f"login with the {scope} token failed: {answer.get_data(as_text=True)[:500]}"
        return client

    return make


def check_twin(client: FlaskClient, url: str) -> dict[str, Any]:
    """Assert that every ``data-twin`` table of the page at ``url`` shows, cell by cell, ``str(row[field])`` of the
    rows of its twin (``url + ".json"``); returns the twin's dict. A page without such a table passes trivially,
    so callers assert the tables they expect: ``check_twin(...)`` then look at the returned dict."""
    page = client.get(url)
    assert page.status_code == 200, f"{url}: {page.status_code}"
    twin = client.get(f"{url}.json")
    assert twin.status_code == 200 and twin.is_json, f"{url}.json: {twin.status_code}"
    data = twin.json
    tables = assert_cell_rule(page.get_data(as_text=True), data)
    data["_tables"] = sorted(tables)
    return data
