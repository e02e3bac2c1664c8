"""Offline vs online: does a live measurement agree with the offline estimate that justified the policy?

The two estimates come from different units (the experiment's, the live traffic's), so their difference has the
variance of the sum; ``z`` is the difference over that standard error, and the flag is raised when ``|z|`` is
beyond the two-sided ``band`` quantile (2.576 at 99%). A flag says the offline evaluation and live traffic
disagree beyond noise: the population moved, the offline estimate was optimistic (a best-of-many pick measured on
the units that chose it), or the live measurement is biased (e.g. outcomes missing unevenly between arms).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from scipy import stats

from pex.errors import DataError

BAND = 0.99


@dataclass(frozen=True)
class Agreement:
    """One live estimate against its offline estimate: the difference, its standard error, ``z`` (None when
    neither side has a spread) and the flag at the ``band``'s ``critical`` value."""

    online_estimate: float
    online_se: float
    offline_estimate: float
    offline_se: float
    difference: float
    se: float
    z: float | None
    critical: float
    band: float
    flag: bool

    def to_dict(self) -> dict:
        """The agreement as JSON."""
        return asdict(self)


def agreement(online_estimate: float, online_se: float, offline_estimate: float, offline_se: float, *,
              band: float = BAND) -> Agreement:
    """The z-score of ``online - offline`` (independent samples) and whether it is beyond the two-sided ``band``."""
    if not 0.0 < band < 1.0:
        raise DataError(f"the agreement band must be a probability strictly between 0 and 1, got {band}",
                        "e.g. 0.99: flag when the two estimates differ beyond a 99% two-sided band")
    for name, se in (("online", online_se), ("offline", offline_se)):
        if not (se >= 0):  # also refuses NaN
            raise DataError(f"the {name} standard error must be a number at least 0, got {se}",
                            "pass each estimate's standard error as measured")
    difference = float(online_estimate) - float(offline_estimate)
    se = math.hypot(online_se, offline_se)
    critical = float(stats.norm.ppf(0.5 + band / 2.0))
    z = difference / se if se > 0 and math.isfinite(se) and math.isfinite(difference) else None
    return Agreement(online_estimate=float(online_estimate), online_se=float(online_se),
                     offline_estimate=float(offline_estimate), offline_se=float(offline_se), difference=difference,
                     se=float(se), z=z, critical=critical, band=float(band), flag=z is not None and abs(z) > critical)
