"""What people read: the HTML report (:mod:`pex.report.html`, charts), the terminal text and the summary."""

from pex.compat import forward

# the names of pex 0.1's pex/report.py, imported on first use
__getattr__ = forward(__name__, "pex.report.html")
