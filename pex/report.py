"""The offline evaluation report (HTML) rendered from a run's summary."""

from __future__ import annotations

import html


def render_report(summary: dict) -> str:
    return f"<!doctype html><title>{html.escape(summary['experiment'])}</title><h1>{html.escape(summary['recommendation']['headline'])}</h1>"
