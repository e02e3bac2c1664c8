"""Per-unit draws: which arm exploration gives a unit, reproducibly, on any worker or host.

A policy's decision is its greedy arm, except that with probability ``exploration`` the unit gets an arm drawn
uniformly. The draw is a keyed hash of the unit id (:data:`DRAW_RULE`) under a key made from the policy's name,
version and an optional salt, so the same unit gets the same decision from the same policy version in every
process, and units are independent uniform draws. It is the hash the held-out split uses
(:mod:`pex.experiment.split`), under keys of its own.

:func:`draw` decides many units with numpy; :func:`draw_one` is the same rule in Python scalars for a server's
single decision, in the same floating-point operations and order, so both give the same arm and propensity.
"""

from __future__ import annotations

import functools
import hashlib
import json

import numpy as np
import pandas as pd

from pex.experiment.split import keyed_uniform, keyed_uniform_one

DRAW_PERSON = b"pex-decide-v1"  # blake2b personalisation of the draw keys: no other pex hash can share them
DRAW_RULE = ("key = hex(blake2b-64(json [name, version, salt], person DRAW_PERSON)); "
             "u = (siphash(str(unit id), key) >> 11) / 2**53; "
             "explore when u < exploration and then take arm floor(u / exploration * n_arms), else the greedy arm")


@functools.lru_cache(maxsize=4096)
def draw_key(name: str, version: int, salt: str | int | None) -> str:
    """The SipHash key of one policy version's draws (:data:`DRAW_RULE`); cached: a server draws per request."""
    identity = json.dumps([name, version, salt], separators=(",", ":")).encode()
    return hashlib.blake2b(identity, digest_size=8, person=DRAW_PERSON).hexdigest()  # 16 characters, as pandas needs


def draw(greedy: np.ndarray, units: np.ndarray | pd.Series, exploration: float, n_arms: int, key: str
         ) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's arm index and the propensity of that arm, given its greedy arm index (:data:`DRAW_RULE`).

    One SipHash key per (policy version, salt) and the bare unit ids hashed under it: a third faster than hashing
    a prefixed copy of every id, and the same independence between policies and versions.
    """
    e, k = exploration, n_arms
    if e == 0.0:  # nothing to draw
        return greedy, propensities(greedy, greedy, e, k)
    u = keyed_uniform(np.asarray(units, dtype=object), key)
    explore = u < e
    # given u < e, u / e is uniform on [0, 1): exploration's arm, uniform over all arms
    scaled = np.divide(u, e, out=np.zeros_like(u), where=explore)
    chosen = np.where(explore, np.minimum((scaled * k).astype(np.int64), k - 1), greedy)
    return chosen, propensities(chosen, greedy, e, k)


def draw_one(greedy: int, unit: str, exploration: float, n_arms: int, key: str) -> tuple[int, float]:
    """:func:`draw` of one unit in Python scalars: the numpy path costs some 60 us a call when its caches are cold,
    as they are between a server's requests (tests/store/test_serving_store.py checks both agree)."""
    e, k = exploration, n_arms
    chosen = greedy
    if e != 0.0:
        u = keyed_uniform_one(unit, key)
        if u < e:
            chosen = min(int(u / e * k), k - 1)
    return chosen, (1.0 - e + e / k if chosen == greedy else e / k)


def propensities(chosen: np.ndarray, greedy: np.ndarray, exploration: float, n_arms: int) -> np.ndarray:
    """The probability the policy gave each chosen arm: the greedy one keeps the mass exploration leaves."""
    e, k = exploration, n_arms
    return np.where(chosen == greedy, 1.0 - e + e / k, e / k)
