"""Take the README's picture of the report (docs/img/report.png): its first section, verdict to "who gets what".

    .venv/bin/python scripts/screenshot_report.py REPORT.html [OUT.png]

REPORT.html is any report `pex run` or `pex demo` wrote (e.g. pex-demo/report.html). The picture is the
report's top, from its title to the start of section 2 (data health), cut to the page column, as headless
Chromium renders it at 1200 px wide: the same browser and launch options as tests/report/test_report_browser.py
(Debian's chromium, never `playwright install`). pngquant, when installed, shrinks the file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

MARGIN = 24  # px of page background kept around the column


def screenshot(report: Path, out: Path) -> None:
    """Write the top of ``report`` (everything above ``#data-health``) as a PNG to ``out``."""
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("no `chromium` on PATH: apt-get install chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(report.resolve().as_uri(), wait_until="load")
            column = page.locator("#verdict").bounding_box()
            end = page.locator("#data-health").bounding_box()
            if column is None or end is None:
                sys.exit(f"{report} has no #verdict or #data-health section: is it a pex report?")
            left = max(column["x"] - MARGIN, 0)
            clip = {"x": left, "y": 0, "width": column["width"] + 2 * MARGIN, "height": end["y"] - MARGIN}
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), clip=clip, full_page=True)
        finally:
            browser.close()
    if shutil.which("pngquant"):
        subprocess.run(["pngquant", "--force", "--skip-if-larger", "--output", str(out), "--", str(out)], check=False)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    screenshot(Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) == 3 else "docs/img/report.png"))
