"""Compiled runner and device replay (CPU, small budgets).

- device replay vs the host `ReplayBuffer` on the same transition streams (n-step, stacks,
  termination vs truncation, wrap-around);
- compiled runner: shapes and files, one seed vs a vmapped multi-seed run, the sharded path on 4
  fake CPU devices (subprocess) vs unsharded, kill/resume determinism, DQN learning on CartPole.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from accumbens.replay import ReplayBuffer
from accumbens.replay.device import DeviceReplayBuffer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ----------------------------------------------------------------------------- device replay
def _stream(rng, steps, num_envs, obs_shape, p_term=0.08, p_trunc=0.05):
    """Random lock-step transitions for `num_envs` environments (obs distinct per step)."""
    obs = rng.integers(0, 255, size=(num_envs,) + obs_shape).astype(np.uint8)
    out = []
    for _ in range(steps):
        action = rng.integers(0, 5, size=num_envs).astype(np.int32)
        reward = rng.normal(size=num_envs).astype(np.float32)
        term = rng.random(num_envs) < p_term
        trunc = rng.random(num_envs) < p_trunc
        nxt = rng.integers(0, 255, size=(num_envs,) + obs_shape).astype(np.uint8)
        reset = rng.integers(0, 255, size=(num_envs,) + obs_shape).astype(np.uint8)
        out.append((obs, action, reward, term, trunc, nxt))
        obs = np.where((term | trunc)[:, None, None], reset, nxt)
    return out


@pytest.mark.parametrize(
    "num_envs,stack,horizon,capacity,steps",
    [(1, 1, 3, 400, 150), (2, 3, 3, 600, 150), (2, 2, 4, 60, 150)],  # the last one wraps around
)
def test_device_replay_matches_host(num_envs, stack, horizon, capacity, steps):
    obs_shape = (3, 2)
    gamma = 0.9
    device = DeviceReplayBuffer(capacity, obs_shape, np.uint8, num_envs, stack, horizon, gamma)
    hosts = [ReplayBuffer(capacity // num_envs, obs_shape, np.uint8, stack, horizon, gamma) for _ in range(num_envs)]
    state = device.init()
    add = jax.jit(device.add)
    host_slot = {}  # (t, env) -> host slot index
    for t, (obs, action, reward, term, trunc, nxt) in enumerate(_stream(np.random.default_rng(0), steps, num_envs, obs_shape)):
        state = add(state, obs, action, reward, term, trunc, nxt)
        for e, host in enumerate(hosts):
            host_slot[(t, e)] = host.add_count % host.capacity
            ended = term[e] or trunc[e]
            host.add(obs[e], action[e], reward[e], term[e], trunc[e], final_observation=nxt[e] if ended else None)
    keys = sorted(host_slot)
    t_all = np.array([k[0] for k in keys], np.int32)
    e_all = np.array([k[1] for k in keys], np.int32)
    device_valid = np.asarray(device.is_valid(state, t_all, e_all))
    # A host slot may have been reused by a later step: only the newest owner of a slot counts.
    owner = {}
    for (t, e), slot in host_slot.items():
        owner[(e, slot)] = max(owner.get((e, slot), -1), t)
    host_valid = np.array(
        [owner[(e, host_slot[(t, e)])] == t and hosts[e].is_valid(np.array([host_slot[(t, e)]]))[0] for t, e in keys]
    )
    if capacity // num_envs >= steps + steps // 2:  # nothing evicted on either side
        # Same valid set, except that a row stores o_{t+1} itself, so the device form may sample
        # step t as soon as step t+n-1 is stored (the host waits for o_{t+n}'s own slot).
        assert not (host_valid & ~device_valid).any()
        assert (t_all[device_valid & ~host_valid] >= steps - horizon).all()
    both = device_valid & host_valid
    assert both.sum() > 20
    batch = jax.jit(device.gather)(state, t_all[both], e_all[both])
    for e, host in enumerate(hosts):
        sel = e_all[both] == e
        slots = np.array([host_slot[(t, e)] for t in t_all[both][sel]])
        expected = host._gather(slots, np.ones(len(slots), np.float32))
        for field in ("observation", "action", "next_observation"):
            np.testing.assert_array_equal(np.asarray(getattr(batch, field))[sel], getattr(expected, field), err_msg=field)
        for field in ("reward", "discount"):
            np.testing.assert_allclose(np.asarray(getattr(batch, field))[sel], getattr(expected, field), rtol=1e-5, err_msg=field)
    # Sampling only ever returns valid starts, with the batch shapes of the host form.
    t, env = jax.jit(device.sample_indices, static_argnums=2)(state, jax.random.PRNGKey(1), 256)
    assert np.asarray(device.is_valid(state, t, env)).all()
    sample = jax.jit(device.sample, static_argnums=2)(state, jax.random.PRNGKey(2), 8)
    assert sample.observation.shape == (8,) + obs_shape + (stack,)
    assert sample.next_observation.shape == (8,) + obs_shape + (stack,)
    assert sample.reward.shape == sample.discount.shape == sample.action.shape == (8,)
