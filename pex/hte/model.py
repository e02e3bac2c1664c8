"""The stored, pickle-free effect model: what value policies load to serve, kept apart from training.

Plain JSON plus LightGBM's text model format (:meth:`EffectModel.to_files`);
:mod:`pex.hte.learners` builds it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pandas as pd

from pex.errors import StoreError
from pex.experiment.features import FeatureEncoder
from pex.hte.boosting import booster_pool, predict, threads

FORMAT = "pex.effects/1"

MEMO_ENTRIES = 4  # e.g. the training units, the held-out units and a file being predicted
MEMO_MIN_ROWS, MEMO_MAX_ROWS = 1_000, 500_000  # single units are cheap to predict; huge files are predicted once


@dataclass
class EffectModel:
    """Predicts the effect of every non-control arm on every metric.

    ``recipes[metric][arm]`` is a list of terms ``{"model", "weight", "arm"}``:
    the effect is the weighted sum of the named boosters' predictions, where a
    term with an ``arm`` appends that arm's indicator columns (S-learner).
    Everything is plain JSON plus LightGBM's text model format.
    """

    encoder: FeatureEncoder
    control: str
    arms: list[str]
    metrics: list[str]
    learners: dict[str, str]
    recipes: dict[str, dict[str, list[dict]]]
    boosters: dict[str, lgb.Booster] = field(repr=False)
    _memo: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False, compare=False)
    _memo_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @property
    def treated_arms(self) -> list[str]:
        """The arms other than control, whose effects are predicted."""
        return [a for a in self.arms if a != self.control]

    def effect(self, X: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
        """Effects per (metric, arm) for an encoded feature matrix.

        The policies of one fit share this model and are valued on the same units many times over (building,
        ladder steps, comparison, recommendation), and every booster predicting is most of a run's time, so
        the last few large matrices' effects are kept, keyed by their content (a changed matrix is a new key).
        The arrays returned from the memo are read-only.
        """
        X = np.ascontiguousarray(X)
        if not MEMO_MIN_ROWS <= len(X) <= MEMO_MAX_ROWS:
            return self._effect(X)
        key = (X.shape, X.dtype.str, hashlib.blake2b(X.view(np.uint8), digest_size=16).digest())
        with self._memo_lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return dict(self._memo[key])
        out = self._effect(X)
        for values in out.values():
            values.flags.writeable = False
        with self._memo_lock:
            self._memo[key] = out
            while len(self._memo) > MEMO_ENTRIES:
                self._memo.popitem(last=False)
        return dict(out)

    def _effect(self, X: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
        keys = list(dict.fromkeys((term["model"], term.get("arm")) for metric in self.metrics for arm in self.treated_arms
                                  for term in self.recipes[metric][arm]))

        def predict_one(key: tuple[str, str | None]) -> np.ndarray:
            return predict(self.boosters[key[0]], with_arm(X, self.treated_arms, key[1]))

        # each booster predicts on one core (LightGBM releases the GIL), all cores busy;
        # a single unit is cheaper without the pool
        if len(X) >= 1000 and threads() > 1:
            with booster_pool() as pool:
                cache = dict(zip(keys, pool.map(predict_one, keys)))
        else:
            cache = {key: predict_one(key) for key in keys}
        out = {}
        for metric in self.metrics:
            for arm in self.treated_arms:
                total = np.zeros(len(X))
                for term in self.recipes[metric][arm]:
                    total += term["weight"] * cache[(term["model"], term.get("arm"))]
                out[(metric, arm)] = total
        return out

    def predict_frame(self, frame: pd.DataFrame, unit: str | None = None) -> pd.DataFrame:
        """``unit`` column (when given) plus ``cate__<metric>__<arm>`` per metric and arm."""
        effects = self.effect(self.encoder.transform(frame))
        cols = {} if unit is None else {unit: frame[unit].to_numpy()}
        for (metric, arm), values in effects.items():
            cols[f"cate__{metric}__{arm}"] = values
        return pd.DataFrame(cols)

    def manifest(self) -> dict:
        """The model's description as JSON (everything but the boosters' text)."""
        return {
            "format": FORMAT, "encoder": self.encoder.to_dict(), "control": self.control, "arms": self.arms,
            "metrics": self.metrics, "learners": self.learners, "recipes": self.recipes,
            "models": sorted(self.boosters),
        }

    def to_files(self) -> dict[str, str]:
        """The model as text files: ``manifest.json`` plus one LightGBM text model per booster."""
        names = sorted(self.boosters)
        files = {f"models/{i:04d}.txt": self.boosters[name].model_to_string(num_iteration=-1) for i, name in enumerate(names)}
        manifest = {**self.manifest(), "files": {name: f"models/{i:04d}.txt" for i, name in enumerate(names)}}
        files["manifest.json"] = json.dumps(manifest, indent=1)
        return files

    @classmethod
    def from_files(cls, read: Callable[[str], str]) -> EffectModel:
        """Rebuild from :meth:`to_files` output; ``read(relative_path)`` returns a file's text."""
        try:
            manifest = json.loads(read("manifest.json"))
            if manifest.get("format") != FORMAT:
                raise StoreError(f"unknown effect model format {manifest.get('format')!r}",
                                 f"this pex reads {FORMAT}; refit with `pex fit`")
            return cls(
                encoder=FeatureEncoder.from_dict(manifest["encoder"]), control=manifest["control"], arms=list(manifest["arms"]),
                metrics=list(manifest["metrics"]), learners=dict(manifest["learners"]), recipes=manifest["recipes"],
                boosters={name: lgb.Booster(model_str=read(path)) for name, path in manifest["files"].items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError, lgb.basic.LightGBMError) as exc:
            # json.JSONDecodeError is a ValueError; a damaged file is not something the user can pass around
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            raise StoreError(f"the stored effect model is damaged ({exc.__class__.__name__}: {first_line})",
                             "fit the experiment again with `pex fit NAME`") from None


def with_arm(X: np.ndarray, treated_arms: list[str], arm: str | None) -> np.ndarray:
    """``X`` with the S-learner's arm indicator columns appended (unchanged when ``arm`` is None)."""
    if arm is None:
        return X
    onehot = np.zeros((len(X), len(treated_arms)))
    if arm in treated_arms:
        onehot[:, treated_arms.index(arm)] = 1.0
    return np.hstack([X, onehot])


# -- fitting ---------------------------------------------------------------------------------

