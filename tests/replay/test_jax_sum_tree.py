"""The JAX sum tree agrees with the NumPy one and works under jit."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import chisquare

from accumbens.replay import jax_sum_tree
from accumbens.replay.sum_tree import SumTree

P_VALUE_THRESHOLD = 1e-3

set_jit = jax.jit(jax_sum_tree.set_priorities)
find_jit = jax.jit(jax_sum_tree.find)


@pytest.mark.parametrize("capacity", [5, 1000])
def test_agrees_with_numpy_tree(capacity):
    rng = np.random.default_rng(capacity)
    numpy_tree = SumTree(capacity)
    state = jax_sum_tree.init(capacity)
    for _ in range(5):  # several batched updates, with repeated indices
        index = rng.integers(0, capacity, 16)
        value = rng.integers(0, 6, 16).astype(np.float64)  # integers: sums are exact in float32
        numpy_tree.set(index, value)
        state = set_jit(state, jnp.asarray(index), jnp.asarray(value))
    np.testing.assert_array_equal(np.asarray(jax_sum_tree.get(state, jnp.arange(capacity))), numpy_tree.leaves)
    assert float(jax_sum_tree.total(state)) == numpy_tree.total
    assert float(state.max_recorded) == numpy_tree.max_recorded
    if numpy_tree.total > 0:
        targets = rng.integers(0, int(numpy_tree.total), 256) + rng.choice([0.0, 0.5, 0.75], 256)
        np.testing.assert_array_equal(
            np.asarray(find_jit(state, jnp.asarray(targets, jnp.float32))), numpy_tree.find(targets)
        )


def test_repeated_indices_last_wins_and_max_recorded():
    state = jax_sum_tree.init(6)
    assert float(state.max_recorded) == 1.0
    state = set_jit(state, jnp.array([3, 3, 5, 3]), jnp.array([7.0, 2.0, 4.0, 0.5]))
    np.testing.assert_array_equal(np.asarray(jax_sum_tree.get(state, jnp.arange(6))), [0, 0, 0, 0.5, 0, 4.0])
    assert float(jax_sum_tree.total(state)) == 4.5
    assert float(state.max_recorded) == 4.0  # 7.0 was superseded within the batch
    state = set_jit(state, jnp.array([5, 5, 5, 5]), jnp.array([0.0, 0.0, 0.0, 0.0]))
    assert float(state.max_recorded) == 4.0 and float(jax_sum_tree.total(state)) == 0.5


def test_sample_frequencies_and_zero_priorities():
    rng = np.random.default_rng(3)
    capacity = 100
    priority = rng.gamma(1.0, size=capacity).astype(np.float32)
    priority[::4] = 0.0
    state = set_jit(jax_sum_tree.init(capacity), jnp.arange(capacity), jnp.asarray(priority))
    keys = jax.random.split(jax.random.PRNGKey(0), 800)
    for stratified in (False, True):
        draw = jax.jit(jax.vmap(lambda k: jax_sum_tree.sample(state, k, 64, stratified)))
        draws = np.asarray(draw(keys)).ravel()
        counts = np.bincount(draws, minlength=capacity)
        assert counts[priority == 0].sum() == 0
        positive = priority > 0
        mass = priority[positive].astype(np.float64)
        expected = mass / mass.sum() * draws.size
        assert chisquare(counts[positive], expected).pvalue > P_VALUE_THRESHOLD, stratified


def test_usable_inside_scan_and_importance_weights():
    capacity = 32

    def step(state, i):  # a replay-like loop: new slot at the max, old slot zeroed
        state = jax_sum_tree.set_priorities(state, (i % capacity)[None], state.max_recorded[None])
        state = jax_sum_tree.set_priorities(state, ((i + 1) % capacity)[None], jnp.zeros(1))
        return state, jax_sum_tree.total(state)

    @jax.jit
    def run():
        state, totals = jax.lax.scan(step, jax_sum_tree.init(capacity), jnp.arange(100))
        state = jax_sum_tree.set_priorities(state, jnp.array([0, 2]), jnp.array([4.0, 9.0]))
        index = jnp.array([0, 2, 5])
        weight = jax_sum_tree.importance_weights(state, index, capacity - 1, 0.5)
        return totals[-1], jax_sum_tree.total(state), weight

    last_total, new_total, weight = run()
    assert float(last_total) == capacity - 1
    probability = np.array([4.0, 9.0, 1.0]) / float(new_total)
    expected = ((capacity - 1) * probability) ** -0.5
    np.testing.assert_allclose(np.asarray(weight), expected / expected.max(), rtol=1e-5)
    assert float(np.max(weight)) == 1.0
