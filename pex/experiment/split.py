"""Which units are held out for evaluation, and the keyed unit hash behind it.

Policies must be evaluated on randomized units that none of the models behind
them has seen (issue 4). The evaluation set is defined by a rule on the unit id
alone: a unit is held out when a keyed hash of its id falls below ``share``.
So the split is reproducible from the fit's record (share and key), and it is
independent of the arm and of the outcomes (the hash knows only the id), so the
held-out units are still a randomized experiment.

The key comes from the dataset version's content (:func:`dataset_split_key`), not from ``--seed``: every run and
fit on one dataset version splits its units the same way, so re-running with another seed cannot draw another
split until one certifies (issue 23). Fits stored before the key was recorded name only their seed, whose key
:func:`split_key` still makes (:func:`holdout_key` reads either).

The same hash (:func:`keyed_hash`, :func:`keyed_uniform`) gives policies their
reproducible exploration draws (:meth:`pex.policy.base.Policy.decide`).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from pex.errors import PexError

RULE = ("offset <= siphash(unit id, key of the dataset version) / 2**64 < offset + share "
        "(mod 1; offset 0 unless cross-fitted)")
HOLDOUT = 0.25  # default share of units no model sees; policies are compared and certified on them


def keyed_hash(values: np.ndarray | pd.Series, key: str) -> np.ndarray:
    """SipHash of each value's text under ``key`` (16 bytes), as uint64: the same in every process and version."""
    if isinstance(values, np.ndarray) and values.dtype == object and len(values) <= _FEW \
            and all(type(v) is str for v in values):
        return _few_keyed_hash(values, key)
    # pandas' hash is a keyed SipHash with a documented, stable output for a given
    # key, unlike Python's hash() which changes per process
    return pd.util.hash_array(np.asarray(pd.Series(values).astype(str), dtype=object), hash_key=key)


# Up to this many string ids are hashed without pandas' wrapper: for one unit (a served decision) the wrapper's
# Series, astype and factorize cost 250 us around a 1 us hash. The private function is the one hash_array
# itself calls, followed by the same 64-bit mix; tests/policy/test_policy_kinds.py checks the two agree on many ids.
_FEW = 256
_MIX = (np.uint64(30), np.uint64(0xBF58476D1CE4E5B9), np.uint64(27), np.uint64(0x94D049BB133111EB), np.uint64(31))


def _few_keyed_hash(values: np.ndarray, key: str) -> np.ndarray:
    from pandas._libs.hashing import hash_object_array

    h = hash_object_array(values, key, "utf8")
    if len(h) <= 4:  # a served decision: Python's integers beat numpy's per-call cost on one value
        mask = 2**64 - 1
        mixed = []
        for x in h.tolist():
            x ^= x >> 30
            x = (x * 0xBF58476D1CE4E5B9) & mask
            x ^= x >> 27
            x = (x * 0x94D049BB133111EB) & mask
            mixed.append(x ^ (x >> 31))
        return np.array(mixed, dtype=np.uint64)
    s1, m1, s2, m2, s3 = _MIX
    h ^= h >> s1
    h *= m1
    h ^= h >> s2
    h *= m2
    h ^= h >> s3
    return h


def keyed_uniform(values: np.ndarray | pd.Series, key: str) -> np.ndarray:
    """One uniform draw in [0, 1) per value from :func:`keyed_hash`: its top 53 bits over 2**53."""
    # 53 bits are what a float64 holds exactly; dividing all 64 by 2**64 could round up to 1.0
    return (keyed_hash(values, key) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def keyed_uniform_one(value: str, key: str) -> float:
    """:func:`keyed_uniform` of one string as a Python float (for a served decision: no numpy per call)."""
    return (int(_few_keyed_hash(np.array([value], dtype=object), key)[0]) >> 11) * 2.0**-53


def split_key(seed: int) -> str:
    """The SipHash key of the held-out split made from a ``seed``: the key of fits stored before the key came from
    the dataset version (:func:`dataset_split_key`), and of fits made outside a workspace."""
    return f"pex-split-{seed % 10**6:06d}"


def dataset_split_key(content_hash: str) -> str:
    """The SipHash key of a dataset version's held-out split, from its content hash: 16 hex digits (SipHash takes
    a 16-byte key), never of the form of a seed's key (:func:`split_key`)."""
    if not content_hash:
        raise PexError("a dataset version's split key needs its content hash", "split a stored dataset version")
    return hashlib.sha256(f"pex-split/{content_hash}".encode()).hexdigest()[:16]


def holdout_key(holdout: dict[str, Any]) -> str:
    """The split key a fit's ``holdout`` description names: its ``key``, or for a fit stored before keys were
    recorded, the key of its ``seed``."""
    key = holdout.get("key")
    return str(key) if key else split_key(int(holdout.get("seed", 0)))


def hash_interval_mask(hashes: np.ndarray, start: float, share: float) -> np.ndarray:
    """Whether each uint64 hash falls in the arc of the unit circle from ``start`` of length ``share`` (fractions
    of 2**64, wrapping past 1 to 0). Arcs that tile [0, 1) split units into disjoint groups: the held-out split
    (start 0) and its complement, and the routes of a routing policy (:mod:`pex.policy.routing`)."""
    if share >= 1.0:
        return np.ones(len(hashes), dtype=bool)
    if share <= 0.0:
        return np.zeros(len(hashes), dtype=bool)
    lo, hi = _point(start % 1.0), _point((start + share) % 1.0)
    if lo < hi:
        return (hashes >= lo) & (hashes < hi)
    return (hashes >= lo) | (hashes < hi)  # the arc wraps past 2**64 (or ends exactly there: hi is 0)


def _point(fraction: float) -> np.uint64:
    # fraction * 2**64 as an exact uint64 for the fractions a split names (0.25, 0.5, ...), as the rule always did
    return np.uint64(min(int(fraction * 2.0**64), 2**64 - 1)) if fraction > 0 else np.uint64(0)


def evaluation_mask(units: np.ndarray | pd.Series, share: float, seed: int = 0, offset: float = 0.0, *,
                    key: str | None = None) -> np.ndarray:
    """Boolean mask of the held-out (evaluation) units among ``units``: those whose hash under ``key`` (default: the
    key of ``seed``, :func:`split_key`) falls in the arc [``offset``, ``offset + share``). ``offset`` 0 is the usual
    split; a cross-fitted run's second fit holds out the complement of its first (share 0.5, offset 0.5)."""
    if not 0.0 <= share < 1.0:
        raise PexError(f"the held-out share must be at least 0 and below 1, got {share}", "e.g. --holdout 0.25")
    if not 0.0 <= offset < 1.0:
        raise PexError(f"the held-out offset must be at least 0 and below 1, got {offset}", "e.g. 0.5 for a second half")
    if share == 0.0:
        return np.zeros(len(units), dtype=bool)
    return hash_interval_mask(keyed_hash(units, key or split_key(seed)), offset, share)
