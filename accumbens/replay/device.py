"""The device form of the shared replay: JAX arrays and pure `add` / `sample`, for `jit` and `lax.scan`.

`DeviceReplayBuffer` is a static configuration (capacity, shapes, n, k, gamma) whose methods are
pure functions of a `DeviceReplayState` pytree, so a whole buffer lives inside a compiled training
loop and can be `vmap`ped over seeds and sharded over devices. It hands agents the same `Batch` as
the host `ReplayBuffer` (`accumbens.replay.circular`), with the same semantics:

  reward           = sum_{k<m} gamma^k r_{t+k+1}, m = min(n, steps until the episode ended)
  discount         = gamma^m, or 0 when the episode terminated (not truncated) at step t+m-1;
                     truncation bootstraps from the episode's final observation
  observation      = the k most recent frames up to o_t, oldest first on a new last axis, zeros
                     before the episode start (stacks never cross an episode start)
  next_observation = the same stack at step t+m
  weight = 1 (uniform), index = flat slot index (for `update_priorities`, a no-op here).

Storage (differences from the host form, documented restriction)
----------------------------------------------------------------
The buffer is written by `num_envs` environments in lock step: every `add` takes one step of each
environment (arrays with a leading `[E]` axis) and writes row `count % rows` of time-major arrays
`[rows, E, ...]`, `rows = capacity // num_envs`. Each column is one environment's stream, so
n-step windows and frame stacks are contiguous rows of one column.

Each row stores the step's observation o_t *and* its next observation o_{t+1} (the episode's final
observation when it ended there), instead of the host form's single copy plus one "final slot" per
episode. That doubles observation memory (2 x 400 bytes per MinAtar step as uint8: 64 seeds of a
100k buffer take about 5 GB) and keeps `add` a fixed-shape write, which is what `lax.scan` needs. It
is meant for small observations (MinAtar, classic control); Atari-size memories use the host form.
Because there are no final slots, a capacity of C holds C steps here but slightly fewer on the host
(one slot per episode goes to its final observation), so the two evict at different times.

Valid starts
------------
A written step t (of environment e) is a valid sample start iff its n-step window is complete
(the episode ended within the written steps t..t+n-1, or t+n-1 is written) and its stack does not
reach back to an overwritten row. Sampling draws t uniformly from the written rows and redraws
invalid ones (at most `n - 1 + k - 1` per column are invalid, so one round almost always suffices;
with n = k = 1 every written row is valid and there is no redraw loop). Sampling from a buffer with
no valid start returns a batch of arbitrary (finite) transitions: callers gate learning on
`num_steps(state) >= min_replay_history`, as the host runner does.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from accumbens.replay.batch import Batch

_MAX_REDRAW_ROUNDS = 32


@flax.struct.dataclass
class DeviceReplayState:
    """A device replay's contents (a pytree; rows = capacity // num_envs, E = num_envs).

    observation, next_observation: [rows, E, *obs_shape] storage dtype
    action: [rows, E] int32; reward: [rows, E] float32 (r_{t+1})
    terminated: [rows, E] bool (the episode reached a terminal state after this step)
    ended: [rows, E] bool (terminated or truncated after this step)
    episode_step: [rows, E] int32 (the step's position in its episode)
    next_episode_step: [E] int32; count: [] int32 (rows written since creation, per column)
    """

    observation: jax.Array
    action: jax.Array
    reward: jax.Array
    terminated: jax.Array
    ended: jax.Array
    next_observation: jax.Array
    episode_step: jax.Array
    next_episode_step: jax.Array
    count: jax.Array


@dataclasses.dataclass(frozen=True)
class DeviceReplayBuffer:
    """Static configuration plus pure functions over `DeviceReplayState` (see the module docstring).

    Args:
      capacity: steps held in total (over all environments); rows per environment = capacity // num_envs.
      observation_shape: shape of one observation, e.g. (10, 10, 4) for MinAtar.
      observation_dtype: storage dtype (uint8 for MinAtar's 0/1 channels, float32 for classic control).
      num_envs: E, environments written in lock step by each `add`.
      stack_size: k, frames stacked on a new last axis.
      update_horizon: n of the n-step return.
      gamma: discount factor.
    """

    capacity: int
    observation_shape: Sequence[int]
    observation_dtype: Any = np.uint8
    num_envs: int = 1
    stack_size: int = 1
    update_horizon: int = 1
    gamma: float = 0.99

    def __post_init__(self):
        object.__setattr__(self, "observation_shape", tuple(int(d) for d in self.observation_shape))
        object.__setattr__(self, "observation_dtype", np.dtype(self.observation_dtype))
        if self.num_envs < 1 or self.stack_size < 1 or self.update_horizon < 1:
            raise ValueError(
                f"num_envs, stack_size and update_horizon must be >= 1; got {self.num_envs}, "
                f"{self.stack_size}, {self.update_horizon}"
            )
        if self.rows < self.stack_size + self.update_horizon:
            raise ValueError(
                f"capacity {self.capacity} gives {self.rows} rows per environment for {self.num_envs} "
                f"environments; need at least stack_size + update_horizon = "
                f"{self.stack_size + self.update_horizon}. Raise the capacity."
            )
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")

    @property
    def rows(self) -> int:
        return int(self.capacity) // int(self.num_envs)

    # ------------------------------------------------------------------------------ state
    def init(self) -> DeviceReplayState:
        r, e = self.rows, self.num_envs
        obs = jnp.zeros((r, e) + self.observation_shape, self.observation_dtype)
        return DeviceReplayState(
            observation=obs,
            action=jnp.zeros((r, e), jnp.int32),
            reward=jnp.zeros((r, e), jnp.float32),
            terminated=jnp.zeros((r, e), bool),
            ended=jnp.zeros((r, e), bool),
            next_observation=obs,
            episode_step=jnp.zeros((r, e), jnp.int32),
            next_episode_step=jnp.zeros((e,), jnp.int32),
            count=jnp.zeros((), jnp.int32),
        )

    def num_steps(self, state: DeviceReplayState) -> jax.Array:
        """Steps held now (over all environments)."""
        return jnp.minimum(state.count, self.rows) * self.num_envs

    def add(
        self,
        state: DeviceReplayState,
        observation: jax.Array,
        action: jax.Array,
        reward: jax.Array,
        terminated: jax.Array,
        truncated: jax.Array,
        next_observation: jax.Array,
        count: jax.Array | None = None,
    ) -> DeviceReplayState:
        """Stores one step of every environment (all arguments have a leading [E] axis).

        observation: o_t; action: a_t; reward: r_{t+1}; terminated/truncated: how the episode ended
        after this step (both True counts as terminated); next_observation: o_{t+1}, the final
        observation when the episode ended (gymnax's `info['final_observation']`).
        count: optional, must equal `state.count`. Buffers `vmap`ped in lock step (one per seed)
        can pass it unbatched, which makes the write an in-place slice update instead of a scatter.
        """
        slot = (state.count if count is None else count) % self.rows
        terminated = jnp.asarray(terminated, bool)
        ended = terminated | jnp.asarray(truncated, bool)

        def put(buf, value):
            return jax.lax.dynamic_update_index_in_dim(buf, jnp.asarray(value, buf.dtype), slot, 0)

        # `replace` keeps the state's own type, so subclasses (the prioritized form) inherit `add`.
        return state.replace(
            observation=put(state.observation, observation),
            action=put(state.action, action),
            reward=put(state.reward, reward),
            terminated=put(state.terminated, terminated),
            ended=put(state.ended, ended),
            next_observation=put(state.next_observation, next_observation),
            episode_step=put(state.episode_step, state.next_episode_step),
            next_episode_step=jnp.where(ended, 0, state.next_episode_step + 1).astype(jnp.int32),
            count=state.count + 1,
        )

    def update_priorities(self, state: DeviceReplayState, index: jax.Array, priority: jax.Array) -> DeviceReplayState:
        """Uniform replay has no priorities: returns `state` unchanged (same verb as the host form)."""
        del index, priority
        return state

    def locate(self, state: DeviceReplayState, index: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The inverse of `Batch.index`: (logical step t, environment env) now stored in flat slots
        `index` = row * num_envs + env. A row never written maps to a negative t (never valid)."""
        index = jnp.asarray(index, jnp.int32)
        row, env = index // self.num_envs, index % self.num_envs
        newest = state.count - 1
        return newest - (newest - row) % self.rows, env

    # ------------------------------------------------------------------------------ sampling
    def _horizon(self, state: DeviceReplayState, t: jax.Array, env: jax.Array) -> jax.Array:
        """m for logical steps t [B] of environments env [B]."""
        n = self.update_horizon
        if n == 1:
            return jnp.ones_like(t)
        offsets = jnp.arange(n, dtype=t.dtype)
        u = t[:, None] + offsets  # [B, n]
        ended = state.ended[u % self.rows, env[:, None]] & (u < state.count)
        return jnp.where(ended.any(axis=1), jnp.argmax(ended, axis=1) + 1, n).astype(t.dtype)

    def is_valid(self, state: DeviceReplayState, t: jax.Array, env: jax.Array) -> jax.Array:
        """Whether logical steps t [B] of environments env [B] are valid sample starts now."""
        t = jnp.asarray(t, jnp.int32)
        env = jnp.asarray(env, jnp.int32)
        oldest = state.count - jnp.minimum(state.count, self.rows)
        m = self._horizon(state, t, env)
        back = jnp.minimum(self.stack_size - 1, state.episode_step[t % self.rows, env])
        return (t >= oldest) & (t < state.count) & (t + m - 1 < state.count) & (t - back >= oldest)

    def sample_indices(self, state: DeviceReplayState, rng: jax.Array, batch_size: int) -> tuple[jax.Array, jax.Array]:
        """Uniform valid starts: (logical steps t [B], environments env [B])."""
        filled = jnp.maximum(jnp.minimum(state.count, self.rows), 1)
        oldest = state.count - jnp.minimum(state.count, self.rows)

        def draw(key):
            t_key, e_key = jax.random.split(key)
            t = oldest + jax.random.randint(t_key, (batch_size,), 0, filled, dtype=jnp.int32)
            env = jax.random.randint(e_key, (batch_size,), 0, self.num_envs, dtype=jnp.int32)
            return t, env

        rng, key = jax.random.split(rng)
        t, env = draw(key)
        if self.update_horizon == 1 and self.stack_size == 1:
            return t, env  # every written row is a valid start

        def cond(carry):
            i, _, t, env = carry
            return (i < _MAX_REDRAW_ROUNDS) & ~jnp.all(self.is_valid(state, t, env))

        def body(carry):
            i, rng, t, env = carry
            rng, key = jax.random.split(rng)
            new_t, new_env = draw(key)
            ok = self.is_valid(state, t, env)
            return i + 1, rng, jnp.where(ok, t, new_t), jnp.where(ok, env, new_env)

        _, _, t, env = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), rng, t, env))
        return t, env

    def sample(self, state: DeviceReplayState, rng: jax.Array, batch_size: int) -> Batch:
        """Samples `batch_size` transitions uniformly (with replacement) from the valid starts.

        Returns a `Batch` of JAX arrays: observation/next_observation [B, *obs_shape, k] (storage
        dtype), action [B] int32, reward/discount/weight [B] float32, index [B] int32.
        """
        t, env = self.sample_indices(state, rng, batch_size)
        return self.gather(state, t, env)

    def _stack(self, state: DeviceReplayState, t: jax.Array, env: jax.Array, frames: int) -> jax.Array:
        """The `frames` most recent observations up to logical step t: [B, *obs_shape, frames]."""
        offsets = jnp.arange(-(frames - 1), 1, dtype=t.dtype)  # oldest first
        rows = (t[:, None] + offsets) % self.rows  # [B, frames]
        obs = state.observation[rows, env[:, None]]  # [B, frames, *obs_shape]
        real = (-offsets)[None, :] <= state.episode_step[t % self.rows, env][:, None]
        obs = jnp.where(real.reshape(real.shape + (1,) * len(self.observation_shape)), obs, 0)
        return jnp.moveaxis(obs, 1, -1).astype(self.observation_dtype)

    def gather(self, state: DeviceReplayState, t: jax.Array, env: jax.Array) -> Batch:
        """The batch for valid logical steps t [B] of environments env [B] (see the module docstring)."""
        t = jnp.asarray(t, jnp.int32)
        env = jnp.asarray(env, jnp.int32)
        n, k, rows = self.update_horizon, self.stack_size, self.rows
        m = self._horizon(state, t, env)
        last = (t + m - 1) % rows
        powers = jnp.asarray(self.gamma ** np.arange(n + 1), jnp.float32)
        if n == 1:
            reward = state.reward[t % rows, env]
        else:
            offsets = jnp.arange(n, dtype=t.dtype)
            window = state.reward[(t[:, None] + offsets) % rows, env[:, None]]  # [B, n]
            reward = jnp.sum(jnp.where(offsets[None, :] < m[:, None], window * powers[:n], 0.0), axis=1)
        discount = powers[m] * (~state.terminated[last, env]).astype(jnp.float32)
        final = state.next_observation[last, env][..., None].astype(self.observation_dtype)
        if k == 1:
            observation = state.observation[t % rows, env][..., None].astype(self.observation_dtype)
            next_observation = final
        else:
            observation = self._stack(state, t, env, k)
            # The stack at t+m: the k-1 newest frames of the stack at t+m-1, then o_{t+m}.
            next_observation = jnp.concatenate([self._stack(state, t + m - 1, env, k - 1), final], axis=-1)
        return Batch(
            observation=observation,
            action=state.action[t % rows, env],
            reward=reward.astype(jnp.float32),
            next_observation=next_observation,
            discount=discount,
            weight=jnp.ones(t.shape, jnp.float32),
            index=(t % rows) * self.num_envs + env,
        )


__all__ = ["DeviceReplayBuffer", "DeviceReplayState"]
