"""Offline vs online agreement (pex.monitor.agreement) on hand-computed numbers."""

from __future__ import annotations

import pytest

from pex.errors import DataError
from pex.monitor.agreement import agreement


def test_z_is_the_difference_over_the_combined_standard_error():
    # online 0.05 (se 0.03), offline 0.01 (se 0.04): difference 0.04, se 0.05, z 0.8
    a = agreement(0.05, 0.03, 0.01, 0.04)
    assert a.difference == pytest.approx(0.04)
    assert a.se == pytest.approx(0.05)
    assert a.z == pytest.approx(0.8)
    assert a.critical == pytest.approx(2.5758, abs=1e-4)
    assert not a.flag


def test_the_flag_is_raised_beyond_the_two_sided_band_on_either_side():
    assert agreement(-0.12, 0.03, 0.01, 0.04).flag  # z = -2.6
    assert not agreement(-0.118, 0.03, 0.01, 0.04).flag  # z = -2.56
    assert agreement(0.14, 0.03, 0.01, 0.04).flag  # z = 2.6
    # a 95% band flags what a 99% band lets through
    assert agreement(0.11, 0.03, 0.0, 0.04, band=0.95).flag and not agreement(0.11, 0.03, 0.0, 0.04).flag


def test_no_spread_gives_no_z_and_bad_input_is_refused():
    a = agreement(0.1, 0.0, 0.1, 0.0)
    assert a.z is None and not a.flag
    assert a.to_dict()["band"] == 0.99
    with pytest.raises(DataError, match="band"):
        agreement(0.1, 0.01, 0.1, 0.01, band=1.0)
    with pytest.raises(DataError, match="online standard error"):
        agreement(0.1, float("nan"), 0.1, 0.01)
