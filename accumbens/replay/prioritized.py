"""Prioritized replay (Schaul et al. 2016, proportional variant) on top of the circular buffer.

Storage, stacking, n-step returns and validity are `ReplayBuffer`'s; this class only decides which
slots a batch draws, through a `SumTree` with one leaf per slot.

Priorities
----------
`update_priorities(index, priority)` takes *raw* priorities p >= 0 (e.g. a TD error's magnitude,
or Rainbow's cross-entropy loss) and the tree stores the sampling mass p^alpha, so
P(i) = p_i^alpha / sum_j p_j^alpha. (Dopamine's JAX Rainbow passes sqrt(loss) to a buffer without
an exponent; passing the loss here with alpha = 0.5 is the same.) With alpha = 0 every valid
slot has mass 1, i.e. uniform sampling. A priority of 0 (with alpha > 0) is never sampled.

A slot enters the tree when it becomes a valid sample start (its n-step window complete), with the
largest mass ever recorded (1.0 at first), and leaves it (mass 0) when it stops being valid: a final
observation slot, an incomplete window and a start whose stack or window the write cursor reached
are never sampled. Priorities sent for a slot that became invalid since it was sampled are ignored.

Importance weights
------------------
w_i = (N * P(i))^(-beta) / max_j w_j over the batch, N the number of valid slots; the largest
weight in a batch is 1 (Dopamine's normalisation).

Sampling
--------
stratified=True (the default, as Dopamine's prioritized buffer): the total mass is cut into
batch_size equal strata and one slot is drawn from each; stratified=False: independent draws.
"""
from __future__ import annotations

from typing import Any, Sequence

import gin
import numpy as np

from accumbens.replay import checkpointing
from accumbens.replay.batch import Batch
from accumbens.replay.circular import ReplayBuffer
from accumbens.replay.sum_tree import DEFAULT_BLOCK_SIZE, SumTree


@gin.configurable
class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay. Arguments as `ReplayBuffer`, plus:

    Args:
      alpha: priority exponent; the tree stores priority^alpha.
      beta: importance-sampling exponent (may be changed between samples: `buffer.beta = ...`).
      stratified: one draw per equal-mass stratum (Dopamine) instead of independent draws.
      block_size: leaves per block of the sum tree (speed only).
    """

    def __init__(
        self,
        capacity: int,
        observation_shape: Sequence[int],
        observation_dtype: Any = np.uint8,
        stack_size: int = 1,
        update_horizon: int = 1,
        gamma: float = 0.99,
        alpha: float = 0.5,
        beta: float = 0.5,
        stratified: bool = True,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ):
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}.")
        self._tree = SumTree(int(capacity), block_size)
        self._stale_leaves: list[int] = []  # leaves set since the last refresh (see _end_write)
        self._alpha = float(alpha)
        self.beta = float(beta)
        self.stratified = bool(stratified)
        super().__init__(capacity, observation_shape, observation_dtype, stack_size, update_horizon, gamma)

    @property
    def alpha(self) -> float:
        return self._alpha

    @property
    def sum_tree(self) -> SumTree:
        return self._tree

    # A write usually validates one slot and invalidates one nearby (the overwritten slot and the
    # start n steps back share a leaf block): leaves are set at once and the tree's path above
    # each touched block is recomputed once, at the end of the write.
    def _mark_valid(self, slot: int, horizon: int) -> None:
        super()._mark_valid(slot, horizon)
        self._tree.set_one(slot, self._tree.max_recorded, refresh=False)
        self._stale_leaves.append(slot)

    def _mark_invalid(self, slot: int) -> None:
        super()._mark_invalid(slot)
        self._tree.set_one(slot, 0.0, refresh=False)
        self._stale_leaves.append(slot)

    def _end_write(self) -> None:
        if self._stale_leaves:
            k = self._tree.block_size
            for block in {slot // k for slot in self._stale_leaves}:
                self._tree.refresh_block(block * k)
            self._stale_leaves.clear()

    def can_sample(self, batch_size: int = 1) -> bool:
        return super().can_sample(batch_size) and self._tree.total > 0

    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """Samples proportionally to priority^alpha; `weight` holds normalised IS weights."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if self._num_valid == 0:
            raise ValueError(
                f"Cannot sample from replay: no valid transitions yet ({len(self)} steps stored). "
                "Check can_sample() or wait for min_replay_history."
            )
        if not self._tree.total > 0:
            raise ValueError("Cannot sample from prioritized replay: every valid priority is 0.")
        index = self._tree.sample(rng, batch_size, self.stratified)
        probability = self._tree.get(index) / self._tree.total
        weight = (self._num_valid * probability) ** -self.beta
        weight = (weight / weight.max()).astype(np.float32)
        return self._gather(index, weight)

    def update_priorities(self, index: np.ndarray, priority: np.ndarray) -> None:
        """Sets raw priorities (>= 0, finite) for slots `index`; stored as priority^alpha.

        Slots that are no longer valid (overwritten since they were sampled) keep mass 0. With
        repeated indices the last priority wins.
        """
        index = np.asarray(index, np.int64).ravel()
        priority = np.asarray(priority, np.float64).ravel()
        if index.shape != priority.shape:
            raise ValueError(f"index {index.shape} and priority {priority.shape} differ in shape.")
        if not np.all(np.isfinite(priority)) or (priority.size and priority.min() < 0):
            raise ValueError(f"Priorities must be finite and >= 0, got {priority}.")
        mass = np.where(self._valid[index], priority**self._alpha, 0.0)
        self._tree.set(index, mass)

    # ---------------------------------------------------------------------------- save/load
    def _config(self) -> dict:
        return dict(super()._config(), alpha=self._alpha)

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return self._tree.to_arrays()

    def _prepare_extra_state(self, arrays: dict, slots: dict, source: str) -> SumTree:
        tree = SumTree(self._capacity, self._tree.block_size)
        try:
            tree.load_arrays(arrays, source=source)
        except ValueError as e:
            raise checkpointing.ReplayCheckpointError(str(e)) from e
        valid = np.zeros(self._capacity, bool)
        valid[: slots["valid"].shape[0]] = slots["valid"]
        if np.any(tree.leaves[~valid] > 0):
            raise checkpointing.ReplayCheckpointError(
                f"Replay checkpoint {source!r} is inconsistent: invalid slots have priorities."
            )
        return tree

    def _apply_extra_state(self, prepared: SumTree) -> None:
        self._tree = prepared

    def _clear_extra_state(self) -> None:
        self._tree = SumTree(self._capacity, self._tree.block_size)
