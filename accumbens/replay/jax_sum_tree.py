"""The sum tree in functional JAX form, for replay that lives on the device (compiled runner).

The state is a pytree (`SumTreeState`) and every function is pure and traceable, so they compose
under `jax.jit`, `vmap` and `lax.scan`:

  state = init(capacity)
  state = set_priorities(state, index [B], value [B])   # repeated indices: the last one wins
  index = sample(state, key, batch_size, stratified)    # batch_size, stratified: static
  index = find(state, targets [B])                      # targets in [0, total(state))
  total(state), get(state, index), max_recorded: state.max_recorded

Layout: a binary heap in one float32 array `nodes` of length 2 * size (size = capacity rounded up
to a power of two): node 1 is the root, node i has children 2i and 2i + 1, leaves are
`nodes[size + j]`. Parents are recomputed from their children, never updated by deltas. On an
accelerator a depth-log2(N) descent of gathers is cheap, so the binary form is kept here; the
NumPy `SumTree` uses wide blocks instead because NumPy pays per call. For the same leaves and
targets both return the same indices (exactly when sums are exact, e.g. integer priorities).

The descent never enters a subtree of mass 0: at each node it goes right only when the target is
past the left child's mass *and* the right child has mass, so a leaf of value 0 is never returned
while the total is positive. (On a GPU, float32 denormals may flush to zero: keep priorities
>= ~1e-30.) `max_recorded` starts at 1.0, as Dopamine's, and is the largest value ever set.
"""
from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class SumTreeState:
    """nodes: [2 * size] float32 heap (see the module docstring); max_recorded: [] float32."""

    nodes: jax.Array
    max_recorded: jax.Array
    capacity: int = flax.struct.field(pytree_node=False)

    @property
    def size(self) -> int:
        """Number of leaves (a power of two >= capacity)."""
        return self.nodes.shape[0] // 2

    @property
    def depth(self) -> int:
        return self.size.bit_length() - 1


def init(capacity: int) -> SumTreeState:
    """An all-zero tree over `capacity` leaves."""
    if capacity < 1:
        raise ValueError(f"SumTree capacity must be >= 1, got {capacity}.")
    size = 1 << max(0, (int(capacity) - 1).bit_length())
    return SumTreeState(
        nodes=jnp.zeros(2 * size, jnp.float32),
        max_recorded=jnp.asarray(1.0, jnp.float32),
        capacity=int(capacity),
    )


def total(state: SumTreeState) -> jax.Array:
    """Sum of all leaves, [] float32."""
    return state.nodes[1]


def get(state: SumTreeState, index: jax.Array) -> jax.Array:
    """Leaf values at `index` (int array of any shape)."""
    return state.nodes[state.size + index]


def set_priorities(state: SumTreeState, index: jax.Array, value: jax.Array) -> SumTreeState:
    """Sets leaves `index` [B] to `value` [B] (values must be >= 0); the last of repeats wins.

    Out-of-range indices are dropped. O(B log N).
    """
    index = jnp.asarray(index, jnp.int32).reshape(-1)
    value = jnp.broadcast_to(jnp.asarray(value, jnp.float32).reshape(-1), index.shape)
    # Scatter order with repeated indices is unspecified in XLA: keep only each index's last write.
    later = jnp.arange(index.shape[0])[None, :] > jnp.arange(index.shape[0])[:, None]
    superseded = jnp.any((index[:, None] == index[None, :]) & later, axis=1)
    in_range = (index >= 0) & (index < state.capacity)
    leaf = jnp.where(superseded | ~in_range, 2 * state.size, state.size + index)  # 2*size: dropped
    nodes = state.nodes.at[leaf].set(value, mode="drop")
    node = leaf
    for _ in range(state.depth):  # recompute the touched parents, bottom up
        node = node // 2
        parent = jnp.where(node < state.size, node, 2 * state.size)
        safe = jnp.minimum(parent, state.size - 1)
        nodes = nodes.at[parent].set(nodes[2 * safe] + nodes[2 * safe + 1], mode="drop")
    written = jnp.where(superseded | ~in_range, 0.0, value)
    max_recorded = jnp.maximum(state.max_recorded, jnp.max(written, initial=0.0))
    return state.replace(nodes=nodes, max_recorded=max_recorded)


def find(state: SumTreeState, targets: jax.Array) -> jax.Array:
    """Leaf i per target v: sum(leaves[:i]) <= v < sum(leaves[:i+1]); int32, shaped like targets.

    Targets are clipped into [0, total). Meaningless (but in range) when the total is 0.
    """
    nodes = state.nodes
    v = jnp.clip(jnp.asarray(targets, jnp.float32), 0.0, jnp.nextafter(nodes[1], 0.0))
    node = jnp.ones(v.shape, jnp.int32)

    def descend(_, carry):
        node, v = carry
        left = nodes[2 * node]
        go_right = (v >= left) & (nodes[2 * node + 1] > 0)
        return 2 * node + go_right.astype(jnp.int32), jnp.where(go_right, v - left, v)

    node, _ = jax.lax.fori_loop(0, state.depth, descend, (node, v))
    return node - state.size


@functools.partial(jax.jit, static_argnames=("batch_size", "stratified"))
def sample(state: SumTreeState, key: jax.Array, batch_size: int, stratified: bool = False) -> jax.Array:
    """`batch_size` leaf indices drawn proportionally to their values (int32 [batch_size]).

    stratified=True draws one index from each of `batch_size` equal-mass strata (Dopamine).
    The caller must ensure the total is positive (the result is meaningless otherwise).
    """
    u = jax.random.uniform(key, (batch_size,))
    if stratified:
        u = (jnp.arange(batch_size) + u) / batch_size
    return find(state, u * total(state))


def importance_weights(state: SumTreeState, index: jax.Array, num_valid: jax.Array, beta: float) -> jax.Array:
    """(N * P(i))^-beta normalised by the batch maximum; P(i) = leaf / total, N = num_valid."""
    probability = get(state, index) / total(state)
    weight = (num_valid * probability) ** -beta
    return weight / jnp.max(weight)
