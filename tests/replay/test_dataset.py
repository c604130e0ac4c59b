"""Datasets: writer/reader round trip, atomicity, and the fixed replay against the online replay.

The trusted reference for the fixed replay is the online `ReplayBuffer` (itself checked against
the naive reference in test_replay_circular.py) fed the same transitions with `add`: the fixed
replay must have the same valid starts and horizons and return identical batches, including for
the same sampling RNG.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from replay_reference import random_stream

from accumbens.replay import ReplayBuffer, create_replay
from accumbens.replay.dataset import (
    DatasetBatch,
    DatasetError,
    DatasetWriter,
    FixedReplayBuffer,
    epsilon_greedy_probability,
    load_dataset,
    read_manifest,
    slot_layout,
)

SHAPE = (2, 3)
NUM_ACTIONS = 6


def write_stream(directory, stream, chunk_size=7, rng=None):
    """Writes `stream` (ReplayBuffer.add kwargs) with random probabilities; returns them per step."""
    rng = rng or np.random.default_rng(0)
    probabilities = []
    with DatasetWriter(directory, SHAPE, np.uint8, NUM_ACTIONS, chunk_size=chunk_size, metadata={"env": "test"}) as writer:
        for kwargs in stream:
            p = float(rng.uniform(0.05, 1.0))
            probabilities.append(p)
            writer.add(**kwargs, behaviour_probability=p, epsilon=0.1)
    return probabilities


def test_round_trip_readable_with_numpy_alone(tmp_path):
    rng = np.random.default_rng(1)
    stream = list(random_stream(rng, 60, SHAPE, max_len=9))
    probabilities = write_stream(tmp_path, stream, chunk_size=7)
    # NumPy and json only, as the module docstring shows.
    with open(tmp_path / "manifest.json") as f:
        manifest = json.load(f)
    chunks = [np.load(tmp_path / c["file"], allow_pickle=False) for c in manifest["chunks"]]
    data = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0].files}
    # The expected slots, built by hand from the stream.
    obs, action, reward, term, trunc, final, prob = [], [], [], [], [], [], []
    for kwargs, p in zip(stream, probabilities):
        obs.append(kwargs["observation"]); action.append(kwargs["action"]); reward.append(kwargs["reward"])
        term.append(kwargs["terminated"]); trunc.append(kwargs["truncated"] and not kwargs["terminated"])
        final.append(False); prob.append(p)
        if kwargs["terminated"] or kwargs["truncated"]:
            obs.append(kwargs.get("final_observation", np.zeros(SHAPE, np.uint8)))
            action.append(0); reward.append(0.0); term.append(False); trunc.append(False); final.append(True)
            prob.append(0.0)
    np.testing.assert_array_equal(data["observation"], np.stack(obs))
    np.testing.assert_array_equal(data["action"], action)
    np.testing.assert_allclose(data["reward"], np.float32(reward))
    np.testing.assert_array_equal(data["terminated"], term)
    np.testing.assert_array_equal(data["truncated"], trunc)
    np.testing.assert_array_equal(data["is_final"], final)
    np.testing.assert_allclose(data["behaviour_probability"], np.float32(prob))
    assert data["action"].dtype == np.int32 and data["observation"].dtype == np.uint8
    assert manifest["num_slots"] == len(obs) and manifest["num_steps"] == 60
    assert manifest["num_episodes"] == sum(final)
    assert manifest["metadata"] == {"env": "test"}
    assert [c["num_slots"] for c in manifest["chunks"]] == [7] * (len(obs) // 7) + ([len(obs) % 7] if len(obs) % 7 else [])
    assert manifest["open_episode"] == (not final[-1])
    # The library reader agrees.
    loaded = load_dataset(str(tmp_path))
    for name in data:
        np.testing.assert_array_equal(loaded[name], data[name])
    assert not [n for n in os.listdir(tmp_path) if ".tmp" in n]


def test_epsilon_greedy_probability_hand_computed():
    # A = 4, eps = 0.2: greedy action 0.2/4 + 0.8 = 0.85, any other 0.05.
    p = epsilon_greedy_probability(np.array([1, 2]), np.array([1, 1]), 0.2, 4)
    np.testing.assert_allclose(p, [0.85, 0.05])


CONFIGS = [(1, 1, 0.99), (4, 1, 0.9), (1, 3, 0.5), (4, 3, 0.99), (2, 5, 1.0)]


@pytest.mark.parametrize("stack_size,update_horizon,gamma", CONFIGS)
def test_fixed_replay_matches_online_replay(tmp_path, stack_size, update_horizon, gamma):
    rng = np.random.default_rng(stack_size * 10 + update_horizon)
    stream = list(random_stream(rng, 150, SHAPE, max_len=12))
    probabilities = write_stream(tmp_path, stream, chunk_size=11, rng=rng)
    online = ReplayBuffer(1000, SHAPE, np.uint8, stack_size, update_horizon, gamma)
    for kwargs in stream:
        online.add(**kwargs)
    fixed = FixedReplayBuffer(str(tmp_path), SHAPE, np.uint8, stack_size, update_horizon, gamma)
    np.testing.assert_array_equal(fixed.valid_indices(), online.valid_indices())
    np.testing.assert_array_equal(fixed._horizon[: online.add_count], online._horizon[: online.add_count])
    np.testing.assert_array_equal(fixed._episode_step[: online.add_count], online._episode_step[: online.add_count])
    assert len(fixed) == len(online) == 150
    valid = online.valid_indices()
    want, got = online.get_transitions(valid), fixed.get_transitions(valid)
    for name in ("observation", "action", "reward", "next_observation", "discount", "weight", "index"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    # Behaviour probabilities travel with the step they belong to.
    step_of_slot = np.cumsum(~fixed._is_final[: online.add_count]) - 1
    np.testing.assert_allclose(got.behaviour_probability, np.float32(probabilities)[step_of_slot[valid]])
    # The same sampler: the same RNG draws the same batch.
    a = online.sample(np.random.default_rng(5), 64)
    b = fixed.sample(np.random.default_rng(5), 64)
    assert isinstance(b, DatasetBatch)
    for name in ("observation", "action", "reward", "next_observation", "discount", "index"):
        np.testing.assert_array_equal(getattr(b, name), getattr(a, name), err_msg=name)


def test_slot_layout_hand_case():
    # Episode 1: steps 0,1 then terminated -> final slot 2. Episode 2: steps 3,4 (open).
    is_final = np.array([0, 0, 1, 0, 0], bool)
    terminated = np.array([0, 1, 0, 0, 0], bool)
    episode_step, valid, horizon = slot_layout(is_final, terminated, np.zeros(5, bool), update_horizon=2)
    np.testing.assert_array_equal(episode_step, [0, 1, 2, 0, 1])
    # Slot 0: window 0,1 ends at the final slot 2 -> m = 2. Slot 1: m = 1. Slot 3: open episode,
    # needs slot 5 (not written) -> invalid. Slot 4 invalid as well.
    np.testing.assert_array_equal(valid, [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(horizon, [2, 1, 0, 0, 0])
    with pytest.raises(DatasetError, match="final-observation slot"):
        slot_layout(np.array([0, 1], bool), np.zeros(2, bool), np.zeros(2, bool), 1)


def test_max_steps_keeps_the_first_steps(tmp_path):
    rng = np.random.default_rng(3)
    stream = list(random_stream(rng, 80, SHAPE, max_len=6))
    write_stream(tmp_path, stream)
    fixed = FixedReplayBuffer(str(tmp_path), update_horizon=2, max_steps=30)
    online = ReplayBuffer(1000, SHAPE, np.uint8, 1, 2, 0.99)
    for kwargs in stream[:30]:
        online.add(**kwargs)
    assert len(fixed) == 30
    np.testing.assert_array_equal(fixed.valid_indices(), online.valid_indices())


def test_resume_truncate_and_unlisted_files_are_ignored(tmp_path):
    rng = np.random.default_rng(4)
    stream = list(random_stream(rng, 40, SHAPE, max_len=5))
    writer = DatasetWriter(tmp_path, SHAPE, np.uint8, NUM_ACTIONS, chunk_size=1000)
    for i, kwargs in enumerate(stream):
        writer.add(**kwargs)
        if kwargs["terminated"] or kwargs["truncated"]:
            writer.flush(tag=i)
    writer.close()
    manifest = read_manifest(str(tmp_path))
    assert manifest["open_episode"] == (not (stream[-1]["terminated"] or stream[-1]["truncated"]))
    # A crash mid-chunk leaves a temporary file that is not listed: readers ignore it.
    (tmp_path / "chunk-000999.npz.tmp.123").write_bytes(b"garbage")
    before = load_dataset(str(tmp_path))
    # Resume and keep the first two chunks (two whole episodes), then append the rest again.
    with pytest.raises(DatasetError, match="already holds"):
        DatasetWriter(tmp_path, SHAPE, np.uint8, NUM_ACTIONS)
    with pytest.raises(DatasetError, match="observation_shape"):
        DatasetWriter(tmp_path, (3, 3), np.uint8, NUM_ACTIONS, resume=True)
    resumed = DatasetWriter(tmp_path, SHAPE, np.uint8, NUM_ACTIONS, chunk_size=1000, resume=True)
    resumed.truncate(2)
    kept = read_manifest(str(tmp_path))
    assert len(kept["chunks"]) == 2 and not kept["open_episode"]
    assert kept["num_episodes"] == 2
    first_rest = kept["chunks"][-1]["tag"] + 1
    for kwargs in stream[first_rest:]:
        resumed.add(**kwargs)
    resumed.close()
    after = load_dataset(str(tmp_path))
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])


def test_corrupt_or_missing_data_raise_clear_errors(tmp_path):
    rng = np.random.default_rng(6)
    write_stream(tmp_path, list(random_stream(rng, 30, SHAPE, max_len=5)), chunk_size=10)
    with pytest.raises(DatasetError, match="No dataset"):
        load_dataset(str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="shape"):
        FixedReplayBuffer(str(tmp_path), observation_shape=(9,))
    chunk = tmp_path / "chunk-000001.npz"
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="chunk-000001.npz"):
        load_dataset(str(tmp_path))


def test_writer_rejects_bad_input(tmp_path):
    writer = DatasetWriter(tmp_path, SHAPE, np.uint8, NUM_ACTIONS)
    obs = np.zeros(SHAPE, np.uint8)
    with pytest.raises(ValueError, match="action"):
        writer.add(obs, NUM_ACTIONS, 0.0)
    with pytest.raises(ValueError, match="behaviour_probability"):
        writer.add(obs, 0, 0.0, behaviour_probability=0.0)
    with pytest.raises(ValueError, match="shape"):
        writer.add(np.zeros((3,)), 0, 0.0)
    with pytest.raises(ValueError, match="truncated"):
        writer.add(obs, 0, 0.0, truncated=True)


def test_fixed_replay_is_read_only_and_checkpoints_by_reference(tmp_path):
    rng = np.random.default_rng(7)
    write_stream(tmp_path / "data", list(random_stream(rng, 30, SHAPE, max_len=5)))
    fixed = create_replay("fixed", dataset_dir=str(tmp_path / "data"), observation_shape=SHAPE,
                          observation_dtype=np.uint8, stack_size=2, update_horizon=1, gamma=0.9)
    assert isinstance(fixed, FixedReplayBuffer)
    with pytest.raises(TypeError, match="read-only"):
        fixed.add(np.zeros(SHAPE), 0, 0.0)
    fixed.save(str(tmp_path / "ckpt"))
    assert os.listdir(tmp_path / "ckpt") == ["fixed_replay.json"]  # no copy of the data
    fixed.load(str(tmp_path / "ckpt"))
    other = FixedReplayBuffer(str(tmp_path / "data"), stack_size=1, update_horizon=1, gamma=0.9)
    with pytest.raises(DatasetError, match="was taken on"):
        other.load(str(tmp_path / "ckpt"))


def test_fixed_replay_checkpoint_refuses_a_dataset_rebuilt_at_the_same_path(tmp_path):
    """Same path, same size, different data (a rebuilt dataset): resuming on it is refused."""
    stream = list(random_stream(np.random.default_rng(3), 30, SHAPE, max_len=5))
    write_stream(tmp_path / "data", stream)
    settings = dict(stack_size=1, update_horizon=1, gamma=0.9)
    FixedReplayBuffer(str(tmp_path / "data"), **settings).save(str(tmp_path / "ckpt"))
    shutil.rmtree(tmp_path / "data")
    write_stream(tmp_path / "data", stream)  # identical content and size, but a new dataset
    rebuilt = FixedReplayBuffer(str(tmp_path / "data"), **settings)
    with pytest.raises(DatasetError, match="dataset_id"):
        rebuilt.load(str(tmp_path / "ckpt"))
    rebuilt.save(str(tmp_path / "ckpt2"))
    FixedReplayBuffer(str(tmp_path / "data"), **settings).load(str(tmp_path / "ckpt2"))  # same dataset: fine
