"""Which units are held out for evaluation.

Policies must be evaluated on randomized units that none of the models behind
them has seen (issue 4). The evaluation set is defined by a rule on the unit id
alone: a unit is held out when a keyed hash of its id falls below ``share``.
So the split is reproducible from the fit's record (share and seed), it is the
same for a unit in every dataset version, and it is independent of the arm
and of the outcomes (the hash knows only the id), so the held-out units are
still a randomized experiment.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pex.errors import PexError

RULE = "siphash(unit id, key from seed) / 2**64 < share"


def evaluation_mask(units: np.ndarray | pd.Series, share: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of the held-out (evaluation) units among ``units``."""
    if not 0.0 <= share < 1.0:
        raise PexError(f"the held-out share must be at least 0 and below 1, got {share}", "e.g. --holdout 0.25")
    if share == 0.0:
        return np.zeros(len(units), dtype=bool)
    # pandas' hash is a keyed SipHash with a documented, stable output for a given
    # key, unlike Python's hash() which changes per process
    key = f"pex-split-{seed % 10**6:06d}"
    hashed = pd.util.hash_array(np.asarray(pd.Series(units).astype(str), dtype=object), hash_key=key)
    return hashed < np.uint64(share * 2.0**64)
