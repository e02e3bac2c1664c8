"""What people read: the HTML report (:mod:`pex.report.html`, charts), the terminal text and the summary."""
