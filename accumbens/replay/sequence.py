"""Sequence replay: fixed-length histories of context L from the shared circular buffer.

A sequence agent (`accumbens.agents.sequence_dqn`) needs, for a sampled step t, the observations
of its episode up to t, not a frame stack. `SequenceReplayBuffer` is the shared `ReplayBuffer`
with one-frame storage (`stack_size = 1`), so each observation is still stored once and validity,
n-step returns and discounts are exactly the uniform buffer's; only the assembly of a sample
differs. For a valid start t with n-step horizon m it returns

  observation       [B, L, *obs_shape]  steps t-L+1 .. t        (oldest first, the last is o_t)
  mask              [B, L] bool          which of them are real
  next_observation  [B, L, *obs_shape]  steps t+m-L+1 .. t+m   (the last is o_{t+m})
  next_mask         [B, L] bool

A position is real iff it lies in the same episode as the window's last step (it is at most
`episode_step` steps back) and its slot has not been overwritten by the write cursor. Other
positions read the buffer's always-zero padding row and are masked: the encoder gives them no
weight. So a sequence never crosses an episode start, and the oldest steps of the buffer simply
have a shorter history (the only approximation: at most the L oldest slots of a full buffer).
The gather `storage[slots]` builds the batch itself; storage holds no second copy.

Acting is not limited to L (the encoder's recurrent state spans the whole episode); L bounds the
history seen in training. Choose L at least as long as the memory the task needs.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.struct
import gin
import numpy as np

from accumbens.replay.batch import Array, Batch
from accumbens.replay.circular import ReplayBuffer


@flax.struct.dataclass
class SequenceBatch(Batch):
    """A `Batch` of sequences: `observation`/`next_observation` are [B, L, *obs_shape], `mask` is
    [B, L] for `observation` and `next_mask` [B, L] for `next_observation` (True: a real step)."""

    next_mask: Optional[Array] = None


@gin.configurable
class SequenceReplayBuffer(ReplayBuffer):
    """Uniform replay whose samples are histories of `context_length` steps (module docstring).

    Args:
      capacity, observation_shape, observation_dtype, update_horizon, gamma: as `ReplayBuffer`.
      stack_size: must be 1 (sequences replace frame stacks); accepted so that the shared
        `create_replay` can build this buffer like the others.
      context_length: L, the steps in each sampled sequence (64 by default; the memory corridor
        of length N needs L >= N + 1).
    """

    def __init__(
        self,
        capacity: int,
        observation_shape: Sequence[int],
        observation_dtype: Any = np.uint8,
        stack_size: int = 1,
        update_horizon: int = 1,
        gamma: float = 0.99,
        context_length: int = 64,
    ):
        if int(stack_size) != 1:
            raise ValueError(
                f"SequenceReplayBuffer samples sequences instead of frame stacks; stack_size must be 1, "
                f"got {stack_size} (set the context with SequenceReplayBuffer.context_length)."
            )
        context_length = int(context_length)
        if context_length < 1:
            raise ValueError(f"context_length must be >= 1, got {context_length}.")
        super().__init__(capacity, observation_shape, observation_dtype, 1, update_horizon, gamma)
        self._context_length = context_length
        self._back = np.arange(context_length - 1, -1, -1, dtype=np.int64)  # steps back: L-1 .. 0

    @property
    def context_length(self) -> int:
        return self._context_length

    def sample(self, rng: np.random.Generator, batch_size: int) -> SequenceBatch:
        """Samples `batch_size` sequences uniformly over valid starts (see the module docstring)."""
        return super().sample(rng, batch_size)

    def _gather(self, index: np.ndarray, weight: np.ndarray) -> SequenceBatch:
        batch = super()._gather(index, weight)  # reward, discount, action: the uniform buffer's
        next_index = (index + self._horizon[index]) % self._capacity
        observation, mask = self.sequences(index)
        next_observation, next_mask = self.sequences(next_index)
        return SequenceBatch(
            observation=observation,
            action=batch.action,
            reward=batch.reward,
            next_observation=next_observation,
            discount=batch.discount,
            weight=batch.weight,
            index=batch.index,
            mask=mask,
            next_mask=next_mask,
        )

    def sequences(self, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The L-step histories ending at the written slots `end` [B]: ([B, L, *obs], mask [B, L])."""
        end = np.asarray(end, np.int64)
        c = self._capacity
        # Logical write time of each end slot, and how far back the live part of the ring reaches.
        newest = self._add_count - 1
        end_time = newest - (newest - end) % c
        oldest_live = max(0, self._add_count - c)
        reach = np.minimum(self._episode_step[end], end_time - oldest_live)  # [B]
        mask = self._back[None, :] <= reach[:, None]  # [B, L]
        slots = np.where(mask, (end[:, None] - self._back[None, :]) % c, c)  # row c is all zeros
        return self._observation[slots], mask

    def _config(self) -> dict:
        config = super()._config()
        config["context_length"] = self._context_length
        return config
