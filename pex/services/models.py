"""Stored models and policies, loaded for use: an effect model by fit, a policy with its effect model bound.

The store keeps a fit as files and a policy as a document; turning them into
an :class:`~pex.hte.model.EffectModel` or a bound :class:`~pex.policy.base.Policy`
is modelling, so it happens here rather than in :mod:`pex.store`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from pex.errors import PexError
from pex.hte.model import EffectModel
from pex.policy.base import Policy
from pex.store.workspace import FitRecord, PolicyRecord, Workspace

# A fit's files never change once written (a refit is a new fit id), so a model loaded once serves every later
# request of the process. Keyed by workspace folder and fit id. Few entries: each model holds some MB of boosters
# plus the memo of its last predictions (pex.hte.model.MEMO_ENTRIES matrices of effects).
MODEL_CACHE_ENTRIES = 3
_models: OrderedDict[tuple[str, str], EffectModel] = OrderedDict()
_models_lock = threading.Lock()


def effect_model(ws: Workspace, record: FitRecord) -> EffectModel:
    """The effect model of a stored fit, read from its files once per process."""
    key = (str(ws.home.resolve()), record.id)
    with _models_lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
    model = EffectModel.from_files(lambda rel: ws.read_fit_file(record, rel))
    with _models_lock:
        _models[key] = model
        while len(_models) > MODEL_CACHE_ENTRIES:
            _models.popitem(last=False)
    return model


def effect_model_by_id(ws: Workspace, fit_id: str) -> EffectModel:
    """The effect model of the fit a value policy names, by fit id alone."""
    record, _summary = ws.find_fit(fit_id)
    return effect_model(ws, record)


def load_policy(workspace: Callable[[], Workspace], ref: str) -> tuple[Policy, PolicyRecord | None]:
    """A policy from a JSON file or by stored name, with a value policy's effect model bound.

    ``workspace`` opens the store only when needed: a constant or tree policy from a file needs none.
    Returns the policy and its stored record (None for a file).
    """
    def bind(value_model: dict) -> EffectModel:
        return effect_model_by_id(workspace(), value_model["fit"])

    path = Path(ref)
    if path.suffix.lower() == ".json" or path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PexError(f"cannot read policy file {ref}: {exc.strerror}", "pass a policy JSON file or a stored policy name "
                           "(`pex policies NAME` lists them)") from None
        return Policy.from_json(text, bind), None
    record = workspace().get_policy(ref)
    return Policy.from_document(record.document, bind), record
