"""PrioritizedReplayBuffer: validity in the tree, n-step samples, proportional draws, IS weights."""
from __future__ import annotations

import numpy as np
import pytest
from replay_reference import NaiveReplay, random_stream
from scipy.stats import chisquare

from accumbens.replay import (
    PrioritizedReplayBuffer,
    ReplayBuffer,
    ReplayCheckpointError,
    create_replay,
)

SHAPE = (2, 2)
P_VALUE_THRESHOLD = 1e-3  # fixed seeds: a correct sampler fails with probability 0.1% per test


def filled(capacity=20, stack_size=3, update_horizon=3, gamma=0.9, steps=100, seed=0, **kwargs):
    buffer = PrioritizedReplayBuffer(capacity, SHAPE, np.uint8, stack_size, update_horizon, gamma, **kwargs)
    reference = NaiveReplay(capacity, SHAPE, stack_size, update_horizon, gamma)
    for step in random_stream(np.random.default_rng(seed), steps, SHAPE, max_len=8):
        buffer.add(**step)
        reference.add(**step)
    return buffer, reference


@pytest.mark.parametrize("stack_size,update_horizon", [(1, 1), (4, 3), (2, 5)])
def test_tree_holds_exactly_the_valid_slots_through_wrap_around(stack_size, update_horizon):
    rng = np.random.default_rng(stack_size)
    capacity = 16
    buffer = PrioritizedReplayBuffer(capacity, SHAPE, np.uint8, stack_size, update_horizon, 0.9)
    reference = NaiveReplay(capacity, SHAPE, stack_size, update_horizon, 0.9)
    for i, step in enumerate(random_stream(rng, 300, SHAPE, max_len=10)):
        buffer.add(**step)
        reference.add(**step)
        expected = sorted(reference.transitions())
        assert np.flatnonzero(buffer.sum_tree.leaves > 0).tolist() == expected
        if i % 5 == 0 and buffer.can_sample():
            batch = buffer.sample(rng, 8)
            buffer.update_priorities(batch.index, rng.random(8) + 0.01)
    tree = buffer.sum_tree  # inner levels kept up to date: equal to a rebuild from the leaves
    arrays = [a.copy() for a in tree._arrays()]
    tree._rebuild()
    for before, after in zip(arrays, tree._arrays()):
        np.testing.assert_array_equal(before, after)


def test_samples_are_the_reference_n_step_transitions():
    buffer, reference = filled(capacity=30, stack_size=4, update_horizon=3, gamma=0.8, steps=170)
    expected = reference.transitions()
    rng = np.random.default_rng(1)
    buffer.update_priorities(buffer.valid_indices(), rng.random(buffer.num_valid) + 0.1)
    for _ in range(20):
        batch = buffer.sample(rng, 16)
        for row, slot in enumerate(batch.index):
            want = expected[int(slot)]
            np.testing.assert_array_equal(batch.observation[row], want["observation"])
            np.testing.assert_array_equal(batch.next_observation[row], want["next_observation"])
            assert batch.action[row] == want["action"]
            np.testing.assert_allclose(batch.reward[row], want["reward"], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(batch.discount[row], want["discount"], rtol=1e-6)


@pytest.mark.parametrize("stratified", [False, True])
def test_sampling_is_proportional_to_priority_to_the_alpha(stratified):
    buffer, _ = filled(capacity=200, steps=400, alpha=0.6, stratified=stratified)
    rng = np.random.default_rng(7)
    valid = buffer.valid_indices()
    priority = rng.gamma(1.0, size=valid.size)
    priority[::9] = 0.0
    buffer.update_priorities(valid, priority)
    draws = np.concatenate([buffer.sample(rng, 32).index for _ in range(3000)])
    counts = np.bincount(draws, minlength=buffer.capacity)[valid]
    assert counts[priority == 0].sum() == 0
    positive = priority > 0
    mass = priority[positive] ** 0.6
    p_value = chisquare(counts[positive], mass / mass.sum() * draws.size).pvalue
    assert p_value > P_VALUE_THRESHOLD, p_value


def test_importance_weights_normalised_by_their_maximum():
    buffer, _ = filled(capacity=100, steps=200, alpha=0.5, beta=0.4)
    valid = buffer.valid_indices()
    priority = np.linspace(0.1, 5.0, valid.size)
    buffer.update_priorities(valid, priority)
    batch = buffer.sample(np.random.default_rng(0), 32)
    mass = dict(zip(valid.tolist(), priority**0.5))
    probability = np.array([mass[i] for i in batch.index.tolist()]) / sum(mass.values())
    expected = (valid.size * probability) ** -0.4
    expected /= expected.max()
    np.testing.assert_allclose(batch.weight, expected, rtol=1e-6)
    assert batch.weight.dtype == np.float32 and batch.weight.max() == 1.0


def test_new_transitions_get_the_max_priority_and_stale_updates_are_ignored():
    buffer = PrioritizedReplayBuffer(12, SHAPE, update_horizon=1, alpha=0.5)
    obs = np.ones(SHAPE, np.uint8)
    for _ in range(4):
        buffer.add(obs, 0, 0.0, False, False)
    assert np.all(buffer.sum_tree.leaves[buffer.valid_indices()] == 1.0)  # initial max: 1
    buffer.update_priorities(np.array([0]), np.array([16.0]))  # mass 16^0.5 = 4
    buffer.add(obs, 0, 0.0, False, False)
    assert buffer.sum_tree.get(np.array([3]))[0] == 4.0  # slot 3 became valid at the max
    # Slot 0 is overwritten after the ring wraps; a late update for it must not revive it.
    for _ in range(12):
        buffer.add(obs, 0, 0.0, False, False)
    # 17 writes: slot 4 held step 4, now step 16, the newest, whose window is incomplete.
    assert not buffer.is_valid(np.array([4]))[0]
    buffer.update_priorities(np.array([4]), np.array([100.0]))
    assert buffer.sum_tree.get(np.array([4]))[0] == 0.0
    with pytest.raises(ValueError):
        buffer.update_priorities(np.array([1]), np.array([-1.0]))
    with pytest.raises(ValueError):
        buffer.update_priorities(np.array([1, 2]), np.array([1.0]))


def test_all_priorities_zero_cannot_sample():
    buffer, _ = filled(capacity=30, steps=40)
    buffer.update_priorities(buffer.valid_indices(), np.zeros(buffer.num_valid))
    assert not buffer.can_sample()
    with pytest.raises(ValueError, match="priority is 0"):
        buffer.sample(np.random.default_rng(0), 4)


def test_save_load_round_trip_includes_the_tree(tmp_path):
    buffer, _ = filled(capacity=40, steps=90, alpha=0.7)
    rng = np.random.default_rng(2)
    buffer.update_priorities(buffer.valid_indices(), rng.random(buffer.num_valid))
    buffer.save(str(tmp_path))
    restored = PrioritizedReplayBuffer(40, SHAPE, np.uint8, 3, 3, 0.9, alpha=0.7)
    restored.load(str(tmp_path))
    np.testing.assert_array_equal(restored.sum_tree.leaves, buffer.sum_tree.leaves)
    assert restored.sum_tree.max_recorded == buffer.sum_tree.max_recorded
    a, b = buffer.sample(np.random.default_rng(9), 16), restored.sample(np.random.default_rng(9), 16)
    np.testing.assert_array_equal(a.index, b.index)
    np.testing.assert_array_equal(a.weight, b.weight)
    with pytest.raises(ReplayCheckpointError, match="configured as"):
        PrioritizedReplayBuffer(40, SHAPE, np.uint8, 3, 3, 0.9, alpha=0.5).load(str(tmp_path))
    with pytest.raises(ReplayCheckpointError, match="configured as"):
        ReplayBuffer(40, SHAPE, np.uint8, 3, 3, 0.9).load(str(tmp_path))


def test_load_rejects_bad_tree(tmp_path):
    from accumbens.replay import checkpointing

    buffer, _ = filled(capacity=40, steps=90)
    buffer.save(str(tmp_path))
    arrays, metadata = checkpointing.load_arrays(str(tmp_path))
    leaves = arrays["sum_tree_leaves"].copy()
    leaves[~buffer._valid] = 1.0  # priorities on invalid slots
    arrays["sum_tree_leaves"] = leaves
    metadata.pop("format_version")
    checkpointing.save_arrays(str(tmp_path), arrays, metadata)
    fresh = PrioritizedReplayBuffer(40, SHAPE, np.uint8, 3, 3, 0.9)
    with pytest.raises(ReplayCheckpointError, match="inconsistent"):
        fresh.load(str(tmp_path))
    assert fresh.add_count == 0  # unchanged


def test_create_replay():
    uniform = create_replay("uniform", capacity=10, observation_shape=(3,))
    assert type(uniform) is ReplayBuffer
    prioritized = create_replay("prioritized", capacity=10, observation_shape=(3,), alpha=0.6)
    assert isinstance(prioritized, PrioritizedReplayBuffer) and prioritized.alpha == 0.6
    with pytest.raises(ValueError, match="prioritized"):
        create_replay("rank_based", capacity=10, observation_shape=(3,))
