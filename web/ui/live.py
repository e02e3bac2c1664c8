"""The live pages of the UI: policies (publish / roll back), the online loop, and the live monitor.

Every page is a :func:`web.ui.twins.page` over one :mod:`pex.services.pages` function, so ``/ui/X`` and
``/ui/X.json`` cannot disagree; every action is an admin-only POST that redirects to the page showing its result.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, request, url_for

from pex.errors import DataError
from pex.services import publishing
from pex.services.pages import monitor as monitor_pages
from pex.services.pages import policies as policies_pages
from web.ui.twins import action, actor, page, workspace

bp = Blueprint("live", __name__, url_prefix="/ui")


# -- policies ------------------------------------------------------------------------------------------------------

@page(bp, "/experiments/<name>/policies", "policies.html")
def policies(name: str) -> dict[str, Any]:
    """The recommendation, the comparison, the Pareto plot and tree, what is live, the audit trail, the actions."""
    return policies_pages.policies_page(workspace(), name)


def _version() -> int:
    text = request.form.get("version", "")
    if not text.isdigit() or not 1 <= int(text) < 2**31:
        raise DataError(f"the version to publish must be a whole number from 1, got {text[:20]!r}",
                        "use the Publish buttons of the policies page")
    return int(text)


@action(bp, "/experiments/<name>/policies/<policy>/publish")
def publish(name: str, policy: str):
    """Publish a version of one of the experiment's policies. A policy the latest run did not certify needs the
    dialog's extra confirmation (the form field ``extra_confirmed``); without it nothing changes (400), with it the
    audit trail records who confirmed it."""
    version = _version()
    ws = workspace()
    check = policies_pages.publish_check(ws, name, policy)
    note = None
    if check.needs_confirmation:
        if request.form.get("extra_confirmed") != "yes":
            raise policies_pages.refuse_uncertified(check)
        note = publishing.uncertified_note(actor())
    publishing.publish(ws, policy, version, actor(), note=note)
    return redirect(url_for("live.policies", name=name) + "#live")


@action(bp, "/experiments/<name>/policies/<policy>/rollback")
def rollback(name: str, policy: str):
    """Return one of the experiment's policies to the version live before the current one."""
    ws = workspace()
    policies_pages.own_policy(ws, name, policy)
    publishing.rollback(ws, policy, actor())
    return redirect(url_for("live.policies", name=name) + "#live")


# -- the live monitor ----------------------------------------------------------------------------------------------

@page(bp, "/monitor", "monitor.html")
def monitor() -> dict[str, Any]:
    """Every live policy: version, age, decisions and outcomes of the last 48 h (from the worker's hourly counts)."""
    return monitor_pages.monitor_page(workspace())


@page(bp, "/monitor/<policy>", "monitor_policy.html")
def monitor_policy(policy: str) -> dict[str, Any]:
    """One live policy: decisions per hour by arm with publish / rollback markers, outcome arrival, the hourly table."""
    return monitor_pages.policy_monitor_page(workspace(), policy)
