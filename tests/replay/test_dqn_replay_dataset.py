"""The DQN Replay Dataset reader on small file sets written in that layout by this test.

The writer below imitates Dopamine's `OutOfGraphReplayBuffer` as documented (stack_size - 1 zero
padding rows before each episode, a circular store of `capacity` rows, `np.save` into gzip files
named `$store$_<element>_ckpt.<N>.gz` and `add_count_ckpt.<N>.gz`). The reference is the online
`ReplayBuffer` fed the episodes that the buffer still holds whole: the reader must give the same
valid transitions, stacks and n-step returns.
"""
from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from accumbens.replay import ReplayBuffer
from accumbens.replay import dqn_replay_dataset as dqn_replay
from accumbens.replay.dataset import DatasetError, FixedReplayBuffer, load_dataset

SHAPE = (3, 2)


class DopamineStyleBuffer:
    """Rows of (observation, action, reward, terminal) in a ring, with Dopamine's episode padding."""

    def __init__(self, capacity: int, stack_size: int = 4):
        self.capacity, self.stack_size = capacity, stack_size
        self.store = {
            "observation": np.zeros((capacity, *SHAPE), np.uint8),
            "action": np.zeros(capacity, np.int32),
            "reward": np.zeros(capacity, np.float32),
            "terminal": np.zeros(capacity, np.uint8),
        }
        self.add_count = 0

    def _write(self, observation, action, reward, terminal):
        cursor = self.add_count % self.capacity
        for name, value in zip(self.store, (observation, action, reward, terminal)):
            self.store[name][cursor] = value
        self.add_count += 1

    def add(self, observation, action, reward, terminal) -> int:
        """Returns the logical time (row number) of the step."""
        if self.add_count == 0 or self.store["terminal"][(self.add_count - 1) % self.capacity] == 1:
            for _ in range(self.stack_size - 1):
                self._write(np.zeros(SHAPE, np.uint8), 0, 0.0, 0)
        self._write(observation, action, reward, terminal)
        return self.add_count - 1

    def save(self, directory, suffix):
        os.makedirs(directory, exist_ok=True)
        arrays = {f"$store$_{k}": v for k, v in self.store.items()}
        arrays["add_count"] = np.array(self.add_count)
        arrays["invalid_range"] = np.zeros(self.stack_size)
        for name, array in arrays.items():
            with gzip.open(os.path.join(directory, f"{name}_ckpt.{suffix}.gz"), "wb") as f:
                np.save(f, array, allow_pickle=False)


def random_episodes(rng, num_steps, max_len=15):
    """Episodes as lists of (observation, action, reward, terminal); the last may be unfinished."""
    episodes, counter = [], 0
    while num_steps > 0:
        length = int(rng.integers(1, max_len + 1))
        episode = []
        for i in range(min(length, num_steps)):
            counter += 1
            obs = ((np.arange(6) + counter * 5) % 250 + 1).astype(np.uint8).reshape(SHAPE)
            episode.append((obs, int(rng.integers(0, 4)), float(rng.normal()), int(i == length - 1)))
        num_steps -= len(episode)
        episodes.append(episode)
    return episodes


def write_run(directory, suffix, episodes, capacity):
    """Writes the episodes into a Dopamine-style buffer; returns the episodes it still holds whole."""
    buffer = DopamineStyleBuffer(capacity)
    times = [[buffer.add(*step) for step in episode] for episode in episodes]
    buffer.save(directory, suffix)
    if buffer.add_count <= capacity:
        return episodes
    oldest = buffer.add_count - capacity
    # Dropped: every episode up to the one whose terminal row is the first inside the window.
    first = next(i for i, t in enumerate(times) if t[-1] >= oldest and episodes[i][-1][3])
    return episodes[first + 1:]


def reference(episodes, stack_size, update_horizon, gamma):
    buffer = ReplayBuffer(10_000, SHAPE, np.uint8, stack_size, update_horizon, gamma)
    for episode in episodes:
        for obs, action, reward, terminal in episode:
            buffer.add(obs, action, reward, bool(terminal), False)
    return buffer


def assert_same(fixed, online):
    np.testing.assert_array_equal(fixed.valid_indices(), online.valid_indices())
    valid = online.valid_indices()
    want, got = online.get_transitions(valid), fixed.get_transitions(valid)
    for name in ("observation", "action", "reward", "next_observation", "discount"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


@pytest.mark.parametrize("capacity", [10_000, 97])  # not wrapped; wrapped several times
@pytest.mark.parametrize("stack_size,update_horizon", [(4, 1), (4, 3), (1, 2)])
def test_reader_matches_online_replay(tmp_path, capacity, stack_size, update_horizon):
    rng = np.random.default_rng(capacity + stack_size)
    episodes = random_episodes(rng, 300)
    held = write_run(tmp_path, 7, episodes, capacity)
    assert dqn_replay.list_checkpoints(str(tmp_path)) == [7]
    fixed = FixedReplayBuffer(str(tmp_path), stack_size=stack_size, update_horizon=update_horizon, gamma=0.9,
                              dataset_format="dqn_replay")
    online = reference(held, stack_size, update_horizon, 0.9)
    assert len(fixed) == len(online) == sum(len(e) for e in held)
    assert_same(fixed, online)
    assert np.isnan(fixed.get_transitions(fixed.valid_indices()).behaviour_probability).all()


def test_several_checkpoints_and_conversion(tmp_path):
    rng = np.random.default_rng(11)
    first, second = random_episodes(rng, 120), random_episodes(rng, 90)
    held = write_run(tmp_path / "logs", 0, first, 10_000) + write_run(tmp_path / "logs", 1, second, 10_000)
    # Checkpoint 0's unfinished last episode is dropped (it would otherwise join checkpoint 1's first).
    closed = [e for e in first if e[-1][3]] + second
    assert len(held) >= len(closed)
    online = reference(closed, 4, 2, 0.99)
    fixed = FixedReplayBuffer(str(tmp_path / "logs"), stack_size=4, update_horizon=2, dataset_format="dqn_replay")
    assert_same(fixed, online)
    dqn_replay.convert(str(tmp_path / "logs"), str(tmp_path / "converted"), num_actions=4)
    converted = FixedReplayBuffer(str(tmp_path / "converted"), stack_size=4, update_horizon=2)
    assert_same(converted, online)
    assert load_dataset(str(tmp_path / "converted"))["observation"].dtype == np.uint8
    only_second = FixedReplayBuffer(str(tmp_path / "logs"), dataset_format="dqn_replay", checkpoints=[1])
    assert len(only_second) == 90


def test_errors(tmp_path):
    with pytest.raises(DatasetError, match="No DQN Replay Dataset"):
        dqn_replay.load_slots(str(tmp_path))
    rng = np.random.default_rng(3)
    write_run(tmp_path, 0, random_episodes(rng, 60), 10_000)
    with pytest.raises(DatasetError, match="not zero padding"):
        dqn_replay.load_checkpoint(str(tmp_path), 0, stack_size=6)
    with pytest.raises(DatasetError, match="more padding"):
        dqn_replay.load_checkpoint(str(tmp_path), 0, stack_size=2)
    path = dqn_replay.filename(str(tmp_path), "reward", 0)
    with open(path, "wb") as f:
        f.write(b"not gzip")
    with pytest.raises(DatasetError, match="corrupt"):
        dqn_replay.load_checkpoint(str(tmp_path), 0)
    os.remove(path)
    assert dqn_replay.list_checkpoints(str(tmp_path)) == []
