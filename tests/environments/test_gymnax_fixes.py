"""The loop-free Asterix slot search equals gymnax's while loop, on every pattern and in rollouts."""
import itertools

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("gymnax", reason="gymnax is a test dependency (pip install -e '.[test]')")

import jax.numpy as jnp  # noqa: E402

from accumbens.environments import gymnax_fixes  # noqa: E402
from accumbens.environments.jax_envs import create_jax_environment  # noqa: E402


def test_same_slot_and_flag_for_every_occupancy_pattern():
    patterns = jnp.asarray(list(itertools.product((0, 1), repeat=8)), jnp.int32)  # all 256 patterns
    keys = jax.random.split(jax.random.PRNGKey(0), 16)

    def every(fn):  # [keys, patterns] of (slot, free)
        return jax.jit(jax.vmap(jax.vmap(fn, in_axes=(None, 0)), in_axes=(0, None)))(keys, patterns)

    slot_a, free_a = every(gymnax_fixes.original_sample_slots())
    slot_b, free_b = every(gymnax_fixes.loop_free_sample_slots)
    np.testing.assert_array_equal(np.asarray(slot_a), np.asarray(slot_b))
    np.testing.assert_array_equal(np.asarray(free_a), np.asarray(free_b))
    assert 0 < int(np.sum(np.asarray(free_a))) < free_a.size  # both outcomes occur


def test_all_lanes_full_and_all_free():
    key = jax.random.PRNGKey(3)
    order = np.asarray(jax.random.permutation(key, jnp.arange(8)))
    slot, free = gymnax_fixes.loop_free_sample_slots(key, jnp.ones(8, jnp.int32))
    assert (int(slot), int(free)) == (order[-1], 0)  # nothing free: the last lane, flagged
    slot, free = gymnax_fixes.loop_free_sample_slots(key, jnp.zeros(8, jnp.int32))
    assert (int(slot), int(free)) == (order[1], 1)  # gymnax never picks the permutation's first lane


def test_asterix_rollout_identical_with_and_without_the_fix():
    from gymnax.environments.minatar import asterix

    env, params = create_jax_environment("minatar:asterix")
    assert asterix.while_sample_slots is gymnax_fixes.loop_free_sample_slots

    def rollout():
        def step(carry, key):
            state = carry
            k_action, k_step = jax.random.split(key)
            action = jax.random.randint(k_action, (), 0, env.num_actions)
            obs, state, reward, terminated, truncated, _ = env.step(k_step, state, action, params)
            return state, (obs, reward, terminated)

        _, state = env.reset(jax.random.PRNGKey(1), params)
        return jax.lax.scan(step, state, jax.random.split(jax.random.PRNGKey(2), 400))[1]

    fixed = jax.jit(rollout)()
    asterix.while_sample_slots = gymnax_fixes.original_sample_slots()
    try:
        original = jax.jit(rollout)()
    finally:
        asterix.while_sample_slots = gymnax_fixes.loop_free_sample_slots
    for x, y in zip(fixed, original):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert float(np.sum(np.asarray(fixed[1]))) > 0  # the rollout collected rewards: spawning happened
