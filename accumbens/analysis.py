"""Summary statistics for results over seeds: means with bootstrap confidence intervals, and IQM.

Used by the benchmark and reproduction scripts to put "mean [low, high]" beside published numbers.

  bootstrap_ci(x)        percentile bootstrap interval of a statistic over seeds (default: mean)
  bootstrap_difference_ci(a, b)
                         mean(a) - mean(b) with a percentile interval and a two-sided bootstrap
                         p-value, each group's seeds resampled on their own
  iqm(x)                 interquartile mean: the mean of the middle 50% of the values (Agarwal et
                         al. 2021, "Deep RL at the Edge of the Statistical Precipice"), computed
                         like scipy.stats.trim_mean(x, 0.25) over the flattened values
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def iqm(values: np.ndarray) -> float:
    """Interquartile mean of all values (flattened): trims 25% from each end, then averages."""
    values = np.sort(np.asarray(values, np.float64).ravel())
    if values.size == 0:
        raise ValueError("iqm of no values")
    cut = int(values.size * 0.25)  # scipy.stats.trim_mean's rounding: floor of the proportion
    return float(values[cut : values.size - cut].mean())


def bootstrap_ci(
    values: np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    confidence: float = 0.95,
    resamples: int = 5000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(statistic, low, high): the percentile bootstrap interval over the first axis (seeds).

    `values` [S] or [S, ...]: each resample draws S rows with replacement and applies `statistic`
    to the resampled array. With one seed the interval is the point itself.
    """
    values = np.asarray(values, np.float64)
    if values.shape[0] == 0:
        raise ValueError("bootstrap_ci of no values")
    point = float(statistic(values))
    if values.shape[0] == 1:
        return point, point, point
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, values.shape[0], (resamples, values.shape[0]))
    stats = np.array([statistic(values[r]) for r in rows])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return point, float(low), float(high)


def bootstrap_difference_ci(
    a: np.ndarray,
    b: np.ndarray,
    confidence: float = 0.95,
    resamples: int = 5000,
    seed: int = 0,
) -> tuple[float, float, float, float]:
    """(mean(a) - mean(b), low, high, p) for two independent groups of seeds.

    Each resample draws len(a) seeds of `a` and len(b) seeds of `b` with replacement; the interval
    is the percentile interval of the resampled differences, and p is the two-sided bootstrap
    p-value of "no difference" (twice the smaller tail mass at 0, at most 1).
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("bootstrap_difference_ci needs at least one value in each group")
    rng = np.random.default_rng(seed)
    da = a[rng.integers(0, a.size, (resamples, a.size))].mean(axis=1)
    db = b[rng.integers(0, b.size, (resamples, b.size))].mean(axis=1)
    diffs = da - db
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    p = min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0)))
    return float(a.mean() - b.mean()), float(low), float(high), float(p)
