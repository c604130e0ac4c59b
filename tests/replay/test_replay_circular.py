"""ReplayBuffer against the naive reference over random episode streams, plus API and save/load."""
from __future__ import annotations

import os

import numpy as np
import pytest
from replay_reference import NaiveReplay, random_stream

from accumbens.replay import Batch, ReplayBuffer, ReplayCheckpointError

SHAPE = (2, 3)

CONFIGS = [
    # capacity, stack_size, update_horizon, gamma
    (10, 1, 1, 0.99),
    (10, 4, 1, 0.9),
    (13, 1, 3, 0.5),
    (17, 4, 3, 0.99),
    (12, 2, 5, 1.0),
    (64, 3, 4, 0.8),
    (9, 4, 4, 0.0),
]


def assert_matches_reference(buffer: ReplayBuffer, reference: NaiveReplay) -> None:
    expected = reference.transitions()
    valid = buffer.valid_indices()
    assert sorted(expected) == valid.tolist()
    assert buffer.num_valid == len(expected)
    if not expected:
        assert not buffer.can_sample(1)
        return
    batch = buffer.get_transitions(valid)
    for row, slot in enumerate(valid):
        want = expected[int(slot)]
        np.testing.assert_array_equal(batch.observation[row], want["observation"])
        np.testing.assert_array_equal(batch.next_observation[row], want["next_observation"])
        assert batch.action[row] == want["action"]
        np.testing.assert_allclose(batch.reward[row], want["reward"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(batch.discount[row], want["discount"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("capacity,stack_size,update_horizon,gamma", CONFIGS)
def test_matches_naive_reference_after_every_add(capacity, stack_size, update_horizon, gamma):
    rng = np.random.default_rng(capacity * 100 + stack_size * 10 + update_horizon)
    buffer = ReplayBuffer(capacity, SHAPE, np.uint8, stack_size, update_horizon, gamma)
    reference = NaiveReplay(capacity, SHAPE, stack_size, update_horizon, gamma)
    check_every = 1 if capacity < 32 else 7  # keeps the suite fast; small rings see every add
    # Short episodes, then long ones (up to 3x capacity); many wrap-arounds.
    streams = [
        random_stream(rng, 8 * capacity, SHAPE, max_len=max(3, capacity // 2)),
        random_stream(rng, 4 * capacity, SHAPE, max_len=3 * capacity),
    ]
    for stream in streams:
        for i, kwargs in enumerate(stream):
            buffer.add(**kwargs)
            reference.add(**kwargs)
            if i % check_every == 0:
                assert_matches_reference(buffer, reference)
        assert_matches_reference(buffer, reference)
    assert len(buffer) == sum(1 for e, p in reference.log[-capacity:] if p < reference.episodes[e].num_steps)


def test_sample_is_uniform_over_valid_indices_and_shapes():
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer(50, SHAPE, np.uint8, stack_size=4, update_horizon=3, gamma=0.9)
    for kwargs in random_stream(rng, 137, SHAPE, max_len=8):
        buffer.add(**kwargs)
    valid = buffer.valid_indices()
    batch = buffer.sample(np.random.default_rng(1), 32)
    assert isinstance(batch, Batch)
    assert batch.observation.shape == (32, *SHAPE, 4) and batch.observation.dtype == np.uint8
    assert batch.next_observation.shape == (32, *SHAPE, 4)
    assert batch.action.dtype == np.int32 and batch.action.shape == (32,)
    assert batch.reward.dtype == np.float32 and batch.discount.dtype == np.float32
    assert batch.weight.dtype == np.float32 and np.all(batch.weight == 1)
    assert batch.index.dtype == np.int64 and batch.mask is None
    # Uniform: chi-square over many draws (fixed seed; p-value threshold 1e-3).
    draws = np.concatenate([buffer.sample(rng, 256).index for _ in range(80)])
    assert np.isin(draws, valid).all()
    counts = np.array([(draws == v).sum() for v in valid])
    expected = draws.size / valid.size
    chi2 = ((counts - expected) ** 2 / expected).sum()
    from scipy.stats import chi2 as chi2_dist  # noqa: PLC0415  (scipy comes with jax)

    assert chi2_dist.sf(chi2, df=valid.size - 1) > 1e-3


def test_sample_is_deterministic_given_rng():
    rng = np.random.default_rng(3)
    buffer = ReplayBuffer(40, SHAPE, stack_size=2, update_horizon=2)
    for kwargs in random_stream(rng, 100, SHAPE):
        buffer.add(**kwargs)
    a = buffer.sample(np.random.default_rng(7), 16)
    b = buffer.sample(np.random.default_rng(7), 16)
    for x, y in zip(a.__dict__.values(), b.__dict__.values()):
        if x is not None:
            np.testing.assert_array_equal(x, y)


def test_sample_when_valid_starts_are_rare():
    buffer = ReplayBuffer(100, (1,), update_horizon=1)
    for i in range(3):
        buffer.add(np.array([i]), 0, 1.0, False, False)
    assert buffer.num_valid == 2 and len(buffer) == 3
    index = buffer.sample(np.random.default_rng(0), 64).index
    assert set(index.tolist()) <= {0, 1}


def test_empty_and_incomplete_windows_cannot_be_sampled():
    buffer = ReplayBuffer(20, SHAPE, update_horizon=3)
    assert not buffer.can_sample(32) and len(buffer) == 0
    with pytest.raises(ValueError, match="no valid transitions"):
        buffer.sample(np.random.default_rng(0), 4)
    obs = np.ones(SHAPE, np.uint8)
    for _ in range(3):
        buffer.add(obs, 0, 1.0, False, False)
    assert not buffer.can_sample()  # 3 steps, the first needs a 4th observation
    buffer.add(obs, 0, 1.0, False, False)
    assert buffer.valid_indices().tolist() == [0]
    buffer.add(obs, 0, 1.0, True, False)  # terminates: every step of the episode becomes valid
    assert buffer.valid_indices().tolist() == [0, 1, 2, 3, 4]


def test_final_observation_is_bootstrapped_after_truncation():
    buffer = ReplayBuffer(20, (1,), stack_size=2, update_horizon=3, gamma=0.5)
    buffer.add(np.array([1]), 0, 1.0, False, False)
    buffer.add(np.array([2]), 1, 2.0, False, True, final_observation=np.array([9]))
    batch = buffer._gather(np.array([0, 1]), np.ones(2, np.float32))
    np.testing.assert_allclose(batch.reward, [1.0 + 0.5 * 2.0, 2.0])
    np.testing.assert_allclose(batch.discount, [0.25, 0.5])
    np.testing.assert_array_equal(batch.next_observation[:, 0], [[2, 9], [2, 9]])
    np.testing.assert_array_equal(batch.observation[:, 0], [[0, 1], [1, 2]])
    assert buffer.valid_indices().tolist() == [0, 1]  # slot 2 holds the final observation


def test_add_rejects_bad_input():
    buffer = ReplayBuffer(20, (4, 4), np.uint8)
    with pytest.raises(ValueError, match="shape"):
        buffer.add(np.zeros((4, 5), np.uint8), 0, 0.0, False, False)
    with pytest.raises(ValueError, match="dtype"):
        buffer.add(np.zeros((4, 4), np.float32), 0, 0.0, False, False)
    with pytest.raises(ValueError, match="final_observation"):
        buffer.add(np.zeros((4, 4), np.uint8), 0, 0.0, False, True)
    with pytest.raises(ValueError, match="final_observation"):
        buffer.add(np.zeros((4, 4), np.uint8), 0, 0.0, False, False, np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="final_observation has shape"):
        buffer.add(np.zeros((4, 4), np.uint8), 0, 0.0, True, False, np.zeros((3, 4), np.uint8))
    assert buffer.add_count == 0
    buffer.add(np.zeros((4, 4), bool), 0, 0.0, False, False)  # bool -> uint8 is a safe cast
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(5, (1,), stack_size=4, update_horizon=1)


def test_update_priorities_is_a_noop():
    buffer = ReplayBuffer(20, (1,))
    buffer.update_priorities(np.array([0, 1]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="valid sample start"):
        buffer.get_transitions(np.array([0]))


def _fill(buffer, seed, steps):
    for kwargs in random_stream(np.random.default_rng(seed), steps, buffer.observation_shape):
        buffer.add(**kwargs)


@pytest.mark.parametrize("steps", [0, 7, 55])
def test_save_load_round_trip(tmp_path, steps):
    buffer = ReplayBuffer(30, SHAPE, stack_size=3, update_horizon=2, gamma=0.7)
    _fill(buffer, 0, steps)
    buffer.save(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["replay.json", "replay.npz"]
    restored = ReplayBuffer(30, SHAPE, stack_size=3, update_horizon=2, gamma=0.7)
    _fill(restored, 1, 11)  # loading replaces whatever was there
    restored.load(str(tmp_path))
    for name, array in buffer._slot_arrays().items():
        np.testing.assert_array_equal(restored._slot_arrays()[name], array, err_msg=name)
    assert (restored.add_count, len(restored), restored.num_valid) == (
        buffer.add_count, len(buffer), buffer.num_valid)
    # Both continue identically.
    _fill(buffer, 2, 40)
    _fill(restored, 2, 40)
    if buffer.can_sample():
        a, b = buffer.sample(np.random.default_rng(5), 8), restored.sample(np.random.default_rng(5), 8)
        np.testing.assert_array_equal(a.observation, b.observation)
        np.testing.assert_array_equal(a.reward, b.reward)
    for name, array in buffer._slot_arrays().items():
        np.testing.assert_array_equal(restored._slot_arrays()[name], array, err_msg=name)


def test_load_rejects_other_config_and_corrupt_files(tmp_path):
    buffer = ReplayBuffer(30, SHAPE, stack_size=3, update_horizon=2)
    _fill(buffer, 0, 50)
    buffer.save(str(tmp_path))
    with pytest.raises(ReplayCheckpointError, match="configured as"):
        ReplayBuffer(30, SHAPE, stack_size=4, update_horizon=2).load(str(tmp_path))
    with pytest.raises(ReplayCheckpointError, match="No replay checkpoint"):
        buffer.load(str(tmp_path / "missing"))
    path = tmp_path / "replay.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ReplayCheckpointError, match="corrupt"):
        buffer.load(str(tmp_path))
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF  # one flipped byte inside the observation array
    path.write_bytes(bytes(flipped))
    with pytest.raises(ReplayCheckpointError, match="corrupt"):
        buffer.load(str(tmp_path))
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(ReplayCheckpointError):
        buffer.load(str(tmp_path))
    assert buffer.num_valid > 0  # a failed load leaves the buffer as it was


def test_gin_configurable():
    import gin

    gin.clear_config()
    gin.parse_config("ReplayBuffer.capacity = 123\nReplayBuffer.stack_size = 2")
    try:
        buffer = ReplayBuffer(observation_shape=(3,))
        assert buffer.capacity == 123 and buffer.stack_size == 2
    finally:
        gin.clear_config()


def _flip_byte_in_member(path, member: str, offset: int) -> None:
    """Flips one byte `offset` bytes into the stored data of zip member `member`."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as z:
        header = z.getinfo(member).header_offset
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[header + 26 : header + 30])
    data[header + 30 + name_len + extra_len + offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_small_array_leaves_buffer_unchanged_corrupt_frames_empty_it(tmp_path):
    buffer = ReplayBuffer(30, SHAPE, stack_size=2, update_horizon=2)
    _fill(buffer, 0, 50)
    buffer.save(str(tmp_path))
    good = (tmp_path / "replay.npz").read_bytes()
    before = {name: a.copy() for name, a in buffer._slot_arrays().items()}

    _flip_byte_in_member(tmp_path / "replay.npz", "reward.npy", 130)
    with pytest.raises(ReplayCheckpointError, match="corrupt"):
        buffer.load(str(tmp_path))
    for name, array in buffer._slot_arrays().items():
        np.testing.assert_array_equal(array, before[name])

    (tmp_path / "replay.npz").write_bytes(good)
    _flip_byte_in_member(tmp_path / "replay.npz", "observation.npy", 150)
    with pytest.raises(ReplayCheckpointError, match="emptied"):
        buffer.load(str(tmp_path))
    assert len(buffer) == 0 and buffer.add_count == 0 and not buffer.can_sample()
    _fill(buffer, 1, 20)  # still usable
    assert buffer.can_sample()
    (tmp_path / "replay.npz").write_bytes(good)
    buffer.load(str(tmp_path))
    for name, array in buffer._slot_arrays().items():
        np.testing.assert_array_equal(array, before[name])


def test_atari_memory_is_one_frame_per_step():
    # np.zeros pages are not touched, so this allocates no real memory.
    buffer = ReplayBuffer(1_000_000, (84, 84), np.uint8, stack_size=4, update_horizon=3)
    frames = 1_000_000 * 84 * 84
    assert frames <= buffer.nbytes < frames * 1.003  # ~7.06 GB of frames + ~19 bytes per step


def test_create_replay_through_gin():
    import gin

    from accumbens.replay import PrioritizedReplayBuffer, create_replay

    gin.clear_config()
    gin.parse_config(
        "PrioritizedReplayBuffer.capacity = 77\n"
        "PrioritizedReplayBuffer.alpha = 0.6\n"
        "PrioritizedReplayBuffer.stratified = False\n"
    )
    try:
        buffer = create_replay("prioritized", observation_shape=(2,))
        assert isinstance(buffer, PrioritizedReplayBuffer)
        assert (buffer.capacity, buffer.alpha, buffer.stratified) == (77, 0.6, False)
    finally:
        gin.clear_config()


def test_float_observations_cartpole_like():
    buffer = ReplayBuffer(50, (4,), np.float32, stack_size=2, update_horizon=2, gamma=0.5)
    reference = NaiveReplay(50, (4,), 2, 2, 0.5, dtype=np.float32)
    rng = np.random.default_rng(0)
    for t in range(120):
        end = t % 9 == 8
        kwargs = dict(observation=rng.normal(size=4), action=t % 2, reward=1.0,
                      terminated=end and t % 2 == 0, truncated=end and t % 2 == 1,
                      final_observation=rng.normal(size=4) if end else None)
        buffer.add(**kwargs)  # float64 observations are cast to the float32 storage
        reference.add(**kwargs)
    assert_matches_reference(buffer, reference)
