"""DevicePrioritizedReplayBuffer against float64 NumPy references and the host PrioritizedReplayBuffer.

- the tree holds exactly the valid slots (a NumPy validity model written from the definition),
  new valid slots at the largest mass recorded, through wrap-around, several environments,
  frame stacks and n-step windows, with priority updates in between;
- the same stream and the same priority updates as the host buffer give the same masses, valid
  set, batches and importance weights;
- sampling frequencies match p^alpha / sum (chi-square), importance weights match a float64
  computation, priority-update edge cases (stale slots, repeats, NaN), vmap over seeds.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import chisquare

from accumbens.replay import PrioritizedReplayBuffer
from accumbens.replay import jax_sum_tree
from accumbens.replay.device_prioritized import DevicePrioritizedReplayBuffer

P_VALUE_THRESHOLD = 1e-3  # fixed seeds: a correct sampler fails with probability 0.1% per test
SHAPE = (3, 2)


def _stream(rng, steps, num_envs, p_term=0.08, p_trunc=0.05, end_all=False):
    """Random lock-step steps (o_t, a_t, r, term, trunc, o_{t+1}) of `num_envs` environments."""
    obs = rng.integers(0, 255, size=(num_envs,) + SHAPE).astype(np.uint8)
    out = []
    for i in range(steps):
        action = rng.integers(0, 5, size=num_envs).astype(np.int32)
        reward = rng.normal(size=num_envs).astype(np.float32)
        term = rng.random(num_envs) < p_term
        trunc = rng.random(num_envs) < p_trunc
        if end_all and i == steps - 1:
            term = ~trunc
        nxt = rng.integers(0, 255, size=(num_envs,) + SHAPE).astype(np.uint8)
        reset = rng.integers(0, 255, size=(num_envs,) + SHAPE).astype(np.uint8)
        out.append((obs, action, reward, term, trunc, nxt))
        obs = np.where((term | trunc)[:, None, None], reset, nxt)
    return out


class ReferenceValidity:
    """Which (t, env) are valid sample starts, from the definition in `accumbens.replay.device`."""

    def __init__(self, rows, num_envs, stack, horizon):
        self.rows, self.num_envs, self.k, self.n = rows, num_envs, stack, horizon
        self.ended = [[] for _ in range(num_envs)]
        self.episode_step = [[] for _ in range(num_envs)]
        self.next_step = [0] * num_envs

    def add(self, term, trunc):
        for e in range(self.num_envs):
            ended = bool(term[e] or trunc[e])
            self.ended[e].append(ended)
            self.episode_step[e].append(self.next_step[e])
            self.next_step[e] = 0 if ended else self.next_step[e] + 1

    def valid(self, t, e):
        count = len(self.ended[e])
        oldest = max(0, count - self.rows)
        if not oldest <= t < count:
            return False
        window = [u for u in range(t, min(t + self.n, count)) if self.ended[e][u]]
        complete = bool(window) or t + self.n - 1 < count
        back = min(self.k - 1, self.episode_step[e][t])
        return complete and t - back >= oldest

    def valid_slots(self):
        """{slot: (t, env)} of the valid starts now; slot = (t % rows) * num_envs + env."""
        out = {}
        for e in range(self.num_envs):
            count = len(self.ended[e])
            for t in range(max(0, count - self.rows), count):
                if self.valid(t, e):
                    out[(t % self.rows) * self.num_envs + e] = (t, e)
        return out


def _jitted(buffer):
    add = jax.jit(lambda s, x: buffer.add(s, *x))
    update = jax.jit(buffer.update_priorities)
    return add, update


@pytest.mark.parametrize(
    "num_envs,stack,horizon,capacity,alpha",
    [(1, 1, 1, 24, 0.6), (2, 3, 3, 30, 0.5), (3, 2, 4, 36, 1.0)],
)
def test_tree_holds_exactly_the_valid_slots(num_envs, stack, horizon, capacity, alpha):
    rng = np.random.default_rng(num_envs + stack)
    buffer = DevicePrioritizedReplayBuffer(capacity, SHAPE, np.uint8, num_envs, stack, horizon, 0.9, alpha=alpha)
    add, update = _jitted(buffer)
    reference = ReferenceValidity(buffer.rows, num_envs, stack, horizon)
    mass = np.zeros(buffer.num_slots)  # float64 reference masses
    max_recorded = 1.0
    state = buffer.init()
    for i, step in enumerate(_stream(rng, 120, num_envs)):
        before = reference.valid_slots()
        state = add(state, step)
        reference.add(step[3], step[4])
        after = reference.valid_slots()
        for slot in set(before) - set(after):
            mass[slot] = 0.0
        for slot, owner in after.items():
            if before.get(slot) != owner:  # newly valid (possibly in a reused slot)
                mass[slot] = max_recorded
        if i % 3 == 2 and after:
            # Priorities for a mix of valid, stale and never-valid slots, with repeats.
            index = rng.integers(0, buffer.num_slots, 6)
            index[-1] = index[0]
            priority = rng.gamma(2.0, size=6)
            state = update(state, jnp.asarray(index), jnp.asarray(priority, jnp.float32))
            last = {j: p for j, p in zip(index, priority)}  # repeated indices: the last one wins
            for j, p in last.items():
                if j in after:
                    mass[j] = np.float64(np.float32(p)) ** alpha
                    max_recorded = max(max_recorded, mass[j])
        leaves = np.asarray(jax_sum_tree.get(state.tree, jnp.arange(buffer.num_slots)))
        np.testing.assert_allclose(leaves, mass, rtol=2e-6, err_msg=f"step {i}")
        assert int(state.num_valid) == len(after)
        np.testing.assert_allclose(float(state.tree.max_recorded), max_recorded, rtol=2e-6)
    assert state.count > buffer.rows  # the stream wrapped around
    np.testing.assert_allclose(float(jax_sum_tree.total(state.tree)), mass.sum(), rtol=1e-5)


@pytest.mark.parametrize("stack,horizon", [(1, 3), (3, 2)])
def test_matches_host_prioritized_buffer(stack, horizon):
    """One environment, nothing evicted, the stream ends with an episode end: the host and device
    buffers hold the same valid starts; after the same priority updates, the same masses, and for
    the same drawn starts the same batch and importance weights."""
    rng = np.random.default_rng(stack)
    steps, alpha, beta, gamma = 90, 0.6, 0.4, 0.9
    device = DevicePrioritizedReplayBuffer(200, SHAPE, np.uint8, 1, stack, horizon, gamma, alpha=alpha, beta=beta)
    host = PrioritizedReplayBuffer(200, SHAPE, np.uint8, stack, horizon, gamma, alpha=alpha, beta=beta)
    add, update = _jitted(device)
    state = device.init()
    host_slot = {}
    for t, (obs, action, reward, term, trunc, nxt) in enumerate(_stream(rng, steps, 1, end_all=True)):
        state = add(state, (obs, action, reward, term, trunc, nxt))
        host_slot[t] = host.add_count % host.capacity
        ended = bool(term[0] or trunc[0])
        host.add(obs[0], action[0], reward[0], term[0], trunc[0], final_observation=nxt[0] if ended else None)
    logical = np.arange(steps)
    host_valid = host.is_valid(np.array([host_slot[t] for t in logical]))
    device_valid = np.asarray(device.is_valid(state, jnp.asarray(logical), jnp.zeros(steps, jnp.int32)))
    np.testing.assert_array_equal(device_valid, host_valid)
    assert int(state.num_valid) == host.num_valid == host_valid.sum()
    valid = logical[host_valid]
    # The same updates on both sides. (No repeated index within one update: for those the host
    # tree's max_recorded also counts the superseded values, the device tree only the stored ones.)
    for _ in range(3):
        chosen = rng.choice(valid, 12, replace=False)
        priority = rng.gamma(2.0, size=12).astype(np.float32)
        host.update_priorities(np.array([host_slot[t] for t in chosen]), priority)
        state = update(state, jnp.asarray(chosen, jnp.int32), jnp.asarray(priority))  # one env: slot = t
    host_mass = host.sum_tree.get(np.array([host_slot[t] for t in logical]))
    device_mass = np.asarray(jax_sum_tree.get(state.tree, jnp.asarray(logical)))
    np.testing.assert_allclose(device_mass, host_mass, rtol=2e-6)
    np.testing.assert_allclose(float(state.tree.max_recorded), host.sum_tree.max_recorded, rtol=2e-6)
    # The same drawn starts: the host sampler is made to draw them.
    drawn = rng.choice(valid, 16)
    host.sum_tree.sample = lambda *args: np.array([host_slot[t] for t in drawn])
    expected = host.sample(np.random.default_rng(0), 16)
    got = jax.jit(device.gather)(state, jnp.asarray(drawn, jnp.int32), jnp.zeros(16, jnp.int32))
    weight = jax.jit(device.importance_weights)(state, got.index)
    for field in ("observation", "next_observation", "action"):
        np.testing.assert_array_equal(np.asarray(getattr(got, field)), getattr(expected, field), err_msg=field)
    for field in ("reward", "discount"):
        np.testing.assert_allclose(np.asarray(getattr(got, field)), getattr(expected, field), rtol=1e-5, err_msg=field)
    np.testing.assert_allclose(np.asarray(weight), expected.weight, rtol=1e-5)


def _filled(num_envs=2, stack=2, horizon=3, capacity=80, steps=70, seed=0, **kwargs):
    buffer = DevicePrioritizedReplayBuffer(capacity, SHAPE, np.uint8, num_envs, stack, horizon, 0.9, **kwargs)
    add, _ = _jitted(buffer)
    state = buffer.init()
    reference = ReferenceValidity(buffer.rows, num_envs, stack, horizon)
    for step in _stream(np.random.default_rng(seed), steps, num_envs):
        state = add(state, step)
        reference.add(step[3], step[4])
    return buffer, state, reference


@pytest.mark.parametrize("stratified", [False, True])
def test_sampling_frequencies_and_importance_weights(stratified):
    alpha, beta = 0.6, 0.4
    buffer, state, reference = _filled(alpha=alpha, beta=beta, stratified=stratified)
    rng = np.random.default_rng(1)
    valid = np.array(sorted(reference.valid_slots()))
    priority = rng.gamma(1.0, size=valid.size).astype(np.float32)
    priority[::7] = 0.0
    state = jax.jit(buffer.update_priorities)(state, jnp.asarray(valid), jnp.asarray(priority))
    mass = np.zeros(buffer.num_slots)
    mass[valid] = priority.astype(np.float64) ** alpha
    probability = mass / mass.sum()

    sample = jax.jit(jax.vmap(lambda key: buffer.sample(state, key, 32)))
    batches = sample(jax.random.split(jax.random.PRNGKey(0), 1000))
    index = np.asarray(batches.index).ravel()
    counts = np.bincount(index, minlength=buffer.num_slots)
    assert counts[mass == 0].sum() == 0  # invalid and zero-priority slots are never drawn
    positive = mass > 0
    p_value = chisquare(counts[positive], probability[positive] * index.size).pvalue
    assert p_value > P_VALUE_THRESHOLD, p_value
    # Importance weights: float64 (N P(i))^-beta normalised by each batch's maximum.
    per_batch = np.asarray(batches.index)
    weight = (valid.size * probability[per_batch]) ** -beta
    weight /= weight.max(axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(batches.weight), weight, rtol=2e-5)
    # The batch is the uniform buffer's gather of the drawn slots.
    t, env = buffer.locate(state, jnp.asarray(per_batch[0]))
    expected = buffer.gather(state, t, env)
    np.testing.assert_array_equal(np.asarray(batches.observation[0]), np.asarray(expected.observation))
    np.testing.assert_allclose(np.asarray(batches.reward[0]), np.asarray(expected.reward), rtol=1e-6)


def test_stratified_batches_cover_the_strata():
    """Stratified: the i-th draw of a batch falls in the i-th equal-mass stratum of the tree."""
    buffer, state, _ = _filled(stratified=True)
    batch = jax.jit(buffer.sample, static_argnums=2)(state, jax.random.PRNGKey(3), 16)
    leaves = np.asarray(jax_sum_tree.get(state.tree, jnp.arange(buffer.num_slots)), np.float64)
    cumulative = np.cumsum(leaves)
    start = cumulative[np.asarray(batch.index)] - leaves[np.asarray(batch.index)]
    stratum = np.floor(start / cumulative[-1] * 16 + 1e-9)
    end_stratum = np.floor(cumulative[np.asarray(batch.index)] / cumulative[-1] * 16 - 1e-9)
    assert np.all((stratum <= np.arange(16)) & (np.arange(16) <= end_stratum))


def test_priority_update_edge_cases():
    buffer, state, reference = _filled(num_envs=1, stack=1, horizon=1, capacity=10, steps=25, alpha=1.0)
    valid = sorted(reference.valid_slots())
    assert len(valid) == 10 and int(state.num_valid) == 10
    update = jax.jit(buffer.update_priorities)
    # Repeated indices: the last wins. NaN and negative priorities: mass 0. Out of range: dropped.
    state = update(state, jnp.array([2, 2, 3, 4, 99, -1]), jnp.array([5.0, 7.0, jnp.nan, -1.0, 3.0, 3.0]))
    leaves = np.asarray(jax_sum_tree.get(state.tree, jnp.arange(10)))
    np.testing.assert_array_equal(leaves[[2, 3, 4]], [7.0, 0.0, 0.0])
    assert float(state.tree.max_recorded) == 7.0 and int(state.num_valid) == 10
    # A new step enters with the largest mass recorded and replaces the oldest slot (25 % 10 = 5).
    add, _ = _jitted(buffer)
    step = _stream(np.random.default_rng(9), 1, 1)[0]
    state = add(state, step)
    assert float(jax_sum_tree.get(state.tree, 5)) == 7.0
    # A priority sent for a slot whose step is gone (here: none ever written) is ignored.
    empty = buffer.init()
    empty = update(empty, jnp.array([0, 1]), jnp.array([3.0, 3.0]))
    assert float(jax_sum_tree.total(empty.tree)) == 0.0
    # An empty buffer samples in-range slots with weight 1 (callers gate on min_replay_history).
    batch = jax.jit(buffer.sample, static_argnums=2)(buffer.init(), jax.random.PRNGKey(0), 4)
    assert np.all(np.asarray(batch.weight) == 1.0) and np.all(np.isfinite(np.asarray(batch.reward)))


def test_stale_priority_after_overwrite_is_ignored():
    """A slot sampled, then overwritten by a step whose 3-step window is not complete yet: the
    priority that comes back for the old step is ignored (the slot keeps mass 0), as on the host."""
    buffer = DevicePrioritizedReplayBuffer(10, SHAPE, np.uint8, 1, 1, 3, 0.9, alpha=1.0)
    add, update = _jitted(buffer)
    state = buffer.init()
    for step in _stream(np.random.default_rng(5), 12, 1, p_term=0.0, p_trunc=0.0):
        state = add(state, step)
    # Steps 2..11 are stored; 2..9 are valid (10 and 11 wait for their windows). Slot 2 holds step 2.
    assert int(state.num_valid) == 8 and float(jax_sum_tree.get(state.tree, 2)) == 1.0
    state = add(state, _stream(np.random.default_rng(6), 1, 1, p_term=0.0, p_trunc=0.0)[0])  # step 12 -> slot 2
    assert float(jax_sum_tree.get(state.tree, 2)) == 0.0 and int(state.num_valid) == 8  # 3..10 valid
    state = update(state, jnp.array([2, 3]), jnp.array([50.0, 60.0]))
    np.testing.assert_array_equal(np.asarray(jax_sum_tree.get(state.tree, jnp.array([2, 3]))), [0.0, 60.0])


def test_vmap_over_seeds_equals_separate_buffers():
    buffer = DevicePrioritizedReplayBuffer(40, SHAPE, np.uint8, 2, 2, 3, 0.9)
    streams = [_stream(np.random.default_rng(s), 30, 2) for s in (0, 1)]
    columns = [tuple(np.stack(c) for c in zip(*stream)) for stream in streams]  # [T, E, ...]
    both = jax.tree.map(lambda *xs: np.stack(xs, axis=1), *columns)  # [T, S, E, ...]

    def fill(xs, batched):
        add = jax.vmap(buffer.add) if batched else buffer.add
        init = jax.vmap(lambda _: buffer.init())(jnp.arange(2)) if batched else buffer.init()
        return jax.lax.scan(lambda s, x: (add(s, *x), None), init, xs)[0]

    stacked = jax.jit(lambda xs: fill(xs, True))(both)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    batches = jax.jit(jax.vmap(lambda s, k: buffer.sample(s, k, 8)))(stacked, keys)
    fill_one = jax.jit(lambda xs: fill(xs, False))
    sample_one = jax.jit(buffer.sample, static_argnums=2)
    for i in range(2):
        alone = fill_one(columns[i])
        np.testing.assert_array_equal(np.asarray(alone.tree.nodes), np.asarray(stacked.tree.nodes[i]))
        batch = sample_one(alone, keys[i], 8)
        np.testing.assert_array_equal(np.asarray(batch.index), np.asarray(batches.index[i]))
        np.testing.assert_allclose(np.asarray(batch.weight), np.asarray(batches.weight[i]), rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="alpha and beta"):
        DevicePrioritizedReplayBuffer(40, SHAPE, alpha=-0.5)
