"""The one batch type that every replay form hands to every agent's `update`."""
from __future__ import annotations

from typing import Any, Optional

import flax.struct

Array = Any  # a NumPy or JAX array


@flax.struct.dataclass
class Batch:
    """A batch of B transitions (or sequences) sampled from replay.

    Shapes (host replay returns NumPy arrays, device replay JAX arrays):
      observation:      [B, *obs_shape, stack_size] stacked frames (oldest first, newest last);
                        frames before the episode start are zeros. Sequences: [B, L, *obs_shape].
      action:           [B] int32, the action taken at `observation`.
      reward:           [B] float32, the n-step discounted return sum_{k<m} gamma^k r_{t+k+1},
                        with m <= n the steps until the episode ended (if it did inside n steps).
      next_observation: [B, *obs_shape, stack_size] stacked frames at step t+m.
      discount:         [B] float32, gamma^m; 0 where the episode terminated within the n steps
                        (truncation bootstraps, so it keeps gamma^m).
      weight:           [B] float32 importance weight; 1 for uniform replay.
      index:            [B] int64 buffer indices, for `update_priorities`.
      mask:             [B, L] bool valid steps for sequence samples, else None.
    """

    observation: Array
    action: Array
    reward: Array
    next_observation: Array
    discount: Array
    weight: Array
    index: Array
    mask: Optional[Array] = None
