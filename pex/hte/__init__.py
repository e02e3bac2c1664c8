"""Heterogeneous treatment effects.

:mod:`pex.hte.model` is the stored effect model that serving loads;
:mod:`pex.hte.learners` trains it (T, X, S, DR learners on LightGBM,
:mod:`pex.hte.boosting`); heterogeneity tests, segments and the fit's summary
sit beside them. The names below are importable from ``pex.hte`` itself (the
README's Python API), each loaded on first use, so that loading an effect model
to serve does not import the training code.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {"EffectModel": "model", "FORMAT": "model", "MEMO_ENTRIES": "model",
         "fit_effects": "learners", "EffectEstimator": "learners", "HTEFit": "learners", "MetricFit": "learners",
         "LEARNERS": "learners", "ENSEMBLE": "learners", "LEARNER_NAMES": "learners", "SCORE_NAME": "learners",
         "TRAINING_FILE": "learners", "outcome_params": "boosting", "effect_params": "boosting"}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'pex.hte' has no attribute {name!r}")
    return getattr(importlib.import_module(f"pex.hte.{_HOME[name]}"), name)
