"""SequenceReplayBuffer against the naive replay: histories, masks at episode starts and overwrites."""
from __future__ import annotations

import numpy as np
import pytest
from replay_reference import NaiveReplay, random_stream

from accumbens.replay import ReplayBuffer, ReplayCheckpointError, SequenceBatch, SequenceReplayBuffer, create_replay

SHAPE = (2, 3)


def expected_window(reference: NaiveReplay, episode: int, pos: int, length: int):
    """Observations of `episode` at positions pos-L+1 .. pos that are still live, zeros elsewhere."""
    live = reference._live()
    frames, mask = [], []
    for p in range(pos - length + 1, pos + 1):
        real = p >= 0 and (episode, p) in live
        mask.append(real)
        frames.append(reference.episodes[episode].observations[p] if real else np.zeros(SHAPE, np.uint8))
    return np.stack(frames), np.array(mask)


def assert_matches_reference(buffer: SequenceReplayBuffer, reference: NaiveReplay, length: int) -> None:
    expected = reference.transitions()
    valid = buffer.valid_indices()
    assert sorted(expected) == valid.tolist()
    if not expected.keys():
        return
    batch = buffer.get_transitions(valid)
    assert isinstance(batch, SequenceBatch)
    slot_of = reference._live()
    key_of = {slot: key for key, slot in slot_of.items()}
    for row, slot in enumerate(valid):
        episode, pos = key_of[int(slot)]
        want = expected[int(slot)]
        observation, mask = expected_window(reference, episode, pos, length)
        np.testing.assert_array_equal(batch.observation[row], observation)
        np.testing.assert_array_equal(batch.mask[row], mask)
        ep = reference.episodes[episode]
        m = min(reference.n, ep.num_steps - pos) if ep.ended else reference.n
        next_observation, next_mask = expected_window(reference, episode, pos + m, length)
        np.testing.assert_array_equal(batch.next_observation[row], next_observation)
        np.testing.assert_array_equal(batch.next_mask[row], next_mask)
        np.testing.assert_array_equal(next_observation[-1], want["next_observation"][..., -1])
        assert batch.action[row] == want["action"]
        np.testing.assert_allclose(batch.reward[row], want["reward"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(batch.discount[row], want["discount"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("capacity,length,update_horizon", [(10, 4, 1), (13, 6, 3), (23, 30, 2)])
def test_matches_naive_reference_with_wraparound(capacity, length, update_horizon):
    rng = np.random.default_rng(capacity + length)
    buffer = SequenceReplayBuffer(capacity, SHAPE, np.uint8, update_horizon=update_horizon, gamma=0.9, context_length=length)
    reference = NaiveReplay(capacity, SHAPE, 1, update_horizon, 0.9)
    for kwargs in random_stream(rng, 6 * capacity, SHAPE, max_len=max(3, capacity)):
        buffer.add(**kwargs)
        reference.add(**kwargs)
        assert_matches_reference(buffer, reference, length)


def test_mask_starts_at_the_episode_start():
    """Hand-built case: episode 0 has 3 steps, episode 1 is running; L = 5."""
    buffer = SequenceReplayBuffer(50, (1,), np.float32, context_length=5)
    for t in range(3):
        buffer.add(np.array([t + 1.0]), 0, 0.0, t == 2, False)
    for t in range(4):
        buffer.add(np.array([10.0 + t]), 1, 1.0, False, False)
    # Slots: 0,1,2 steps of episode 0; 3 its final observation; 4.. episode 1.
    observation, mask = buffer.sequences(np.array([1, 3, 5]))
    np.testing.assert_array_equal(mask, [[0, 0, 0, 1, 1], [0, 1, 1, 1, 1], [0, 0, 0, 1, 1]])
    np.testing.assert_array_equal(observation[..., 0], [[0, 0, 0, 1, 2], [0, 1, 2, 3, 0], [0, 0, 0, 10, 11]])


def test_uniform_parts_equal_the_uniform_buffer():
    rng = np.random.default_rng(3)
    sequence = SequenceReplayBuffer(40, SHAPE, np.uint8, update_horizon=3, gamma=0.8, context_length=8)
    uniform = ReplayBuffer(40, SHAPE, np.uint8, 1, 3, 0.8)
    for kwargs in random_stream(rng, 150, SHAPE, max_len=10):
        sequence.add(**kwargs)
        uniform.add(**kwargs)
    a = sequence.sample(np.random.default_rng(5), 64)
    b = uniform.sample(np.random.default_rng(5), 64)
    for name in ("index", "action", "reward", "discount", "weight"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.observation[:, -1], b.observation[..., 0])
    np.testing.assert_array_equal(a.next_observation[:, -1], b.next_observation[..., 0])
    assert a.observation.shape == (64, 8, *SHAPE) and a.mask.shape == (64, 8) and a.mask.dtype == bool
    assert np.all(a.mask[:, -1]) and np.all(a.next_mask[:, -1])


def test_factory_and_bad_arguments():
    buffer = create_replay("sequence", capacity=20, observation_shape=(3,), stack_size=1, context_length=7)
    assert isinstance(buffer, SequenceReplayBuffer) and buffer.context_length == 7
    with pytest.raises(ValueError, match="stack_size must be 1"):
        SequenceReplayBuffer(20, (3,), stack_size=4)
    with pytest.raises(ValueError, match="context_length"):
        SequenceReplayBuffer(20, (3,), context_length=0)


def test_save_load_round_trip_and_config_check(tmp_path):
    rng = np.random.default_rng(0)
    buffer = SequenceReplayBuffer(30, SHAPE, np.uint8, context_length=6)
    for kwargs in random_stream(rng, 70, SHAPE, max_len=9):
        buffer.add(**kwargs)
    buffer.save(str(tmp_path))
    restored = SequenceReplayBuffer(30, SHAPE, np.uint8, context_length=6)
    restored.load(str(tmp_path))
    a = buffer.sample(np.random.default_rng(1), 16)
    b = restored.sample(np.random.default_rng(1), 16)
    np.testing.assert_array_equal(a.observation, b.observation)
    np.testing.assert_array_equal(a.mask, b.mask)
    with pytest.raises(ReplayCheckpointError):
        SequenceReplayBuffer(30, SHAPE, np.uint8, context_length=5).load(str(tmp_path))
