"""The report in a real browser: headless Chromium loads it offline, without errors or network requests."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("no `chromium` executable on PATH (the Makefile installs it for CI)")
    return path


def test_report_renders_offline_in_chromium(pipeline_run, chromium, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    report = pipeline_run.out / "report.html"
    headline = pipeline_run.summary["recommendation"]["headline"]
    errors: list[str] = []
    requests: list[str] = []
    shot = tmp_path / "report.png"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url) if not r.url.startswith("file:") else None)
            page.goto(report.resolve().as_uri(), wait_until="load")
            page.screenshot(path=str(shot), full_page=True)
            text = page.inner_text("body")
            n_svg = page.locator("svg").count()
            page_width = page.evaluate("document.documentElement.scrollWidth")
        finally:
            browser.close()
    assert errors == []
    assert requests == []
    assert shot.exists() and shot.stat().st_size > 50_000
    assert " ".join(headline.split()) in " ".join(text.split())
    assert n_svg >= 3
    assert page_width <= 1200, "the page must not scroll sideways at a desktop width"
