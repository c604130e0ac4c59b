"""IQM and bootstrap intervals against hand-computed values and scipy."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import trim_mean

from accumbens.analysis import bootstrap_ci, bootstrap_difference_ci, iqm


def test_iqm_hand_case_and_scipy():
    assert iqm([1, 2, 3, 4, 100, -50, 5, 6]) == pytest.approx((2 + 3 + 4 + 5) / 4)
    rng = np.random.default_rng(0)
    for size in (4, 7, 10, 33):
        x = rng.normal(size=(size, 3))
        assert iqm(x) == pytest.approx(trim_mean(x.ravel(), 0.25))
    with pytest.raises(ValueError):
        iqm([])


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_seeds():
    rng = np.random.default_rng(1)
    small = rng.normal(3.0, 1.0, 5)
    large = rng.normal(3.0, 1.0, 500)
    point, low, high = bootstrap_ci(small)
    assert point == pytest.approx(small.mean()) and low < point < high
    _, low_l, high_l = bootstrap_ci(large)
    assert high_l - low_l < high - low
    # Normal theory: the 95% interval of a mean of 500 N(3, 1) draws is about +-1.96 / sqrt(500).
    assert high_l - low_l == pytest.approx(2 * 1.96 / np.sqrt(500), rel=0.15)
    assert bootstrap_ci(np.array([2.5])) == (2.5, 2.5, 2.5)


def test_bootstrap_difference_point_case_and_normal_theory():
    # No spread within either group: every resample gives the same difference; it is never 0.
    assert bootstrap_difference_ci(np.full(5, 1.5), np.full(4, 1.0)) == pytest.approx((0.5, 0.5, 0.5, 0.0))
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 400), rng.normal(0.0, 2.0, 400)
    diff, low, high, p = bootstrap_difference_ci(a, b)
    half = 1.96 * np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert diff == pytest.approx(a.mean() - b.mean()) and high - low == pytest.approx(2 * half, rel=0.1)
    assert p < 0.01  # a true shift of 1 with standard error ~0.11
    same = bootstrap_difference_ci(rng.normal(size=50), rng.normal(size=50))
    assert same[1] < 0 < same[2] and same[3] > 0.05
