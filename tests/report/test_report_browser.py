"""The report in a real browser: headless Chromium loads it offline, without errors or network requests."""

from __future__ import annotations

import copy
import shutil

import pytest

from pex.report.html import render_report


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("no `chromium` executable on PATH (the Makefile installs it for CI)")
    return path


# Tables whose wrapper scrolls sideways at a desktop width: the wide ones must fit the page column.
OVERFLOWING = """[...document.querySelectorAll('.table-wrap')]
  .filter(e => e.scrollWidth > e.clientWidth + 1)
  .map(e => e.closest('section').id)"""


def load(chromium: str, path, shot=None) -> dict:
    """Open ``path`` in headless Chromium at 1200x900; what the tests check about the page."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url) if not r.url.startswith("file:") else None)
            page.goto(path.resolve().as_uri(), wait_until="load")
            if shot is not None:
                page.screenshot(path=str(shot), full_page=True)
            alert = page.locator("#verdict [role=alert]")
            out = {
                "errors": errors, "requests": requests, "text": page.inner_text("body"),
                "n_svg": page.locator("svg").count(), "width": page.evaluate("document.documentElement.scrollWidth"),
                "overflowing": page.evaluate(OVERFLOWING), "verdict": page.inner_text("#verdict"),
                "alert": alert.count() and {"visible": alert.is_visible(), "box": alert.bounding_box(), "text": alert.inner_text()},
            }
        finally:
            browser.close()
    return out


@pytest.mark.slow  # 11-14 s; the UI's browser test and test_run_page load the report in Chromium on every make test
def test_report_renders_offline_in_chromium(pipeline_run, chromium, tmp_path):
    report = pipeline_run.out / "report.html"
    rec = pipeline_run.summary["recommendation"]
    shot = tmp_path / "report.png"
    got = load(chromium, report, shot)
    assert got["errors"] == []
    assert got["requests"] == []
    assert shot.exists() and shot.stat().st_size > 50_000
    assert " ".join(rec["headline"].split()) in " ".join(got["text"].split())
    assert got["n_svg"] >= 3
    assert got["width"] <= 1200, "the page must not scroll sideways at a desktop width"
    # the policy table and the Pareto candidates (held-out values beside the search's) fit the column
    assert not {"policies", "pareto"} & set(got["overflowing"]), got["overflowing"]
    assert " ".join(rec["certification"]["text"].split()) in " ".join(got["verdict"].split())
    assert bool(got["alert"]) == rec["cannot_certify"]


def test_nothing_certified_is_visible_at_the_top(pipeline_run, chromium, tmp_path):
    s = copy.deepcopy(pipeline_run.summary)
    first = "Nothing could be certified. The best candidate, exp-value, has unsubscribes harm +3.1% (standard error 1.2%)"
    reason = {"code": "cannot_certify", "params": {"policy": "exp-value"}, "text": first}
    s["recommendation"].update(cannot_certify=True, reasons=[reason, *s["recommendation"]["reasons"][1:]])
    path = tmp_path / "report.html"
    path.write_text(render_report(s), encoding="utf-8")
    got = load(chromium, path)
    assert got["errors"] == [] and got["requests"] == []
    alert = got["alert"]
    assert alert and alert["visible"] and alert["text"] == first
    assert alert["box"]["y"] + alert["box"]["height"] < 900, "the statement must be on the first screen"
