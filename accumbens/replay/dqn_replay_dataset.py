"""Reading the DQN Replay Dataset (Agarwal, Schuurmans & Norouzi 2020) file layout.

The DQN Replay Dataset (gs://atari-replay-datasets/dqn/<Game>/<run>/replay_logs/) holds, for each
of 50 checkpoints N, the state of a Dopamine `OutOfGraphReplayBuffer` of 1M transitions saved by
`np.save` into gzip files (no pickle needed for these; we never unpickle):

  $store$_observation_ckpt.N.gz   [capacity, 84, 84] uint8   one frame per row
  $store$_action_ckpt.N.gz        [capacity] int32
  $store$_reward_ckpt.N.gz        [capacity] float32
  $store$_terminal_ckpt.N.gz      [capacity] uint8           1 where the episode ended after the row
  add_count_ckpt.N.gz             scalar int64                rows ever written (a circular buffer)
  invalid_range_ckpt.N.gz         [stack_size]                rows next to the write cursor

Row i holds o_t, a_t, r_{t+1} and whether the episode ended after a_t; the next observation is
row i+1's. Before each episode (and at the very start) Dopamine writes `stack_size - 1` padding
rows of zeros (`_add_zero_transition`; stack_size = 4 for this dataset), and its runner marks every
episode end terminal. When `add_count >= capacity` the buffer has wrapped: the oldest row is at
`add_count % capacity`.

`load_checkpoint` turns one checkpoint into accumbens' slot layout (`replay.dataset`): rows in
time order, padding dropped, the first (partially overwritten) episode of a wrapped buffer
dropped, and after each terminal step a zero final-observation slot (never bootstrapped from:
the step is terminal). `FixedReplayBuffer(dir, dataset_format='dqn_replay')` samples from it with
the online sampler; `convert` writes it as an accumbens dataset. Rewards are kept as stored
(unclipped); behaviour probabilities are unknown (NaN).
"""
from __future__ import annotations

import gzip
import os
import re
from typing import Optional, Sequence

import numpy as np

from accumbens.replay.dataset import DatasetError, DatasetWriter

STORE_PREFIX = "$store$_"
ELEMENTS = ("observation", "action", "reward", "terminal")
_BLOCK = 65_536  # rows gathered at a time
_SUFFIX = re.compile(r"^\$store\$_observation_ckpt\.(\d+)\.gz$")


def filename(directory: str, name: str, suffix: int) -> str:
    """Path of one array of checkpoint `suffix`: store elements get the `$store$_` prefix."""
    prefix = STORE_PREFIX if name in ELEMENTS else ""
    return os.path.join(directory, f"{prefix}{name}_ckpt.{suffix}.gz")


def list_checkpoints(directory: str) -> list[int]:
    """Checkpoint suffixes in `directory` that have all four store files and add_count, sorted."""
    if not os.path.isdir(directory):
        raise DatasetError(f"No DQN Replay Dataset directory at {directory!r}.")
    suffixes = []
    for name in os.listdir(directory):
        match = _SUFFIX.match(name)
        if match:
            suffix = int(match.group(1))
            if all(os.path.exists(filename(directory, n, suffix)) for n in (*ELEMENTS, "add_count")):
                suffixes.append(suffix)
    return sorted(suffixes)


def read_array(path: str) -> np.ndarray:
    """One gzipped `.npy` array (allow_pickle=False); DatasetError if missing or unreadable."""
    try:
        with gzip.open(path, "rb") as f:
            return np.load(f, allow_pickle=False)
    except FileNotFoundError as e:
        raise DatasetError(f"DQN Replay Dataset file {path} is missing.") from e
    except (OSError, ValueError, EOFError) as e:
        raise DatasetError(f"DQN Replay Dataset file {path} is corrupt or not a gzipped .npy ({e}).") from e


def load_checkpoint(directory: str, suffix: int, stack_size: int = 4) -> dict[str, np.ndarray]:
    """One checkpoint's buffer in accumbens' slot layout (see the module docstring).

    Args:
      directory: the `replay_logs` folder.
      suffix: checkpoint number N.
      stack_size: the padding Dopamine wrote before episodes is `stack_size - 1` rows (4 for the
        DQN Replay Dataset). Padding rows must be zero; otherwise a DatasetError says so.

    Returns slot arrays: observation, action, reward, terminated, truncated, is_final,
    behaviour_probability (NaN), epsilon (NaN).
    """
    store = {name: read_array(filename(directory, name, suffix)) for name in ELEMENTS}
    add_count = int(read_array(filename(directory, "add_count", suffix)))
    capacity = store["observation"].shape[0]
    for name in ELEMENTS[1:]:
        if store[name].shape != (capacity,):
            raise DatasetError(f"{filename(directory, name, suffix)}: shape {store[name].shape}, expected ({capacity},).")
    if add_count >= capacity:  # wrapped: oldest row at the cursor
        order = (add_count % capacity + np.arange(capacity)) % capacity
    else:
        order = np.arange(add_count)
    stored_observation = store["observation"]  # gathered once, in blocks, into the output
    action = store["action"][order].astype(np.int32)
    reward = store["reward"][order].astype(np.float32)
    terminal = store["terminal"][order].astype(bool)
    n = order.shape[0]
    pad = stack_size - 1

    keep = np.ones(n, bool)
    ends = np.flatnonzero(terminal)
    padding = [np.arange(t + 1, min(t + 1 + pad, n)) for t in ends]  # before each later episode
    if add_count >= capacity:
        if ends.size:  # the oldest episode lost its beginning: drop it up to its terminal step
            keep[: ends[0] + 1] = False
        # (no terminal at all: one long open episode whose first frames lack their stack)
    else:
        padding.append(np.arange(min(pad, n)))  # before the first episode
    padding = np.concatenate(padding) if padding else np.zeros(0, np.int64)
    if padding.size and (stored_observation[order[padding]].any() or terminal[padding].any() or action[padding].any()):
        raise DatasetError(
            f"checkpoint {suffix} in {directory}: the {pad} rows before an episode are not zero padding; "
            f"is stack_size={stack_size} what the dataset was written with (4 for the DQN Replay Dataset)?"
        )
    keep[padding] = False
    # Too small a stack_size leaves padding rows in: every episode would then start with a zero row.
    firsts = np.concatenate([ends + pad + 1, [] if add_count >= capacity else [pad]]).astype(np.int64)
    firsts = firsts[(firsts < n) & keep[np.minimum(firsts, n - 1)]] if n else firsts
    if firsts.size and not (stored_observation[order[firsts]].any() or action[firsts].any() or reward[firsts].any()):
        raise DatasetError(
            f"checkpoint {suffix} in {directory}: every episode starts with a zero row, so there is more "
            f"padding than stack_size={stack_size} implies; pass the stack_size the dataset was written with."
        )

    kept = np.flatnonzero(keep)
    kept_terminal = terminal[kept]
    # Output position of each kept row: shifted by one per terminal step before it (its final slot).
    position = np.arange(kept.size) + np.concatenate([[0], np.cumsum(kept_terminal)[:-1]]).astype(np.int64)
    n_out = kept.size + int(kept_terminal.sum())
    slots = {
        "observation": np.zeros((n_out, *stored_observation.shape[1:]), stored_observation.dtype),
        "action": np.zeros(n_out, np.int32),
        "reward": np.zeros(n_out, np.float32),
        "terminated": np.zeros(n_out, bool),
        "truncated": np.zeros(n_out, bool),
        "is_final": np.zeros(n_out, bool),
        "behaviour_probability": np.full(n_out, np.nan, np.float32),
        "epsilon": np.full(n_out, np.nan, np.float32),
    }
    rows = order[kept]
    for start in range(0, kept.size, _BLOCK):  # bounded temporaries (1M Atari frames are 7 GB)
        slots["observation"][position[start:start + _BLOCK]] = stored_observation[rows[start:start + _BLOCK]]
    slots["action"][position] = action[kept]
    slots["reward"][position] = reward[kept]
    slots["terminated"][position] = kept_terminal
    slots["is_final"][position[kept_terminal] + 1] = True
    slots["behaviour_probability"][slots["is_final"]] = 0.0
    slots["epsilon"][slots["is_final"]] = 0.0
    return slots


def _close(slots: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The slots up to the last final slot (drops a trailing open episode)."""
    finals = np.flatnonzero(slots["is_final"])
    cut = int(finals[-1]) + 1 if finals.size else 0
    return {name: array[:cut] for name, array in slots.items()}


def load_slots(directory: str, checkpoints: Optional[Sequence[int]] = None, stack_size: int = 4) -> dict[str, np.ndarray]:
    """The checkpoints' slots concatenated (default: all found). Each checkpoint but the last loses
    its trailing open episode, so that episodes of different buffers never join."""
    suffixes = list_checkpoints(directory) if checkpoints is None else [int(c) for c in checkpoints]
    if not suffixes:
        raise DatasetError(f"No DQN Replay Dataset checkpoints ({STORE_PREFIX}observation_ckpt.N.gz) in {directory!r}.")
    parts = [load_checkpoint(directory, s, stack_size) for s in suffixes]
    parts = [_close(p) for p in parts[:-1]] + parts[-1:]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def convert(directory: str, output_dir: str, num_actions: int, checkpoints: Optional[Sequence[int]] = None,
            stack_size: int = 4, chunk_size: int = 100_000) -> None:
    """Writes checkpoints of a DQN Replay Dataset run as an accumbens dataset in `output_dir`
    (one checkpoint in memory at a time)."""
    suffixes = list_checkpoints(directory) if checkpoints is None else [int(c) for c in checkpoints]
    writer = None
    for i, suffix in enumerate(suffixes):
        slots = load_checkpoint(directory, suffix, stack_size)
        if i < len(suffixes) - 1:
            slots = _close(slots)
        if writer is None:
            writer = DatasetWriter(output_dir, slots["observation"].shape[1:], slots["observation"].dtype, num_actions,
                                   chunk_size=chunk_size,
                                   metadata={"source": "DQN Replay Dataset", "replay_logs": os.path.abspath(directory),
                                             "checkpoints": suffixes})
        step_slots = np.flatnonzero(~slots["is_final"])
        for t in step_slots:
            ended = bool(slots["terminated"][t])
            writer.add(slots["observation"][t], int(slots["action"][t]), float(slots["reward"][t]), ended,
                       final_observation=slots["observation"][t + 1] if ended else None)
        writer.flush(tag=suffix)
    if writer is not None:
        writer.close()


__all__ = ["ELEMENTS", "STORE_PREFIX", "convert", "filename", "list_checkpoints", "load_checkpoint", "load_slots", "read_array"]
