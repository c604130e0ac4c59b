"""A NumPy sum tree for proportional sampling, shaped for few, wide NumPy calls.

Layout
------
Two levels. The leaves (one per buffer slot, padded with zeros to a whole number of blocks) are cut
into blocks of `block_size` (K = 64 by default) consecutive leaves; each block keeps the inclusive
running sum of its leaves (`run`, a [num_blocks, K] array, rows contiguous), so `run[b, -1]` is the
block's mass. Above the blocks sits one array, `prefix` ([num_blocks + 1]): the exclusive prefix
sums of the block masses (`prefix[0] = 0`, `prefix[-1]` = the total).

Sampling a batch of B targets v in [0, total) is a fixed handful of vectorised calls, whatever the
capacity:
  1. block b = the last block with prefix[b] <= v (`np.searchsorted` in `prefix`, which is small:
     N / K entries, 125 KB for a 1M buffer, so it stays in cache);
  2. residual r = v - prefix[b], then the rows `run[b]` are gathered ([B, K], one contiguous
     512-byte row per target, which the prefetcher streams);
  3. the leaf is the first column whose running sum exceeds r (`argmax` of `run[b] > r`).
A K-ary tree of depth log_K(N) needs the same handful of calls per level; on a CPU where each
small NumPy call costs a microsecond or more, and each level of a deep tree over a large buffer
costs cache misses, two levels are faster for every buffer up to ~10M slots (benchmarks/sum_tree.py).

Costs: sampling is O(log(N / K) + K) per target. Setting a leaf recomputes its block's row (O(K))
and marks the prefix stale; the prefix is rebuilt (one `np.cumsum` over N / K block masses) on the
next read, so a training step that adds, samples and updates priorities pays one rebuild.

Exactness
---------
Every stored number is a deterministic function of the leaves (rows and prefix are recomputed with
`np.cumsum`, never updated by adding deltas), so sums do not drift, a block of zeros has mass
exactly 0, and a tree rebuilt from its leaves is bitwise equal to the incrementally updated one
(save/load stores only the leaves). A leaf of value 0 has the same running sum as its left
neighbour, so "first running sum > r" never lands on it; a zero block has the same prefix as the
next block, so "last prefix <= v" skips it. If rounding ever puts a residual at or beyond its
block's mass (relative error ~1e-16), that target takes an exact slow path, so a leaf of value 0 is
never returned.

Max priority
------------
`max_recorded` is the largest value ever `set` (1.0 initially, as in Dopamine): prioritized replay
gives new transitions this value, so that each is likely to be sampled soon.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

DEFAULT_BLOCK_SIZE = 64


class SumTree:
    """Sum tree over `capacity` non-negative leaf values (see the module docstring)."""

    def __init__(self, capacity: int, block_size: int = DEFAULT_BLOCK_SIZE):
        capacity, block_size = int(capacity), int(block_size)
        if capacity < 1:
            raise ValueError(f"SumTree capacity must be >= 1, got {capacity}.")
        if block_size < 1:
            raise ValueError(f"SumTree block_size must be >= 1, got {block_size}.")
        self._capacity = capacity
        self._k = block_size
        self._num_blocks = -(-capacity // block_size)
        self._leaves = np.zeros(self._num_blocks * block_size, np.float64)
        self._run = np.zeros((self._num_blocks, block_size), np.float64)
        self._prefix = np.zeros(self._num_blocks + 1, np.float64)
        self._prefix_stale = False
        self._max_recorded = 1.0
        self._aranges: dict[int, np.ndarray] = {}

    # ----------------------------------------------------------------------------- queries
    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def block_size(self) -> int:
        """Leaves per block (K)."""
        return self._k

    @property
    def num_blocks(self) -> int:
        return self._num_blocks

    @property
    def total(self) -> float:
        """Sum of all leaves."""
        return float(self._fresh_prefix()[-1])

    @property
    def max_recorded(self) -> float:
        """Largest value ever set (1.0 before any set)."""
        return self._max_recorded

    @property
    def leaves(self) -> np.ndarray:
        """Read-only view of the `capacity` leaf values."""
        view = self._leaves[: self._capacity]
        view.flags.writeable = False  # a view's flag; the tree's own array stays writeable
        return view

    def get(self, index) -> np.ndarray:
        """Leaf values at `index` (any integer array shape)."""
        return self._leaves[self._check_index(index)]

    # ----------------------------------------------------------------------------- updates
    def set(self, index, value) -> None:
        """Sets leaves `index` to `value` (broadcast); with repeated indices the last one wins."""
        index = self._check_index(index).ravel()
        value = np.broadcast_to(np.asarray(value, np.float64), index.shape)
        if index.size == 0:
            return
        if not np.all(np.isfinite(value)) or value.min() < 0:
            raise ValueError(f"SumTree values must be finite and >= 0, got {value}.")
        self._leaves[index] = value
        self._max_recorded = max(self._max_recorded, float(value.max()))
        blocks = index // self._k  # repeated blocks are recomputed to the same numbers
        self._run[blocks] = np.cumsum(self._leaves.reshape(self._num_blocks, self._k)[blocks], axis=1)
        self._prefix_stale = True

    def set_one(self, index: int, value: float, refresh: bool = True) -> None:
        """`set` for one leaf, with less overhead (replay calls it on every `add`).

        refresh=False only writes the leaf: the caller must call `refresh_block(index)` before the
        tree is read again (replay does, once per touched block, at the end of each `add`).
        """
        index, value = int(index), float(value)
        if not 0 <= index < self._capacity:
            raise IndexError(f"SumTree index {index} out of range [0, {self._capacity}).")
        if not (value >= 0 and np.isfinite(value)):
            raise ValueError(f"SumTree values must be finite and >= 0, got {value}.")
        self._leaves[index] = value
        if value > self._max_recorded:
            self._max_recorded = value
        if refresh:
            self.refresh_block(index)

    def refresh_block(self, index: int) -> None:
        """Recomputes the running sums of the block holding leaf `index`; the prefix goes stale."""
        block = int(index) // self._k
        start = block * self._k
        np.cumsum(self._leaves[start : start + self._k], out=self._run[block])
        self._prefix_stale = True

    def _fresh_prefix(self) -> np.ndarray:
        if self._prefix_stale:
            np.cumsum(self._run[:, -1], out=self._prefix[1:])
            self._prefix_stale = False
        return self._prefix

    def _rebuild(self) -> None:
        """Recomputes rows and prefix from the leaves (bitwise equal to incremental updates)."""
        np.cumsum(self._leaves.reshape(self._num_blocks, self._k), axis=1, out=self._run)
        self._prefix_stale = True
        self._fresh_prefix()

    def _arrays(self) -> list[np.ndarray]:
        """Every stored array, prefix up to date (for consistency tests)."""
        return [self._leaves, self._run, self._fresh_prefix()]

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
        prefix = self._fresh_prefix()
        total = prefix[-1]
        if not total > 0:
            raise ValueError("Cannot sample from a SumTree whose values are all 0.")
        u = rng.random(batch_size)
        if stratified:  # in place: this runs once per training step
            u += self._arange(batch_size)
            u *= total / batch_size
        else:
            u *= total
        return self._find_flat(u, prefix)

    def _arange(self, size: int) -> np.ndarray:
        cached = self._aranges.get(size)
        if cached is None:
            cached = self._aranges[size] = np.arange(size)
        return cached

    def find(self, targets: np.ndarray) -> np.ndarray:
        """Leaf i for each target v in [0, total): sum(leaves[:i]) <= v < sum(leaves[:i + 1]).

        Never returns a leaf of value 0. Returns int64 indices shaped like `targets`.
        Raises ValueError when the total is 0.
        """
        prefix = self._fresh_prefix()
        if not prefix[-1] > 0:
            raise ValueError("Cannot sample from a SumTree whose values are all 0.")
        targets = np.asarray(targets, np.float64)
        return self._find_flat(targets.ravel(), prefix).reshape(targets.shape)

    def _find_flat(self, targets: np.ndarray, prefix: np.ndarray) -> np.ndarray:
        """`find` for a 1-D float64 array, with the prefix fresh and the total positive."""
        block = np.searchsorted(prefix, targets, side="right")
        block -= 1
        np.clip(block, 0, self._num_blocks - 1, out=block)
        residual = targets - prefix[block]
        np.maximum(residual, 0.0, out=residual)  # targets below 0 count as 0
        rows = self._run[block]  # [B, K] running sums of each target's block
        column = np.argmax(rows > residual[:, None], axis=1)
        found = rows[self._arange(rows.shape[0]), column] > residual  # False: rounding (see docstring)
        block *= self._k
        block += column  # the leaf index
        if not found.all():
            bad = ~found
            block[bad] = [self._find_exact(t) for t in targets[bad]]
        return block

    def _find_exact(self, target: float) -> int:
        """Slow scalar fallback: the leaf for `target`, clipped to the nearest positive leaf."""
        leaves = self._leaves
        i = int(np.searchsorted(np.cumsum(leaves), target, side="right"))
        positive = np.flatnonzero(leaves > 0)
        j = min(int(np.searchsorted(positive, i)), positive.size - 1)
        return int(positive[j])

    # -------------------------------------------------------------------------- save/load
    def to_arrays(self, prefix: str = "sum_tree") -> dict[str, np.ndarray]:
        """The leaves and `max_recorded`, for np.savez (inner levels are rebuilt on load)."""
        return {
            f"{prefix}_leaves": self._leaves[: self._capacity],
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
        self._leaves[: self._capacity] = leaves
        self._max_recorded = max_recorded
        self._rebuild()
