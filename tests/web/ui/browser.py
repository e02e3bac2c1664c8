"""The browser tests' harness: `pex ui` started for real on a fresh workspace, and Debian's Chromium driven by Playwright.

:func:`running_ui` starts ``pex ui --no-worker`` (gunicorn) and, beside it, a ``pex worker`` the harness controls (so a
test can kill it with SIGKILL and start another), on a new workspace holding an admin, a view, a decide and a revoked
token, with a small simulated experiment written as CSV next to it. Every process is started through
:func:`tests.processes.started`, so it is killed when the test module ends, however it ends.

:class:`Browser` is one Chromium for a test module; :meth:`Browser.session` opens a context (one user's cookies) that
records every console error, page error and request, so a test can require none of the first two and every request to
go to pex's own origin. :func:`check_twin` compares each page table's cells with its ``.json`` twin (the cell rule of
``web/ui/twins.py``), :func:`axe` runs axe-core, :func:`shot` saves a full-page screenshot.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.gunicorn import PEX, free_port
from tests.processes import Started, started

# The simulated experiment the tests upload: small enough that its pipeline job takes seconds (about 12 s on one core
# for 2,000 units), with a guardrail that one segment harms, so the recommendation has something to say.
UNITS = 2_000
SCENARIO = "segment_harm"
EXPERIMENT = "shop"
# The tokens the workspace gets, by scope; "revoked" is an admin token revoked before the tests start.
TOKENS = ("admin", "view", "decide", "revoked")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
BLOCKING_IMPACTS = ("serious", "critical")


def chromium_path() -> str:
    """Debian's Chromium, or a skip saying why there is none (the Makefile installs it for CI)."""
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("no `chromium` executable on PATH (the Makefile installs it for CI)")
    return path


def write_experiment(folder: Path) -> Path:
    """The simulated experiment's CSV (``UNITS`` units of ``SCENARIO``), as an owner would upload it."""
    from pex.experiment.simulate import simulate

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{EXPERIMENT}.csv"
    simulate(UNITS, scenario=SCENARIO, seed=3).data.to_csv(path, index=False)
    return path


@dataclass
class UI:
    """A running ``pex ui`` with its own worker, on a workspace of its own."""

    url: str
    home: Path
    tmp: Path
    tokens: dict[str, str]
    csv: Path
    ui: Started
    stack: ExitStack
    worker: Started | None = None
    workers_started: int = 0

    def env(self) -> dict[str, str]:
        env = {**os.environ, "PEX_HOME": str(self.home)}
        env.pop("PEX_DATABASE_URL", None)
        return env

    def start_worker(self) -> Started:
        """Start a ``pex worker`` on the workspace (a second one after :meth:`kill_worker` finds the dead one's jobs)."""
        self.workers_started += 1
        self.worker = self.stack.enter_context(
            started([*PEX, "worker"], stderr=self.tmp / f"worker-{self.workers_started}.err", env=self.env()))
        return self.worker

    def kill_worker(self) -> None:
        """SIGKILL the worker, as a crash or the OOM killer would: no handler runs, nothing is cleaned up."""
        assert self.worker is not None and self.worker.proc.poll() is None, "the worker is not running"
        os.kill(self.worker.proc.pid, signal.SIGKILL)
        self.worker.proc.wait(timeout=30)
        self.worker = None

    def logs(self) -> str:
        """Everything the UI and the workers wrote to stderr, for a failing assertion's message."""
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self.tmp.glob("*.err")))


def _wait_ui(url: str, ui: Started, timeout: float = 60) -> None:
    """Wait until the UI answers its login page (it needs no session)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert ui.proc.poll() is None, f"pex ui exited with {ui.proc.returncode}"
        try:
            with urllib.request.urlopen(f"{url}/ui/login", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError("pex ui did not answer /ui/login in time")


def make_tokens(home: Path) -> dict[str, str]:
    """A new workspace at ``home`` with an admin, a view and a decide token and an admin token revoked at once, as
    ``pex token create --scope S --name NAME`` and ``pex token revoke NAME`` make them (in this process: four pex
    commands would cost the module seconds of start-up each)."""
    from pex.store.workspace import Workspace

    with Workspace(home) as ws:
        tokens = {scope: ws.create_token(scope, f"{scope}-user")[1] for scope in ("admin", "view", "decide")}
        tokens["revoked"] = ws.create_token("admin", "former-user")[1]
        ws.revoke_token("former-user")
    return tokens


@contextmanager
def running_ui(tmp: Path) -> Iterator[UI]:
    """A fresh workspace with the four tokens, the experiment's CSV, ``pex ui --no-worker`` and one ``pex worker``."""
    home = tmp / "ws"
    tokens = make_tokens(home)
    csv = write_experiment(tmp / "upload")
    port = free_port()
    with ExitStack() as stack:
        env = {**os.environ, "PEX_HOME": str(home)}
        env.pop("PEX_DATABASE_URL", None)
        ui = stack.enter_context(started([*PEX, "ui", "--port", str(port), "--no-worker", "--workers", "1"],
                                         stderr=tmp / "ui.err", env=env))
        server = UI(url=f"http://127.0.0.1:{port}", home=home, tmp=tmp, tokens=tokens, csv=csv, ui=ui, stack=stack)
        server.start_worker()  # starts while the UI does
        try:
            _wait_ui(server.url, ui)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{server.logs()}") from None
        yield server


@dataclass
class Session:
    """One user's browser context and page, with what it saw go wrong and every URL it asked for."""

    context: Any
    page: Any
    origin: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def foreign_requests(self) -> list[str]:
        """Requests that did not go to pex's own origin (there must be none: no CDN, no font, no beacon)."""
        return [u for u in self.requests if not (u == self.origin or u.startswith(self.origin + "/"))]

    def assert_clean(self, *statuses: int) -> None:
        """No console error, no page error, no request elsewhere than pex's origin, so far. Chromium logs a page
        answered with an error status (a refused login's 401) as a console error: ``statuses`` are the expected ones."""
        expected = tuple(f"the server responded with a status of {n} " for n in statuses)
        errors = [e for e in self.errors if not (expected and any(x in e for x in expected))]
        assert errors == [], errors
        assert self.foreign_requests() == [], self.foreign_requests()

    def goto(self, path: str) -> Any:
        """Open ``path`` of the UI and wait for it to load; the response."""
        return self.page.goto(self.origin + path, wait_until="load")

    def csrf(self) -> str:
        """The CSRF token of the page shown (every form carries it)."""
        return self.page.locator("input[name=csrf_token]").first.get_attribute("value")


class Browser:
    """One headless Chromium for a test module; sessions are its contexts."""

    def __init__(self, playwright: Any, origin: str) -> None:
        self.origin = origin
        self.browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)

    def session(self, width: int = 1200, height: int = 900) -> Session:
        context = self.browser.new_context(viewport={"width": width, "height": height}, base_url=self.origin)
        context.set_default_timeout(20_000)
        s = Session(context=context, page=None, origin=self.origin)
        context.on("console", lambda m: s.errors.append(f"console: {m.text} ({m.location})") if m.type == "error" else None)
        context.on("weberror", lambda e: s.errors.append(f"page error: {e.error}"))
        context.on("request", lambda r: s.requests.append(r.url))
        s.page = context.new_page()
        return s

    def close(self) -> None:
        self.browser.close()


@contextmanager
def chromium(origin: str) -> Iterator[Browser]:
    """Playwright's sync API with Debian's Chromium (skips when either is missing)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium_path()
    with sync_api.sync_playwright() as p:
        browser = Browser(p, origin)
        try:
            yield browser
        finally:
            browser.close()


# -- checks ------------------------------------------------------------------------------------------------------------

# Every table[data-twin] of the page: its twin path and, per body row, the data-field cells as (field, text) pairs.
TABLES = """() => [...document.querySelectorAll('table[data-twin]')].map(t => ({
  twin: t.dataset.twin,
  rows: [...t.querySelectorAll(':scope > tbody > tr')].map(tr =>
    [...tr.querySelectorAll('[data-field]')].map(c => [c.dataset.field, c.textContent]))
}))"""


def resolve(data: Any, path: str) -> Any:
    """The value at a dotted ``path`` of a page dict (a digit part indexes a list)."""
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) and part.isdigit() else data[part]
    return data


def twin_mismatches(session: Session, path: str) -> tuple[dict, list[str]]:
    """The JSON twin of the page shown (``path``), fetched with the session's cookie, and every way the page's tables
    disagree with it: each cell of each ``table[data-twin]`` must read ``str(row[field])`` of its row (the cell rule),
    and each table must show as many rows as its list has."""
    page = session.page
    base, _, query = path.partition("?")
    response = page.request.get(session.origin + base + ".json" + (f"?{query}" if query else ""))
    assert response.status == 200, f"{base}.json answered {response.status}"
    twin = response.json()
    problems = []
    for table in page.evaluate(TABLES):
        try:
            rows = resolve(twin, table["twin"])
        except (KeyError, IndexError, TypeError):
            problems.append(f"{path}: data-twin {table['twin']!r} names nothing in the JSON twin")
            continue
        if not isinstance(rows, list):
            problems.append(f"{path}: data-twin {table['twin']!r} is not a list in the JSON twin")
            continue
        if len(table["rows"]) != len(rows):
            problems.append(f"{path}: table {table['twin']!r} shows {len(table['rows'])} rows, its twin has {len(rows)}")
        for i, (cells, row) in enumerate(zip(table["rows"], rows)):
            for name, text in cells:
                if name not in row:
                    problems.append(f"{path}: {table['twin']}[{i}] has no field {name!r}")
                elif text.strip() != str(row[name]).strip():
                    problems.append(f"{path}: {table['twin']}[{i}].{name} shows {text.strip()!r}, "
                                    f"its twin has {str(row[name])!r}")
    return twin, problems


def settled_twin(session: Session, path: str, tries: int = 3) -> tuple[dict, list[str]]:
    """:func:`twin_mismatches` of the page shown, reloaded and compared again (up to ``tries`` times in all) while
    they disagree: a relative time ("live for 16 s") may tick between the page and its twin. A real disagreement
    stays."""
    twin, problems = twin_mismatches(session, path)
    for _ in range(tries - 1):
        if not problems:
            break
        session.goto(path)
        twin, problems = twin_mismatches(session, path)
    return twin, problems


def check_twin(session: Session, path: str) -> dict:
    """Open ``path`` (when not shown already) and require its tables to agree with its JSON twin (the cell rule,
    :func:`twin_mismatches`); the twin."""
    if not session.page.url.split("?")[0].endswith(path.split("?")[0]):
        session.goto(path)
    twin, problems = settled_twin(session, path)
    assert problems == [], "\n".join(problems)
    return twin


def axe_violations(session: Session, label: str) -> list[dict]:
    """Run axe-core on the page shown; its serious and critical violations (every violation is printed, with up to
    four of its nodes)."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(session.page)
    for v in results.response["violations"]:
        nodes = "; ".join(n.get("html", "")[:160] for n in v["nodes"][:4])
        print(f"axe {label}: {v['id']} ({v.get('impact')}): {v['help']} -- {nodes}")
    return [v for v in results.response["violations"] if v.get("impact") in BLOCKING_IMPACTS]


def axe_text(label: str, violations: list[dict]) -> str:
    """One line per violation: where, which rule, how bad, on which nodes."""
    return "\n".join(f"{label}: {v['id']} ({v['impact']}): {v['help']} -- "
                     + "; ".join(n.get("html", "")[:120] for n in v["nodes"][:3]) for v in violations)


def axe(session: Session, label: str) -> None:
    """Fail on any serious or critical axe-core violation of the page shown."""
    blocking = axe_violations(session, label)
    assert blocking == [], "axe-core found serious or critical violations:\n" + axe_text(label, blocking)


def screenshots_dir(basetemp: Path) -> Path:
    """Where screenshots go: ``$PEX_UI_SCREENSHOTS``, else ``<pytest basetemp>/ui-screenshots``."""
    folder = Path(os.environ.get("PEX_UI_SCREENSHOTS") or basetemp / "ui-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def shot(session: Session, folder: Path, name: str) -> Path:
    """A full-page PNG of the page shown, ``<folder>/<name>.png``."""
    path = folder / f"{name}.png"
    session.page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def sideways_scroll(session: Session) -> int:
    """How far the page shown scrolls sideways, in CSS pixels (0 when it fits its viewport)."""
    return int(session.page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth"))
