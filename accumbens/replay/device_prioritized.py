"""Prioritized replay in device form: proportional PER (Schaul et al. 2016) inside `jit` and `lax.scan`.

`DevicePrioritizedReplayBuffer` is the uniform `DeviceReplayBuffer` (same storage, same `Batch`,
same n-step and stacking semantics; see `accumbens.replay.device`) plus a functional sum tree
(`accumbens.replay.jax_sum_tree`) with one leaf per flat slot `row * num_envs + env` (the
`Batch.index` the agent gets back). It follows the host `PrioritizedReplayBuffer`
(`accumbens.replay.prioritized`) rule for rule:

  * the tree stores the sampling mass p^alpha of a raw priority p (Rainbow sends its per-sample
    cross-entropy + 1e-10, DQN sqrt(loss)); P(i) = p_i^alpha / sum_j p_j^alpha;
  * a slot enters the tree with the largest mass ever recorded (1.0 at first) when it becomes a
    valid sample start (its n-step window complete), and gets mass 0 when it stops being valid
    (its row overwritten, or its frame stack reaching back to an overwritten row). Every `add`
    checks only the slots whose validity that one write can change: the n starts whose window
    may complete at the new step and the k starts at the old end whose stack (or row) the write
    reaches, so an `add` costs O((n + k) * num_envs * log N), whatever the capacity (and
    never reads the storage it overwrites, so the write stays in place);
  * `update_priorities(index, priority)` sets p^alpha for slots still valid and ignores slots
    overwritten since they were sampled; with repeated indices the last priority wins;
  * sampling is stratified by default (one draw from each of `batch_size` equal-mass strata, as
    Dopamine's and the host buffer's), else independent draws;
  * importance weights w_i = (N * P(i))^-beta / max_j w_j over the batch, N the number of valid
    slots (the largest weight of a batch is 1, Dopamine's normalisation).

Differences from the host form (documented, by design):
  * masses and sums are float32 (the host tree is float64): probabilities agree to ~1e-6 relative;
  * when one `update_priorities` call repeats an index, the largest mass recorded counts only the
    value that was stored (the last); the host tree also counts the superseded ones. (Within a
    batch, repeated draws of one transition get the same loss, so this rarely matters.)
  * there are no errors under `jit`: negative or non-finite priorities are stored as mass 0 (the
    agent's loss, which the runner logs, shows the divergence), and sampling from a buffer with
    no valid slot returns arbitrary in-range transitions with weight 1 (callers gate learning on
    `min_replay_history`, as the runners do);
  * the valid set and the eviction order are the uniform device buffer's (a capacity of C holds
    C steps; a step can be sampled as soon as step t+n-1 is stored), see `accumbens.replay.device`.

Everything is a pure function of `DevicePrioritizedReplayState` (a pytree with fixed shapes), so a
buffer can be `vmap`ped over seeds and sharded over devices like the uniform one.
"""
from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from accumbens.replay import jax_sum_tree
from accumbens.replay.batch import Batch
from accumbens.replay.device import DeviceReplayBuffer, DeviceReplayState


@flax.struct.dataclass
class DevicePrioritizedReplayState(DeviceReplayState):
    """`DeviceReplayState` plus the priorities.

    tree: `jax_sum_tree.SumTreeState` over rows * num_envs leaves (mass p^alpha, 0 for invalid
    slots); num_valid: [] int32, the number of valid sample starts (N of the importance weights).
    """

    tree: jax_sum_tree.SumTreeState
    num_valid: jax.Array


@dataclasses.dataclass(frozen=True)
class DevicePrioritizedReplayBuffer(DeviceReplayBuffer):
    """Proportional prioritized device replay. Arguments as `DeviceReplayBuffer`, plus:

    Args:
      alpha: priority exponent, >= 0 (0: uniform over valid slots); the tree stores p^alpha.
      beta: importance-sampling exponent, >= 0.
      stratified: one draw per equal-mass stratum (the host buffer's and Dopamine's default).
    The compiled runner takes all three from the agent's host `PrioritizedReplayBuffer`, so the
    gin bindings `PrioritizedReplayBuffer.alpha/beta/stratified` apply to both forms.
    """

    alpha: float = 0.5
    beta: float = 0.5
    stratified: bool = True

    def __post_init__(self):
        super().__post_init__()
        if not self.alpha >= 0 or not self.beta >= 0:
            raise ValueError(f"alpha and beta must be >= 0; got alpha={self.alpha}, beta={self.beta}")

    @property
    def num_slots(self) -> int:
        return self.rows * self.num_envs

    # ------------------------------------------------------------------------------ state
    def init(self) -> DevicePrioritizedReplayState:
        base = super().init()
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
        return DevicePrioritizedReplayState(
            **fields, tree=jax_sum_tree.init(self.num_slots), num_valid=jnp.zeros((), jnp.int32)
        )

    def add(
        self,
        state: DevicePrioritizedReplayState,
        observation: jax.Array,
        action: jax.Array,
        reward: jax.Array,
        terminated: jax.Array,
        truncated: jax.Array,
        next_observation: jax.Array,
        count: jax.Array | None = None,
    ) -> DevicePrioritizedReplayState:
        """`DeviceReplayBuffer.add`, then the tree follows the slots whose validity changed:
        new valid starts get the largest mass recorded, starts no longer valid get 0.

        Everything is computed from the state *after* the write (reading the old storage as well
        would make XLA copy the whole buffer on every step instead of writing it in place):
          * the n starts t-n+1..t whose window may complete at t: valid before iff valid in the
            new state seen with count = t (the rows they read, up to t-1, are unchanged);
          * the k starts t-rows..t-rows+k-1 at the old end (the overwritten step and those whose
            stack reaches it): set to 0 when invalid now; a slot already at 0 stays at 0.
        They share a row only for t-rows and t, and the later write (t's) wins.
        """
        t = state.count if count is None else jnp.asarray(count, jnp.int32)
        new = super().add(state, observation, action, reward, terminated, truncated, next_observation, count)
        n, k, e = self.update_horizon, self.stack_size, self.num_envs
        envs_of = lambda steps: jnp.broadcast_to(jnp.arange(e, dtype=jnp.int32)[None, :], (steps.shape[0], e)).reshape(-1)  # noqa: E731
        per_env = lambda steps: jnp.broadcast_to(steps[:, None], (steps.shape[0], e)).reshape(-1)  # noqa: E731
        window_steps = t - jnp.arange(n - 1, -1, -1, dtype=jnp.int32)  # [n]
        stale_steps = t - self.rows + jnp.arange(k, dtype=jnp.int32)  # [k]
        window, window_env = per_env(window_steps), envs_of(window_steps)  # [n * E] each
        stale, stale_env = per_env(stale_steps), envs_of(stale_steps)  # [k * E] each
        gained = self.is_valid(new, window, window_env) & ~self.is_valid(new.replace(count=t), window, window_env)
        dropped = ~self.is_valid(new, stale, stale_env)
        steps = jnp.concatenate([stale, window])
        envs = jnp.concatenate([stale_env, window_env])
        write = jnp.concatenate([dropped, gained])
        index = jnp.where(write, (steps % self.rows) * e + envs, -1)  # -1: dropped by set_priorities
        value = jnp.where(jnp.concatenate([jnp.zeros_like(dropped), gained]), state.tree.max_recorded, 0.0)
        tree = jax_sum_tree.set_priorities(state.tree, index, value)
        return new.replace(tree=tree, num_valid=self._count_valid(new))

    def _count_valid(self, state: DevicePrioritizedReplayState) -> jax.Array:
        """Valid starts now, from O((n + k) * num_envs) rows: every stored step is valid except
        (at most) the n-1 newest (window incomplete) and the k-1 oldest (stack reaching back to
        an overwritten row)."""
        n, k, e = self.update_horizon, self.stack_size, self.num_envs
        filled = jnp.minimum(state.count, self.rows)
        oldest = state.count - filled
        newest = state.count - 1 - jnp.arange(n - 1, dtype=jnp.int32)  # [n-1]
        first = oldest + jnp.arange(k - 1, dtype=jnp.int32)  # [k-1]
        first = jnp.where(first < state.count - (n - 1), first, -1)  # not already among the newest
        steps = jnp.concatenate([newest, first])
        steps = jnp.where(steps >= oldest, steps, -1)  # -1: not stored (a small buffer), not counted
        stored = jnp.broadcast_to((steps >= 0)[:, None], (steps.shape[0], e)).reshape(-1)
        env = jnp.broadcast_to(jnp.arange(e, dtype=jnp.int32)[None, :], (steps.shape[0], e)).reshape(-1)
        valid = self.is_valid(state, jnp.broadcast_to(steps[:, None], (steps.shape[0], e)).reshape(-1), env)
        return (filled * e - jnp.sum(stored & ~valid)).astype(jnp.int32)

    def update_priorities(
        self, state: DevicePrioritizedReplayState, index: jax.Array, priority: jax.Array
    ) -> DevicePrioritizedReplayState:
        """Sets raw priorities `priority` [B] (stored as priority^alpha) for flat slots `index` [B].

        Slots no longer valid keep mass 0; indices outside [0, rows * num_envs) are dropped (a
        caller can mask an update that way); negative or non-finite priorities count as 0.
        """
        index = jnp.asarray(index, jnp.int32).reshape(-1)
        priority = jnp.asarray(priority, jnp.float32).reshape(-1)
        priority = jnp.where(jnp.isfinite(priority) & (priority > 0), priority, 0.0)
        t, env = self.locate(state, jnp.clip(index, 0, self.num_slots - 1))
        valid = self.is_valid(state, t, env)
        mass = jnp.where(valid, priority**self.alpha, 0.0)
        return state.replace(tree=jax_sum_tree.set_priorities(state.tree, index, mass))

    # ------------------------------------------------------------------------------ sampling
    def sample_indices(
        self, state: DevicePrioritizedReplayState, rng: jax.Array, batch_size: int
    ) -> tuple[jax.Array, jax.Array]:
        """Starts drawn proportionally to their mass: (logical steps t [B], environments env [B])."""
        index = jax_sum_tree.sample(state.tree, rng, batch_size, self.stratified)
        return self.locate(state, index)

    def sample(self, state: DevicePrioritizedReplayState, rng: jax.Array, batch_size: int) -> Batch:
        """A prioritized batch: `DeviceReplayBuffer.gather` of the drawn starts, with `weight` the
        normalised importance weights and `index` the flat slots for `update_priorities`."""
        t, env = self.sample_indices(state, rng, batch_size)
        batch = self.gather(state, t, env)
        return batch.replace(weight=self.importance_weights(state, batch.index))

    def importance_weights(self, state: DevicePrioritizedReplayState, index: jax.Array) -> jax.Array:
        """(N * P(i))^-beta / max over the batch, float32 [B]; all 1 while no slot has mass."""
        total = jax_sum_tree.total(state.tree)
        safe_total = jnp.where(total > 0, total, 1.0)
        probability = jax_sum_tree.get(state.tree, index) / safe_total
        # A zero probability (impossible from `sample` while total > 0) would give an infinite
        # weight: such a slot gets weight 0 instead.
        weight = jnp.where(probability > 0, (state.num_valid * probability) ** -self.beta, 0.0)
        weight = weight / jnp.maximum(jnp.max(weight), jnp.finfo(jnp.float32).tiny)
        return jnp.where(total > 0, weight, 1.0).astype(jnp.float32)


__all__ = ["DevicePrioritizedReplayBuffer", "DevicePrioritizedReplayState"]
