"""A NumPy sum tree for proportional sampling: batched, vectorised sampling and updates.

Layout
------
A `branching`-ary tree (K = 32 by default). Level 0 holds the leaves (one per buffer slot, padded
with zeros to a multiple of K); node i of level d + 1 is the sum of the K-block
`[i * K, (i + 1) * K)` of level d; the top level has one block, whose sum is the total. A 1M-leaf
tree is 4 levels deep. Each level keeps three float64 arrays of its size:

  value  the node values (leaf priorities at level 0; at level d + 1, the sums of level d's blocks);
  excl   the running sum of `value` inside each K-block, exclusive (a node's left siblings' mass);
  key    block + run / block_sum, with run the inclusive running sum: a number in
         [block, block + 1] that increases along the whole level, not just inside a block (an
         empty block's keys are all `block`).

The keys are what make sampling fast: descending one level is a single `np.searchsorted` of
`block + residual / block_sum` in that level's keys for the whole batch, plus a few element-wise
operations on [B] arrays, instead of a [B, K] cumulative sum or 20 rounds of a binary tree. A
batch of 32 on a 1M tree is 4 such rounds. Updating B leaves recomputes the B touched blocks on
each level (a [B, K] cumulative sum per level; small top levels are recomputed whole). Both are
O(log_K N) rounds of vectorised work.

Exactness
---------
Every stored number is a deterministic function of its block's children (blocks are recomputed,
never updated by adding deltas), so sums do not drift, a block of zeros sums to exactly 0, and a
tree rebuilt from its leaves is bitwise equal to the incrementally updated one (save/load stores
only the leaves). The chosen leaf's cumulative range contains the target up to the rounding of the
keys (relative ~1e-12 of a block's mass). A node of value 0 has the same key as its left
neighbour, so `searchsorted(..., side="right")` never lands on it, and the search key is kept
strictly below its block's last key (block + 1), so rounding never leaves the block: a leaf of
priority 0 is never returned (a final check with an exact slow path guards this anyway).

Max priority
------------
`max_recorded` is the largest value ever `set` (1.0 initially, as in Dopamine): prioritized replay
gives new transitions this value, so that each is likely to be sampled soon.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

DEFAULT_BRANCHING = 32
# `set` recomputes levels of at most this many nodes whole (the top levels of a large tree).
_WHOLE_LEVEL_NODES = 2048


class SumTree:
    """Sum tree over `capacity` non-negative leaf values (see the module docstring)."""

    def __init__(self, capacity: int, branching: int = DEFAULT_BRANCHING):
        capacity, branching = int(capacity), int(branching)
        if capacity < 1:
            raise ValueError(f"SumTree capacity must be >= 1, got {capacity}.")
        if branching < 2:
            raise ValueError(f"SumTree branching must be >= 2, got {branching}.")
        self._capacity = capacity
        self._k = branching
        self._child_offsets = np.arange(branching, dtype=np.int64)
        sizes = []  # node counts per level, each a multiple of K; the last one is K (one block)
        size = capacity
        while True:
            size = -(-size // branching) * branching
            sizes.append(size)
            if size == branching:
                break
            size //= branching
        self._value = [np.zeros(n, np.float64) for n in sizes] + [np.zeros(1, np.float64)]
        self._excl = [np.zeros(n, np.float64) for n in sizes]
        # All values 0: every key is its block number.
        self._key = [np.repeat(np.arange(n // branching, dtype=np.float64), branching) for n in sizes]
        self._block_ids = [np.arange(n // branching, dtype=np.int64) for n in sizes]
        # The largest float below block + 1, per block: the search key's upper bound.
        self._key_limit = [np.nextafter(np.arange(1, n // branching + 1, dtype=np.float64), 0.0) for n in sizes]
        self._max_recorded = 1.0

    # ----------------------------------------------------------------------------- queries
    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def branching(self) -> int:
        return self._k

    @property
    def depth(self) -> int:
        """Levels of K-blocks (searchsorted rounds per sample)."""
        return len(self._key)

    @property
    def total(self) -> float:
        """Sum of all leaves."""
        return float(self._value[-1][0])

    @property
    def max_recorded(self) -> float:
        """Largest value ever set (1.0 before any set)."""
        return self._max_recorded

    @property
    def leaves(self) -> np.ndarray:
        """Read-only view of the `capacity` leaf values."""
        view = self._value[0][: self._capacity]
        view.flags.writeable = False  # a view's flag; the tree's own array stays writeable
        return view

    def get(self, index) -> np.ndarray:
        """Leaf values at `index` (any integer array shape)."""
        return self._value[0][self._check_index(index)]

    # ----------------------------------------------------------------------------- updates
    def set(self, index, value) -> None:
        """Sets leaves `index` to `value` (broadcast); with repeated indices the last one wins."""
        index = self._check_index(index).ravel()
        value = np.broadcast_to(np.asarray(value, np.float64), index.shape)
        if index.size == 0:
            return
        if not np.all(np.isfinite(value)) or value.min() < 0:
            raise ValueError(f"SumTree values must be finite and >= 0, got {value}.")
        self._value[0][index] = value
        self._max_recorded = max(self._max_recorded, float(value.max()))
        blocks = index // self._k
        for d in range(self.depth):
            if self._key[d].size <= _WHOLE_LEVEL_NODES:
                self._refresh_level(d)  # small upper levels: cheaper than gathering repeats
            else:
                self._refresh_blocks(d, blocks)  # repeated blocks write equal numbers
            blocks = blocks // self._k

    def set_one(self, index: int, value: float, refresh: bool = True) -> None:
        """`set` for one leaf, with less overhead (replay calls it on every `add`).

        refresh=False only writes the leaf: the caller must call `refresh_path(index)` before the
        tree is read again (replay does, once per leaf block, at the end of each `add`).
        """
        index, value = int(index), float(value)
        if not 0 <= index < self._capacity:
            raise IndexError(f"SumTree index {index} out of range [0, {self._capacity}).")
        if not (value >= 0 and np.isfinite(value)):
            raise ValueError(f"SumTree values must be finite and >= 0, got {value}.")
        self._value[0][index] = value
        if value > self._max_recorded:
            self._max_recorded = value
        if refresh:
            self.refresh_path(index)

    def refresh_path(self, index: int) -> None:
        """Recomputes the blocks above leaf `index`, up to the root (slices, no fancy indexing)."""
        k = self._k
        block = int(index) // k
        for d in range(self.depth):  # _refresh_blocks for one block
            start = block * k
            run = np.cumsum(self._value[d][start : start + k])
            block_sum = run[-1]
            self._excl[d][start + 1 : start + k] = run[:-1]
            self._key[d][start : start + k] = block + run / (block_sum if block_sum > 0 else np.inf)
            self._value[d + 1][block] = block_sum
            block //= k

    def _refresh_blocks(self, d: int, blocks: np.ndarray) -> None:
        """Recomputes excl/key of level d's `blocks` and their sums at level d + 1."""
        nodes = blocks[:, None] * self._k + self._child_offsets  # [U, K]
        run = np.cumsum(self._value[d][nodes], axis=1)  # running sums inside each block
        block_sum = run[:, -1]
        self._excl[d][nodes[:, 1:]] = run[:, :-1]
        divisor = np.where(block_sum > 0, block_sum, np.inf)  # an empty block's keys: block + 0
        self._key[d][nodes] = blocks[:, None] + run / divisor[:, None]
        self._value[d + 1][blocks] = block_sum

    def _refresh_level(self, d: int) -> None:
        """`_refresh_blocks` for every block of level d, with reshapes instead of gathers."""
        k = self._k
        run = np.cumsum(self._value[d].reshape(-1, k), axis=1)
        block_sum = run[:, -1]
        self._excl[d].reshape(-1, k)[:, 1:] = run[:, :-1]
        divisor = np.where(block_sum > 0, block_sum, np.inf)
        self._key[d].reshape(-1, k)[...] = self._block_ids[d][:, None] + run / divisor[:, None]
        self._value[d + 1][: block_sum.size] = block_sum

    def _rebuild(self) -> None:
        """Recomputes every level from the leaves (bitwise equal to incremental updates)."""
        for d in range(self.depth):
            self._refresh_level(d)

    def _check_index(self, index) -> np.ndarray:
        index = np.asarray(index)
        if index.dtype.kind not in "iu":
            raise TypeError(f"SumTree indices must be integers, got dtype {index.dtype}.")
        if index.size and (index.min() < 0 or index.max() >= self._capacity):
            raise IndexError(f"SumTree index out of range [0, {self._capacity}): {index}.")
        return index.astype(np.int64, copy=False)

    # ---------------------------------------------------------------------------- sampling
    def sample(
        self, rng: np.random.Generator, batch_size: int, stratified: bool = False
    ) -> np.ndarray:
        """Draws `batch_size` leaf indices with probability proportional to their values.

        stratified=False: independent draws. stratified=True (Dopamine's prioritized replay): the
        total mass is cut into `batch_size` equal strata and one index is drawn from each, which
        lowers the variance of a batch. Raises ValueError when the total is 0.
        """
        u = rng.random(batch_size)
        if stratified:
            u = (np.arange(batch_size) + u) / batch_size
        return self.find(u * self.total)

    def find(self, targets: np.ndarray) -> np.ndarray:
        """Leaf i for each target v in [0, total): sum(leaves[:i]) <= v < sum(leaves[:i + 1]).

        Never returns a leaf of value 0. Returns int64 indices shaped like `targets`.
        Raises ValueError when the total is 0.
        """
        total = float(self._value[-1][0])
        if not total > 0:
            raise ValueError("Cannot sample from a SumTree whose values are all 0.")
        targets = np.asarray(targets, np.float64)
        shape = targets.shape
        targets = targets.ravel()
        top = self.depth - 1
        # The top level is one block (block 0, sum = total): its key is v / total, below 1.
        key = np.maximum(np.minimum(targets / total, self._key_limit[top][0]), 0.0)
        node = np.searchsorted(self._key[top], key, side="right")
        v = np.maximum(targets - self._excl[top][node], 0.0)
        for d in reversed(range(top)):
            # Search key block + v / block_sum, kept below block + 1 (the block's last key) so
            # that rounding cannot carry it into the next block.
            key = np.minimum(node + v / self._value[d + 1][node], self._key_limit[d][node])
            node = np.searchsorted(self._key[d], key, side="right")
            v = np.maximum(v - self._excl[d][node], 0.0)
        bad = self._value[0][node] <= 0
        if bad.any():  # cannot happen while the total is positive; kept as a guard
            node[bad] = [self._find_exact(t) for t in targets[bad]]
        return node.reshape(shape)

    def _find_exact(self, target: float) -> int:
        """Slow scalar fallback: the leaf for `target`, clipped to the nearest positive leaf."""
        leaves = self._value[0]
        i = int(np.searchsorted(np.cumsum(leaves), target, side="right"))
        positive = np.flatnonzero(leaves > 0)
        j = min(int(np.searchsorted(positive, i)), positive.size - 1)
        return int(positive[j])

    # -------------------------------------------------------------------------- save/load
    def to_arrays(self, prefix: str = "sum_tree") -> dict[str, np.ndarray]:
        """The leaves and `max_recorded`, for np.savez (inner levels are rebuilt on load)."""
        return {
            f"{prefix}_leaves": self._value[0][: self._capacity],
            f"{prefix}_max_recorded": np.array(self._max_recorded, np.float64),
        }

    def load_arrays(self, arrays: dict, prefix: str = "sum_tree", source: Optional[str] = None) -> None:
        """Restores `to_arrays`' output; raises ValueError when shapes or values are wrong."""
        where = f" in {source!r}" if source else ""
        names = (f"{prefix}_leaves", f"{prefix}_max_recorded")
        for name in names:
            if name not in arrays:
                raise ValueError(f"SumTree array {name!r} missing{where}.")
        leaves = np.asarray(arrays[names[0]])
        if leaves.shape != (self._capacity,) or leaves.dtype != np.float64:
            raise ValueError(
                f"SumTree leaves{where} have shape {leaves.shape} and dtype {leaves.dtype}; "
                f"expected ({self._capacity},) float64 (a different capacity?)."
            )
        max_recorded = float(np.asarray(arrays[names[1]]))
        if not (np.all(np.isfinite(leaves)) and leaves.min(initial=0.0) >= 0 and np.isfinite(max_recorded)):
            raise ValueError(f"SumTree arrays{where} hold negative or non-finite values.")
        self._value[0][: self._capacity] = leaves
        self._max_recorded = max_recorded
        self._rebuild()
