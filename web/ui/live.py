"""The live pages of the UI: policies (publish / roll back), the online loop, and the live monitor.

Every page is a :func:`web.ui.twins.page` over one :mod:`pex.services.pages` function, so ``/ui/X`` and
``/ui/X.json`` cannot disagree; every action is an admin-only POST that redirects to the page showing its result.
"""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("live", __name__, url_prefix="/ui")
live = bp
