"""The module paths of pex 0.1's flat package, still importable: ``pex.spec`` is ``pex.experiment.spec``.

Scripts written against the flat layout (``from pex.spec import load_spec``, the README's Python API
before the layers) keep working, and get the very module object of the new path, so a name patched on one
is patched on both. importlib has no alias mechanism, hence this small finder; it imports nothing until an
old path is asked for.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

OLD_PATHS = {
    "pex.spec": "pex.experiment.spec", "pex.data": "pex.experiment.data", "pex.features": "pex.experiment.features",
    "pex.split": "pex.experiment.split", "pex.effects": "pex.experiment.effects", "pex.balance": "pex.experiment.balance",
    "pex.guardrail": "pex.experiment.guardrail", "pex.simulate": "pex.experiment.simulate",
    "pex.heterogeneity": "pex.hte.heterogeneity", "pex.segments": "pex.hte.segments", "pex.hte_report": "pex.hte.summary",
    "pex.value_policy": "pex.policy.value", "pex.distill": "pex.policy.distill", "pex.policy_tree": "pex.policy.policy_tree",
    "pex.constrained": "pex.policy.constrained", "pex.ope": "pex.evaluation.estimators",
    "pex.policy_eval": "pex.evaluation.comparison", "pex.recommend": "pex.evaluation.recommendation",
    "pex.tuning": "pex.search.tuning", "pex.policy_build": "pex.services.policies", "pex.pipeline": "pex.services.run",
    "pex.report_charts": "pex.report.charts", "pex.report_text": "pex.report.text",
}


class _Loader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        """The module at the new path (imported if need be)."""
        module = importlib.import_module(OLD_PATHS[spec.name])
        self._own_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module is the new path's, already executed. importlib has just set its
        ``__spec__`` to the old path's; it gets its own back, so that e.g. ``importlib.reload`` reloads it."""
        module.__spec__ = self._own_spec


class OldPathFinder(importlib.abc.MetaPathFinder):
    """Resolves an old flat module path to the module at its new place."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        """The spec of an old module path (None for every other name)."""
        if fullname not in OLD_PATHS:
            return None
        return importlib.util.spec_from_loader(fullname, _Loader())


def forward(package: str, *modules: str) -> Callable[[str], Any]:
    """A package ``__getattr__`` that finds the names of pex 0.1's module of the same path in ``modules``, in order,
    each imported on first use (``from pex.store import Workspace`` still works, and imports only the store)."""
    def __getattr__(name: str) -> Any:
        if not name.startswith("__"):
            for module in modules:
                target = importlib.import_module(module)
                if hasattr(target, name):
                    return getattr(target, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, OldPathFinder) for f in sys.meta_path):
        sys.meta_path.append(OldPathFinder())
