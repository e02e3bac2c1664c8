"""Heterogeneous treatment effects.

:mod:`pex.hte.model` is the stored effect model that serving loads;
:mod:`pex.hte.learners` trains it (T, X, S, DR learners on LightGBM,
:mod:`pex.hte.boosting`); heterogeneity tests, segments and the fit's summary
sit beside them. The names of those three modules are importable from
``pex.hte`` itself (``from pex.hte import fit_effects``, the README's Python
API), each module loaded on first use, so that loading an effect model to serve
does not import the training code.
"""

from __future__ import annotations

from pex.compat import forward

# each module imported on first use of one of its names: training code only when asked for
__getattr__ = forward(__name__, "pex.hte.model", "pex.hte.boosting", "pex.hte.learners")
