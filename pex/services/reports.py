"""The HTML report of an experiment's newest pipeline run, written as one self-contained file."""

from __future__ import annotations

from pathlib import Path

from pex.files import write_atomic
from pex.report.html import render_report
from pex.report.summary import RunSummary
from pex.store.workspace import Workspace


def write_report(ws: Workspace, experiment: str, out: str | Path) -> RunSummary:
    """Render ``experiment``'s newest `pex run` summary to ``out``; returns that summary (a summary of a format
    this pex does not read is a :class:`pex.errors.PexError`, and nothing is written)."""
    summary = RunSummary.load(ws.latest_run(experiment))
    write_atomic(Path(out), render_report(summary))
    return summary
