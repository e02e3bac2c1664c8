"""Heterogeneous treatment effects.

:mod:`pex.hte.model` is the stored effect model that serving loads;
:mod:`pex.hte.learners` trains it (T, X, S, DR learners on LightGBM,
:mod:`pex.hte.boosting`); heterogeneity tests, segments and the fit's summary
sit beside them. Import each from its module: loading an effect model to serve
then does not import the training code.
"""
