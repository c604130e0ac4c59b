"""The host replay buffer: circular NumPy storage, frame stacks and n-step returns at sample time.

Storage
-------
The buffer is a ring of `capacity` slots. Every call to `add` writes one slot for step t
(observation o_t, action a_t, reward r_{t+1}, and whether the episode terminated or was truncated
after this step). When an episode ends, `add` writes one more slot: the episode's *final
observation* (what gymnasium returned with terminated/truncated). A final slot is never the start
of a sampled transition; it is only read as the next observation (and its stack) of the episode's
last steps; the next episode's stacks are zero-padded and never reach it. Each observation is
stored once: 1M Atari steps of 84x84 uint8 frames take about 7 GB.

Episodes are delimited only by `terminated` / `truncated`: a caller that abandons an episode
(say, at the end of a phase) must still end it with `truncated=True` and its last observation as
`final_observation`, or the next `add` continues the same episode.

Per slot the buffer also records `episode_step` (the step's position in its episode; the final
slot holds the episode length), which makes zero-padding a comparison: frame t-j of a stack at t
is real iff j <= episode_step[t], else zeros (stacks never cross an episode start, as in Dopamine).

Valid indices
-------------
A slot is a valid sample start iff it is a step (not a final slot) and
  * its n-step window is complete: m = min(n, steps to the episode's end) later slots are written,
    the slot at t+m being the next observation (the final slot when the episode ended there);
    a running episode's last n-1 steps are therefore not valid yet;
  * none of the slots it reads (its stack t-min(k-1, episode_step)..t and its window up to t+m)
    has been overwritten by the write cursor.
Validity is maintained incrementally (O(n + k) work per `add`, no scan), together with each valid
slot's horizon m. Subclasses (prioritized replay) hook `_mark_valid` / `_mark_invalid` to keep
their sum tree in step: an invalid slot always has priority 0.

Sampling
--------
`sample(rng, batch_size)` draws valid starts uniformly (with replacement; rejection sampling with
NumPy, or an explicit list of valid slots when they are rare, under a quarter of the written
slots, or rejection keeps failing) and assembles the batch
with fancy indexing, no Python loop over the batch:
  reward   = sum_{k<m} gamma^k r_{t+k+1}
  discount = gamma^m, or 0 when the episode terminated (not truncated) at step t+m-1
  next_observation = stack at slot t+m.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import gin
import numpy as np

from accumbens.replay import checkpointing
from accumbens.replay.batch import Batch

# How many rejection-sampling rounds to try before listing the valid slots explicitly.
_REJECTION_ROUNDS = 4


@gin.configurable
class ReplayBuffer:
    """Uniform circular replay storing each observation once (see the module docstring).

    Args:
      capacity: number of slots (steps plus one final-observation slot per episode).
      observation_shape: shape of one observation, e.g. (84, 84) for Atari, (10, 10, 4) MinAtar.
      observation_dtype: storage dtype; `add` accepts observations of a 'same_kind' cast to it
        (float64 -> float32) and bool or integer observations into integer storage (bool or int64
        -> uint8, values are not range-checked); others (float -> uint8) raise a ValueError.
      stack_size: k, the number of most recent observations stacked on a new last axis.
      update_horizon: n, the number of steps of the n-step return.
      gamma: discount factor.
    """

    def __init__(
        self,
        capacity: int,
        observation_shape: Sequence[int],
        observation_dtype: Any = np.uint8,
        stack_size: int = 1,
        update_horizon: int = 1,
        gamma: float = 0.99,
    ):
        capacity, stack_size, update_horizon = int(capacity), int(stack_size), int(update_horizon)
        if stack_size < 1:
            raise ValueError(f"stack_size must be >= 1, got {stack_size}.")
        if update_horizon < 1:
            raise ValueError(f"update_horizon must be >= 1, got {update_horizon}.")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}.")
        if capacity < stack_size + update_horizon + 1:
            raise ValueError(
                f"capacity ({capacity}) must be at least stack_size + update_horizon + 1 "
                f"({stack_size + update_horizon + 1}) so that one transition fits."
            )
        self._capacity = capacity
        self._observation_shape = tuple(int(d) for d in observation_shape)
        self._observation_dtype = np.dtype(observation_dtype)
        self._stack_size = stack_size
        self._update_horizon = update_horizon
        self._gamma = float(gamma)
        # gamma^0 .. gamma^n, used for n-step returns and discounts.
        self._gamma_powers = (self._gamma ** np.arange(update_horizon + 1)).astype(np.float32)
        # Offsets of a stack's frames relative to its newest slot: -(k-1) .. 0.
        self._stack_offsets = np.arange(-(stack_size - 1), 1, dtype=np.int64)
        self._neg_stack_offsets = -self._stack_offsets
        powers = self._gamma_powers[:-1]
        self._masked_powers = np.stack(  # [n + 1, n]: row m keeps gamma^0 .. gamma^(m-1)
            [np.where(np.arange(update_horizon) < m, powers, 0).astype(np.float32)
             for m in range(update_horizon + 1)])
        self._window_offsets = np.arange(update_horizon, dtype=np.int64)

        c = capacity
        # One extra row (index `capacity`) stays zero: the padding frame before episode starts.
        self._observation = np.zeros((c + 1, *self._observation_shape), self._observation_dtype)
        self._action = np.zeros(c, np.int32)
        self._reward = np.zeros(c, np.float32)
        self._terminated = np.zeros(c, bool)
        self._truncated = np.zeros(c, bool)
        self._is_final = np.zeros(c, bool)  # slot holds an episode's final observation
        self._episode_step = np.zeros(c, np.int32)  # position in the episode (final: its length)
        self._valid = np.zeros(c, bool)  # slot is a valid sample start
        self._horizon = np.zeros(c, np.int32)  # m for valid starts, else 0

        self._add_count = 0  # slots written since creation (logical time of the next write)
        self._next_episode_step = 0  # episode_step of the next `add`
        self._num_valid = 0
        self._num_steps = 0  # live slots that are steps (not final observations)

    # ----------------------------------------------------------------------------- properties
    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def observation_shape(self) -> tuple:
        return self._observation_shape

    @property
    def observation_dtype(self) -> np.dtype:
        return self._observation_dtype

    @property
    def stack_size(self) -> int:
        return self._stack_size

    @property
    def update_horizon(self) -> int:
        return self._update_horizon

    @property
    def gamma(self) -> float:
        return self._gamma

    @property
    def add_count(self) -> int:
        """Slots written since creation (steps plus final-observation slots)."""
        return self._add_count

    @property
    def num_valid(self) -> int:
        """How many slots are valid sample starts right now."""
        return self._num_valid

    @property
    def nbytes(self) -> int:
        """Bytes held by the per-slot arrays (1M Atari 84x84 steps: about 7.1e9)."""
        return sum(a.nbytes for a in self._slot_arrays().values())

    def __len__(self) -> int:
        """Number of steps (transitions, not counting final-observation slots) held now."""
        return self._num_steps

    def can_sample(self, batch_size: int = 1) -> bool:
        """Whether `sample(rng, batch_size)` can succeed: at least one valid start exists.

        Sampling is with replacement, so one valid start suffices for any batch size; runners
        gate learning on `len(buffer) >= min_replay_history` as Dopamine does.
        """
        return batch_size >= 1 and self._num_valid > 0

    def is_valid(self, index: np.ndarray) -> np.ndarray:
        """Bool array: which of the slot indices `index` are valid sample starts now."""
        return self._valid[np.asarray(index) % self._capacity]

    def valid_indices(self) -> np.ndarray:
        """All valid sample starts, as sorted slot indices (O(capacity); for tests and tools)."""
        return np.flatnonzero(self._valid)

    # ---------------------------------------------------------------------------------- add
    def add(
        self,
        observation: np.ndarray,
        action: int,
        reward: float,
        terminated: bool,
        truncated: bool,
        final_observation: Optional[np.ndarray] = None,
    ) -> None:
        """Stores step t: o_t, a_t, r_{t+1}, and whether the episode ended after this step.

        Args:
          observation: o_t, shape `observation_shape`.
          action: a_t (an integer).
          reward: r_{t+1}, the reward received after taking a_t.
          terminated: the episode reached a terminal state after this step (no bootstrap).
          truncated: the episode was cut off after this step (time limit; bootstraps). If both are
            True the step counts as terminated.
          final_observation: o_{t+1} as gymnasium returned it at the end of the episode. Required
            when truncated (it is bootstrapped from); optional when terminated (zeros if omitted);
            must be None while the episode continues.
        """
        terminated, truncated = bool(terminated), bool(truncated)
        ended = terminated or truncated
        observation = self._check_observation(observation, "observation")
        if ended:
            if final_observation is None:
                if not terminated:
                    raise ValueError(
                        "add(..., truncated=True) needs final_observation: a truncated episode "
                        "bootstraps from the observation gymnasium returned at its last step."
                    )
                final_observation = np.zeros(self._observation_shape, self._observation_dtype)
            else:
                final_observation = self._check_observation(final_observation, "final_observation")
        elif final_observation is not None:
            raise ValueError(
                "final_observation was given but the episode neither terminated nor was truncated; "
                "pass it only with terminated=True or truncated=True."
            )
        self._write(observation, int(action), float(reward), terminated, truncated and not terminated, False)
        if ended:
            self._write(final_observation, 0, 0.0, False, False, True)
            self._next_episode_step = 0

    def _check_observation(self, observation: Any, name: str) -> np.ndarray:
        observation = np.asarray(observation)
        if observation.shape != self._observation_shape:
            raise ValueError(
                f"{name} has shape {observation.shape}, but this replay stores observations of "
                f"shape {self._observation_shape} (set ReplayBuffer.observation_shape)."
            )
        if observation.dtype != self._observation_dtype and not self._castable(observation.dtype):
            raise ValueError(
                f"{name} has dtype {observation.dtype}, which does not cast safely to the storage "
                f"dtype {self._observation_dtype} (set ReplayBuffer.observation_dtype)."
            )
        return observation

    def _castable(self, dtype: np.dtype) -> bool:
        """Same-kind casts, plus any integer or bool observation into integer storage."""
        if np.can_cast(dtype, self._observation_dtype, casting="same_kind"):
            return True
        return dtype.kind in "biu" and self._observation_dtype.kind in "iu"

    def _write(self, observation, action, reward, terminated, truncated, is_final) -> None:
        """Writes one slot at the cursor and updates which slots are valid sample starts."""
        c, k, n = self._capacity, self._stack_size, self._update_horizon
        t = self._add_count
        slot = t % c
        if t >= c:
            # The slot's old content (logical time t - c) dies. Starts whose stack reaches back to it
            # become invalid: start L = t - c + j reads back min(k-1, episode_step[L]) frames.
            if not self._is_final[slot]:
                self._num_steps -= 1
            for j in range(k):
                old = (t - c + j) % c
                if self._valid[old] and min(k - 1, int(self._episode_step[old])) >= j:
                    self._mark_invalid(old)  # (j = 0 is the overwritten slot itself)

        episode_step = self._next_episode_step
        self._observation[slot] = observation
        self._action[slot] = action
        self._reward[slot] = reward
        self._terminated[slot] = terminated
        self._truncated[slot] = truncated
        self._is_final[slot] = is_final
        self._episode_step[slot] = episode_step
        self._add_count = t + 1
        if not is_final:
            self._num_steps += 1
            self._next_episode_step = episode_step + 1

        # Starts whose n-step window this write completes. A step completes start t - n (m = n);
        # a final slot completes the episode's last min(n, length) steps (m = 1 .. n).
        if is_final:
            horizons = range(1, min(n, episode_step) + 1)
        else:
            horizons = (n,) if episode_step >= n else ()
        oldest_live = t + 1 - c
        for m in horizons:
            start = t - m
            back = min(k - 1, episode_step - m)  # episode_step of the start is episode_step - m
            if start - back >= oldest_live:
                self._mark_valid(start % c, m)
        self._end_write()

    def _end_write(self) -> None:
        """Hook: called at the end of every slot write, after the `_mark_*` calls it made."""

    def _mark_valid(self, slot: int, horizon: int) -> None:
        """Hook: `slot` becomes a valid start with n-step horizon m = `horizon`."""
        self._valid[slot] = True
        self._horizon[slot] = horizon
        self._num_valid += 1

    def _mark_invalid(self, slot: int) -> None:
        """Hook: `slot` (currently valid) stops being a valid start."""
        self._valid[slot] = False
        self._horizon[slot] = 0
        self._num_valid -= 1

    # ------------------------------------------------------------------------------- sample
    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """Samples `batch_size` transitions uniformly (with replacement) from the valid starts.

        Returns a `Batch` of NumPy arrays: observation/next_observation
        [B, *observation_shape, stack_size] (storage dtype), action [B] int32, reward/discount/weight
        [B] float32, index [B] int64 (slot indices).
        """
        index = self._sample_uniform_index(rng, batch_size)
        return self._gather(index, np.ones(batch_size, np.float32))

    def sample_slots(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """`sample` without copying frames, for a caller that keeps its own copy of the storage
        (the several-seeds runner mirrors it on the accelerator and stacks there).

        The same draws as `sample` with the same generator (so the same transitions, rewards,
        discounts, weights and indices), but observation and next_observation are int64 [B, k]
        storage rows, oldest frame first, row `capacity` meaning the all-zero padding frame:
        `sample(...).observation[b, ..., j]` equals the stored frame at row `observation[b, j]`.
        Works for subclasses that sample through `_gather` (prioritized replay).
        """
        self._slots_only = True
        try:
            return self.sample(rng, batch_size)
        finally:
            self._slots_only = False

    def get_transitions(self, index: np.ndarray) -> Batch:
        """The batch for given slot indices (e.g. `valid_indices()`), weight 1; for evaluation,
        offline tools and tests. Raises ValueError if any index is not a valid start."""
        index = np.asarray(index, np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= self._capacity or not self._valid[index].all()):
            raise ValueError("get_transitions: every index must be a valid sample start (see valid_indices()).")
        return self._gather(index, np.ones(index.size, np.float32))

    def _sample_uniform_index(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if self._num_valid == 0:
            raise ValueError(
                f"Cannot sample from replay: no valid transitions yet ({len(self)} steps stored; a "
                f"transition needs its {self._update_horizon}-step window complete). Check "
                "can_sample() or wait for min_replay_history."
            )
        filled = min(self._add_count, self._capacity)
        accept_rate = self._num_valid / filled
        chosen: list[np.ndarray] = []
        needed = batch_size
        for _ in range(_REJECTION_ROUNDS if accept_rate > 0.25 else 0):
            draws = int(needed / accept_rate * 1.2) + 8
            candidates = rng.integers(0, filled, size=draws)
            accepted = candidates[self._valid[candidates]][:needed]
            chosen.append(accepted)
            needed -= accepted.size
            if needed == 0:
                break
        if needed > 0:  # valid starts are rare: draw from the explicit list (still uniform)
            valid = np.flatnonzero(self._valid)
            chosen.append(valid[rng.integers(0, valid.size, size=needed)])
        index = chosen[0] if len(chosen) == 1 else np.concatenate(chosen)
        return index.astype(np.int64, copy=False)

    def _gather(self, index: np.ndarray, weight: np.ndarray) -> Batch:
        """Assembles the batch for valid slot indices `index` [B] (vectorised)."""
        c = self._capacity
        horizon = self._horizon[index]
        if self._update_horizon == 1:  # the common case, without the [B, n] window
            reward = self._reward[index]
            last_step = index
        else:
            window = (index[:, None] + self._window_offsets) % c  # [B, n]
            # _masked_powers[m] = [gamma^0 .. gamma^(m-1), 0 ..]: the window's first m rewards.
            reward = np.einsum("bj,bj->b", self._reward[window], self._masked_powers[horizon])
            last_step = (index + horizon - 1) % c
        discount = self._gamma_powers[horizon] * ~self._terminated[last_step]
        return Batch(
            observation=self._stack(index),
            action=self._action[index],
            reward=reward,
            next_observation=self._stack((index + horizon) % c),
            discount=discount,
            weight=weight,
            index=index,
        )

    _slots_only = False  # set by `sample_slots`: `_stack` returns storage rows, not frames

    def _stack_rows(self, index: np.ndarray) -> np.ndarray:
        """Storage rows [B, k] of the stacks at `index`, oldest first; `capacity` (the zero row)
        for frames before the episode start."""
        if self._stack_size == 1:
            return index[:, None].astype(np.int64, copy=False)
        slots = (index[:, None] + self._stack_offsets) % self._capacity  # [B, k]
        before_start = self._neg_stack_offsets > self._episode_step[index][:, None]  # [B, k]
        # Frames before the episode start read the always-zero row at index `capacity`.
        return np.where(before_start, self._capacity, slots)

    def _stack(self, index: np.ndarray) -> np.ndarray:
        """Observations stacked on a new last axis, oldest first, zeros before the episode start."""
        if self._slots_only:
            return self._stack_rows(index)
        if self._stack_size == 1:
            return self._observation[index][..., None]
        slots = self._stack_rows(index)
        # One frame at a time into the interleaved output: reads stay contiguous, which is several
        # times faster than gathering [B, k, *shape] and transposing.
        out = np.empty((index.shape[0], *self._observation_shape, self._stack_size), self._observation_dtype)
        for j in range(self._stack_size):
            out[..., j] = self._observation[slots[:, j]]
        return out

    def update_priorities(self, index: np.ndarray, priority: np.ndarray) -> None:
        """Uniform replay has no priorities: a no-op, so agents can call it regardless."""
        del index, priority

    # ---------------------------------------------------------------------------- save/load
    def _config(self) -> dict:
        return {
            "class": type(self).__name__,
            "capacity": self._capacity,
            "observation_shape": list(self._observation_shape),
            "observation_dtype": self._observation_dtype.str,
            "stack_size": self._stack_size,
            "update_horizon": self._update_horizon,
            "gamma": self._gamma,
        }

    def _slot_arrays(self) -> dict[str, np.ndarray]:
        """Per-slot arrays (length `capacity`), saved for the filled prefix."""
        return {
            "observation": self._observation[: self._capacity],  # without the zero row
            "action": self._action,
            "reward": self._reward,
            "terminated": self._terminated,
            "truncated": self._truncated,
            "is_final": self._is_final,
            "episode_step": self._episode_step,
            "valid": self._valid,
            "horizon": self._horizon,
        }

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        """Hook: further arrays to save whole (the prioritized sum tree)."""
        return {}

    def _prepare_extra_state(self, arrays: dict, slots: dict, source: str) -> Any:
        """Hook: checks what `_extra_arrays` saved against the loaded per-slot `slots` arrays and
        returns it ready to apply; raises ReplayCheckpointError. Must not change the buffer."""
        del arrays, slots, source

    def _apply_extra_state(self, prepared: Any) -> None:
        """Hook: installs what `_prepare_extra_state` returned."""
        del prepared

    def save(self, directory: str) -> None:
        """Writes the buffer's contents to `directory`/replay.npz (+ replay.json), atomically."""
        filled = min(self._add_count, self._capacity)
        arrays = {name: a[:filled] for name, a in self._slot_arrays().items()}
        arrays.update(self._extra_arrays())
        metadata = {
            "config": self._config(),
            "add_count": self._add_count,
            "next_episode_step": self._next_episode_step,
        }
        checkpointing.save_arrays(directory, arrays, metadata)

    def load(self, directory: str) -> None:
        """Restores what `save` wrote; the buffer must have the same configuration.

        Raises `ReplayCheckpointError` (a ValueError) when the files are missing or corrupt or
        were written by a buffer with a different configuration. Everything but the observations
        is checked before the buffer changes, and the buffer is unchanged by such failures; the
        observations are then streamed straight into storage (no second copy in memory), and if
        they turn out corrupt there the buffer is emptied before the error is raised.
        """
        with checkpointing.CheckpointReader(directory) as reader:
            source, metadata = reader.path, reader.metadata
            saved = metadata.get("config")
            if saved != self._config():
                raise checkpointing.ReplayCheckpointError(
                    f"Replay checkpoint {source!r} was written by a buffer configured as {saved}, but "
                    f"this buffer is {self._config()}. Load it into a buffer with the same settings."
                )
            try:
                add_count = int(metadata["add_count"])
                next_episode_step = int(metadata["next_episode_step"])
            except (KeyError, TypeError, ValueError) as e:
                raise checkpointing.ReplayCheckpointError(f"Replay checkpoint {source!r}: bad metadata ({e}).") from e
            if add_count < 0 or next_episode_step < 0:
                raise checkpointing.ReplayCheckpointError(f"Replay checkpoint {source!r}: negative counters.")
            filled = min(add_count, self._capacity)
            slot_arrays = self._slot_arrays()
            observation = slot_arrays.pop("observation")
            arrays = {name: reader.read(name) for name in [*slot_arrays, *self._extra_arrays()]}
            loaded = {}
            for name, current in slot_arrays.items():
                loaded[name] = checkpointing.check_array(
                    arrays, name, (filled, *current.shape[1:]), current.dtype, source
                )
            for name, current in self._extra_arrays().items():
                checkpointing.check_array(arrays, name, current.shape, current.dtype, source)
            valid, horizon, is_final = loaded["valid"], loaded["horizon"], loaded["is_final"]
            if (
                np.any(valid & is_final)
                or np.any(horizon[valid] < 1)
                or np.any(horizon[valid] > self._update_horizon)
                or np.any(loaded["episode_step"] < 0)
            ):
                raise checkpointing.ReplayCheckpointError(
                    f"Replay checkpoint {source!r} is inconsistent (bad validity or horizon arrays)."
                )
            extra = self._prepare_extra_state(arrays, loaded, source)
            # Everything but the observations checked: now mutate.
            try:
                reader.read_into("observation", observation[:filled])
            except checkpointing.ReplayCheckpointError as e:
                self._clear()
                raise checkpointing.ReplayCheckpointError(f"{e} The replay buffer was emptied.") from e
        observation[filled:] = 0
        for name, current in slot_arrays.items():
            current[:filled] = loaded[name]
            current[filled:] = 0
        self._add_count = add_count
        self._next_episode_step = next_episode_step
        self._num_valid = int(self._valid.sum())
        self._num_steps = int((~self._is_final[:filled]).sum())
        self._apply_extra_state(extra)

    def _clear(self) -> None:
        """Empties the buffer (after a failed load): nothing is valid, the cursor is at 0."""
        for array in self._slot_arrays().values():
            if array.ndim == 1:
                array[:] = 0
        self._add_count = self._next_episode_step = self._num_valid = self._num_steps = 0
        self._clear_extra_state()

    def _clear_extra_state(self) -> None:
        """Hook: empties subclass state (the sum tree) in `_clear`."""
