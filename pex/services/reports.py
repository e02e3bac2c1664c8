"""The HTML report of an experiment's newest pipeline run, written as one self-contained file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pex.files import write_atomic
from pex.report.html import render_report
from pex.store.workspace import Workspace


def write_report(ws: Workspace, experiment: str, out: str | Path) -> dict[str, Any]:
    """Render ``experiment``'s newest `pex run` summary to ``out``; returns that summary."""
    summary = ws.latest_run(experiment)
    write_atomic(Path(out), render_report(summary))
    return summary
