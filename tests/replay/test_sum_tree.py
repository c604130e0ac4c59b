"""SumTree against brute force: proportional sampling (chi-square), updates, max, edge cases."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from accumbens.replay.sum_tree import SumTree

P_VALUE_THRESHOLD = 1e-3  # fixed seeds: a correct sampler fails with probability 0.1% per test


def brute_find(leaves: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The leaf whose cumulative range [sum(leaves[:i]), sum(leaves[:i+1])) holds each target."""
    return np.searchsorted(np.cumsum(leaves), targets, side="right")


def assert_consistent(tree: SumTree) -> None:
    """Incremental updates equal a rebuild from the leaves, bitwise."""
    arrays = [a.copy() for a in tree._arrays()]
    tree._rebuild()
    for before, after in zip(arrays, tree._arrays()):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("capacity,block_size", [(1, 2), (7, 2), (100, 3), (1000, 32), (5000, 32), (33, 32)])
def test_find_matches_brute_force(capacity, block_size):
    rng = np.random.default_rng(capacity)
    tree = SumTree(capacity, block_size)
    # Integer priorities (some 0) make every sum exact, so the answer is unambiguous.
    leaves = rng.integers(0, 5, capacity).astype(np.float64)
    leaves[rng.integers(0, capacity)] = 3.0
    tree.set(np.arange(capacity), leaves)
    assert tree.total == leaves.sum()
    targets = rng.integers(0, int(leaves.sum()), 500) + rng.choice([0.0, 0.25, 0.5, 0.999], 500)
    np.testing.assert_array_equal(tree.find(targets), brute_find(leaves, targets))
    assert_consistent(tree)


@pytest.mark.parametrize("stratified", [False, True])
def test_sample_frequencies_chi_square(stratified):
    rng = np.random.default_rng(1234)
    capacity = 300
    tree = SumTree(capacity, block_size=8)
    priorities = rng.gamma(1.0, size=capacity)
    priorities[rng.random(capacity) < 0.2] = 0.0  # zero priority: never sampled
    tree.set(np.arange(capacity), priorities)
    draws = np.concatenate([tree.sample(rng, 32, stratified) for _ in range(4000)])
    counts = np.bincount(draws, minlength=capacity)
    assert counts[priorities == 0].sum() == 0
    positive = priorities > 0
    expected = priorities[positive] / priorities.sum() * draws.size
    p_value = chisquare(counts[positive], expected).pvalue
    assert p_value > P_VALUE_THRESHOLD, p_value


def test_zero_priority_never_sampled_at_boundaries():
    rng = np.random.default_rng(0)
    tree = SumTree(10_000)
    # One positive leaf surrounded by zeros, then positive leaves with tiny values next to zeros.
    tree.set(4321, 2.0)
    assert set(tree.sample(rng, 1000).tolist()) == {4321}
    assert set(tree.find(np.array([0.0, 1.0, 2.0 - 1e-12, 2.0, 5.0])).tolist()) == {4321}
    tiny = rng.integers(0, 10_000, 50)
    tree.set(tiny, 1e-300)
    draws = np.concatenate([tree.sample(rng, 64, stratified=s) for s in (True, False) for _ in range(50)])
    assert np.all(tree.get(draws) > 0)
    # Targets at and past the total land on a positive leaf.
    last = tree.find(np.array([tree.total, tree.total * (1 + 1e-9), 1e9, -1.0]))
    assert np.all(tree.get(last) > 0)


def test_updates_duplicates_and_set_one():
    rng = np.random.default_rng(2)
    a, b = SumTree(1000), SumTree(1000)
    reference = np.zeros(1000)
    for _ in range(50):
        index = rng.integers(0, 1000, 16)
        value = rng.random(16)
        a.set(index, value)
        for i, v in zip(index, value):  # repeated indices: the last value wins
            b.set_one(i, v)
            reference[i] = v
        np.testing.assert_array_equal(a.leaves, reference)
        np.testing.assert_array_equal(b.leaves, reference)
    np.testing.assert_allclose(a.total, reference.sum(), rtol=1e-12)
    assert a.total == b.total
    assert_consistent(a)
    assert_consistent(b)
    np.testing.assert_array_equal(a.get(np.array([[1, 2], [3, 4]])), reference[[[1, 2], [3, 4]]])


def test_max_recorded():
    tree = SumTree(10)
    assert tree.max_recorded == 1.0  # Dopamine's initial value
    tree.set([1, 2], [0.5, 0.25])
    assert tree.max_recorded == 1.0
    tree.set_one(3, 7.5)
    tree.set([3], [0.1])  # lowering a leaf does not lower the record
    assert tree.max_recorded == 7.5


def test_empty_full_and_errors():
    rng = np.random.default_rng(0)
    tree = SumTree(64)
    assert tree.total == 0
    with pytest.raises(ValueError, match="all 0"):
        tree.sample(rng, 4)
    tree.set(np.arange(64), 1.0)  # full
    assert tree.total == 64.0
    counts = np.bincount(np.concatenate([tree.sample(rng, 64, True) for _ in range(10)]), minlength=64)
    assert np.all(counts == 10)  # stratified over equal masses: each stratum is one leaf
    tree.set(np.arange(64), 0.0)  # emptied again: exactly 0, no drift
    assert tree.total == 0.0
    with pytest.raises(ValueError):
        tree.set([0], [-1.0])
    with pytest.raises(ValueError):
        tree.set_one(0, float("nan"))
    with pytest.raises(IndexError):
        tree.set([64], [1.0])
    with pytest.raises(IndexError):
        tree.set_one(-1, 1.0)
    with pytest.raises(TypeError):
        tree.get(np.array([0.5]))


def test_wrap_around_reuse_of_leaves():
    """A replay reuses leaves as its cursor wraps: zero them and set them again many times."""
    rng = np.random.default_rng(5)
    capacity = 50
    tree = SumTree(capacity, block_size=4)
    reference = np.zeros(capacity)
    for t in range(500):
        slot = t % capacity
        tree.set_one(slot, 0.0)
        reference[slot] = 0.0
        tree.set_one((slot + 3) % capacity, tree.max_recorded)
        reference[(slot + 3) % capacity] = tree.max_recorded
        if t % 7 == 0:
            index = rng.integers(0, capacity, 4)
            value = np.where(reference[index] > 0, rng.random(4) * 3, 0.0)
            tree.set(index, value)
            reference[index] = value
    np.testing.assert_array_equal(tree.leaves, reference)
    draws = np.concatenate([tree.sample(rng, 32) for _ in range(200)])
    assert np.all(reference[draws] > 0)
    assert_consistent(tree)


def test_save_load_arrays_round_trip():
    rng = np.random.default_rng(3)
    tree = SumTree(777)
    tree.set(rng.integers(0, 777, 300), rng.random(300) * 4)
    restored = SumTree(777)
    restored.load_arrays(tree.to_arrays())
    for x, y in zip(tree._arrays(), restored._arrays()):
        np.testing.assert_array_equal(x, y)
    assert restored.max_recorded == tree.max_recorded
    targets = rng.random(64) * tree.total
    np.testing.assert_array_equal(tree.find(targets), restored.find(targets))
    with pytest.raises(ValueError, match="capacity"):
        SumTree(778).load_arrays(tree.to_arrays())
    bad = tree.to_arrays()
    bad["sum_tree_leaves"] = bad["sum_tree_leaves"].copy()
    bad["sum_tree_leaves"][0] = -1
    with pytest.raises(ValueError, match="negative"):
        SumTree(777).load_arrays(bad)
