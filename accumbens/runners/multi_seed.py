"""Several seeds of one agent in one process: batched acting, vmapped updates, overlapped learning.

`MultiSeedRunner` runs the host `Runner`'s experiment for N seeds side by side. Per seed it keeps
what a separate run keeps (its own host agent with its replay, NumPy sample generator and JAX key,
its own environment, statistics files and checkpoints under `base_dir/seed_<s>/`, written in the
`Runner`'s format), and it batches what can be batched:

  * the N agent states are stacked (a leading axis N on every leaf);
  * one compiled call picks the actions of all seeds (vmapped `act`: one forward pass);
  * one compiled call makes the gradient steps of all seeds that are due (vmapped `update`;
    seeds not due keep their state bit for bit);
  * the environments step together (`batched_env.EnvironmentList` for any gymnasium environment,
    `vector_atari.VectorAtariEnv` for ale-py's threaded vector environment).

Seeds advance in lock step, one agent step per tick. Each seed runs its phases exactly as a
`Runner` would (whole episodes until at least `training_steps`, environment reseeded per phase,
updates every `update_period` of its own agent steps); a seed whose phase is complete waits for
the others. With N = 1 and `act_before_update=False` the numbers are those of a `Runner` with
that seed (same returns, losses and checkpoints, on CPU).

Schedules
---------
`act_before_update=False` (Dopamine's order, the default): on an update step the agent first
learns, then acts with the new parameters, so acting waits for the update.

`act_before_update=True` (training phases): every tick acts first, with the parameters from
before this tick's update, and sends the actions to the environments; while the emulators step
(ale-py's C++ threads), the host stores the previous tick's transitions, samples the replay and
dispatches the update, which runs on the accelerator during the environment step (JAX dispatch
is asynchronous; the next act depends on the new state, so the accelerator orders them). Each
sample sees exactly the transitions Dopamine's order would (all up to the previous step); only
the action of an update step uses the older parameters. Losses stay on the device until the end
of the phase: the only per-step host synchronisation is fetching the actions (and the last
update's priorities, for prioritized replay, before the next transition is stored).

`overlap=False` runs the same schedule serially (the environments step to completion first,
then the host work, then the update is waited for): identical numbers, which the tests check,
and `timings` then attribute the wall time to environment, acting, update and replay.

Device frames and batching options
----------------------------------
`device_frames` (default: on when JAX's backend is not the CPU): each seed's replay frames are
mirrored on the device (`DeviceFrames`); a tick sends its new frames once, in the same compiled
call that acts, and an update sends only its sample's frame rows. Identical numbers (tested).
`act_map` / `update_map`: how seeds are batched inside the compiled calls ('vmap', 'map',
'unroll'; see `map_over_seeds`). `pipeline=True` (training phases with `act_before_update`,
`overlap` and device frames): two groups of seeds with their own environments take turns, so
acting for one group overlaps the other group's environment step (`_pipelined_loop`; identical
numbers, tested).

Gin: `create_runner.default_runner = 'multi_seed'`, `MultiSeedRunner.seeds = (0, 1, 2)`; the
schedule (`num_iterations`, `training_steps`, ...) comes from the `Runner.*` bindings unless
given to `MultiSeedRunner`, so a host-runner gin file runs unchanged. For ale-py's vector
environment bind `MultiSeedRunner.create_batched_environment_fn = @create_vector_atari_environment`
(default: an `EnvironmentList` of `create_environment()` instances).
"""
from __future__ import annotations

import concurrent.futures
import functools
import inspect
import os
import sys
import time
from typing import Callable, Optional, Sequence

import gin
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from accumbens.agents.registry import create_agent
from accumbens.replay.batch import Batch
from accumbens.environments import create_environment
from accumbens.environments import vector_atari  # noqa: F401  (registers @create_vector_atari_environment)
from accumbens.runners.batched_env import EnvironmentList
from accumbens.runners.checkpoints import CheckpointManager
from accumbens.runners.logging import StatisticsWriter
from accumbens.runners.runner import Runner, _phase_seed, _summary, claim_base_dir

_SCHEDULE = ("num_iterations", "training_steps", "evaluation_steps", "max_steps_per_episode", "checkpoints_to_keep")
TIMED = ("environment", "acting", "update", "replay", "other")


def _runner_setting(name: str, value):
    """`value` if given, else the gin binding `Runner.<name>`, else `Runner`'s default."""
    if value is not None:
        return value
    try:
        return gin.query_parameter(f"Runner.{name}")
    except ValueError:
        return inspect.signature(Runner.__init__).parameters[name].default


def seed_directory(base_dir: str, seed: int) -> str:
    """Where seed `seed` of a several-seeds run keeps its config, statistics and checkpoints."""
    return os.path.join(base_dir, f"seed_{seed}")


def _stack(trees):
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _index(tree, i: int):
    return jax.tree.map(lambda leaf: leaf[i], tree)


def pack_batch(batch: Batch):
    """A host `Batch` as few host arrays, handed straight to the compiled update (whose C++ call
    path copies NumPy arguments to the device: ~8 us each on CPU, where a Python
    `jax.device_put` costs ~150 us; see benchmarks/atari_throughput_notes.md). The frames go as
    they are; action, reward, discount and weight go as one float32 [4, B] array (actions are
    small integers, exact in float32); `index` stays on the host (only priorities need it).
    Batches of other types, or with a mask, go leaf by leaf. The arrays are fresh from the
    sampler and never written again, so an asynchronous copy may read them safely."""
    if type(batch) is not Batch or batch.mask is not None:
        return batch
    small = np.stack([batch.action.astype(np.float32), batch.reward, batch.discount, batch.weight]).astype(np.float32)
    return {"packed_frames": (batch.observation, batch.next_observation), "packed_small": small}


def unpack_batch(packed) -> Batch:
    """Inside jit: the `Batch` that `pack_batch` packed."""
    if not (isinstance(packed, dict) and "packed_small" in packed):
        return packed
    (observation, next_observation), small = packed["packed_frames"], packed["packed_small"]
    return Batch(observation=observation, action=small[0].astype(jnp.int32), reward=small[1],
                 next_observation=next_observation, discount=small[2], weight=small[3],
                 index=jnp.zeros(small.shape[1], jnp.int32))


def _select(mask, new, old):
    """Per seed: `new` where mask[i], else `old` (mask [N] broadcast over each leaf)."""
    return jax.tree.map(lambda a, b: jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, old)


SEED_MAPS = ("vmap", "map", "unroll")


def map_over_seeds(fn: Callable, in_axes: Sequence[Optional[int]], num: int, mode: str = "vmap") -> Callable:
    """`fn` applied to each seed: arguments whose `in_axes` entry is 0 carry a leading seed axis.

    mode 'vmap': one batched computation (a convolution with per-seed weights becomes a grouped
      convolution, which may be slow on GPUs, especially its gradient);
    'map': `lax.map`, one seed after the other inside one compiled call, each with the arithmetic
      of a single run (the cost grows linearly with N, no grouped convolutions);
    'unroll': N copies of `fn` in one compiled call (XLA may overlap them; compile time grows with N).
    With num == 1 `fn` is called directly (no vmap), so one seed is exactly the single-seed shell.
    """
    if mode not in SEED_MAPS:
        raise ValueError(f"seed mapping must be one of {SEED_MAPS}, got {mode!r}")

    def split(args, i):
        return [_index(a, i) if ax == 0 else a for a, ax in zip(args, in_axes)]

    if num == 1:
        return lambda *args: jax.tree.map(lambda leaf: leaf[None], fn(*split(args, 0)))
    if mode == "vmap":
        return jax.vmap(fn, in_axes=tuple(in_axes))
    if mode == "unroll":
        return lambda *args: _stack([fn(*split(args, i)) for i in range(num)])

    def mapped(*args):
        seeded = tuple(a for a, ax in zip(args, in_axes) if ax == 0)

        def body(xs):
            it = iter(xs)
            return fn(*[next(it) if ax == 0 else a for a, ax in zip(args, in_axes)])

        return jax.lax.map(body, seeded)

    return mapped


def device_frames_supported(replay) -> bool:
    """Whether `DeviceFrames` can mirror this replay: the plain circular buffer or its prioritized
    form (both sample through `ReplayBuffer._gather`); not sequence or fixed-dataset replays."""
    from accumbens.replay.circular import ReplayBuffer
    from accumbens.replay.prioritized import PrioritizedReplayBuffer

    return type(replay) in (ReplayBuffer, PrioritizedReplayBuffer)


@functools.partial(jax.jit, donate_argnums=0)
def _set_rows(store, seed, rows, values):
    """store[seed, rows] = values, in place (for `DeviceFrames.upload`)."""
    return store.at[seed, rows].set(values)


class DeviceFrames:
    """Every seed's replay frames mirrored on the accelerator, and the acting frame stacks there.

    Why: gathering a batch of stacked Atari frames on the host and copying it to the device cost
    ~0.5 ms per seed per update (numbers in benchmarks/atari_throughput_notes.md). Here each frame
    crosses to the device once, when it is observed (it is needed there for acting anyway); a
    sample sends only its frames' rows ([B, 2k] int32, from `ReplayBuffer.sample_slots`) and the
    compiled update gathers and stacks on the device. The host replay stays the reference (it
    decides validity, draws the samples, computes n-step returns, and is what checkpoints save).

    Layout: `store` [N, R + 2, *frame] with R = capacity + `spare`. The frame written at the
    replay's logical time T (its `add_count` when written; host slot T % capacity) lives in device
    row T % R. Row R is all zeros (the padding frame before an episode start), row R + 1 a scratch
    row for frames that are not stored (evaluation, seeds whose phase is over). Because R exceeds
    the capacity, a frame can be written a few steps before the host replay stores it (the runner
    acts on o_t before storing the transition that precedes it) without overwriting any frame the
    host still holds: the host keeps logical times [A - capacity, A), the device [A + spare - R, ...).
    `stacks` [N, *frame, k]: each seed's acting stack, pushed on the device from the same frame.
    """

    def __init__(self, replays: Sequence, stacked_shape: Sequence[int], dtype, spare: int = 8):
        self.num = len(replays)
        self.capacity = replays[0].capacity
        self.frame_shape = tuple(replays[0].observation_shape)
        self.stack_size = int(stacked_shape[-1])
        self.dtype = np.dtype(dtype)
        self.ring = self.capacity + spare
        self.zero_row, self.scratch_row = self.ring, self.ring + 1
        self.frame_bytes = int(np.prod(self.frame_shape, dtype=np.int64)) * self.dtype.itemsize
        self.store = jnp.zeros((self.num, self.ring + 2, *self.frame_shape), self.dtype)
        self.stacks = jnp.zeros((self.num, *stacked_shape), self.dtype)

    # ----- host side: a tick's frames and a sample's rows, packed as one array each -----------
    def pack_frames(self, frames: np.ndarray, rows: np.ndarray, new_episode: np.ndarray, active: np.ndarray) -> np.ndarray:
        """uint8 [N, frame_bytes + 8]: each seed's frame bytes, its device row (int32), then the
        new-episode and active flags. One array, so a tick makes one host-to-device transfer."""
        out = np.empty((self.num, self.frame_bytes + 8), np.uint8)
        out[:, : self.frame_bytes] = np.ascontiguousarray(frames, self.dtype).reshape(self.num, -1).view(np.uint8)
        out[:, self.frame_bytes : self.frame_bytes + 4] = np.asarray(rows, "<i4").reshape(self.num, 1).view(np.uint8)
        out[:, self.frame_bytes + 4] = new_episode
        out[:, self.frame_bytes + 5] = active
        out[:, self.frame_bytes + 6 :] = 0
        return out

    def device_rows(self, replay, slots: np.ndarray) -> np.ndarray:
        """Device rows of host storage rows `slots` (row `capacity`: the zero frame) of `replay`."""
        a, c = replay.add_count, self.capacity
        if a <= c:  # not wrapped yet: logical time = slot
            return np.where(slots == c, self.zero_row, slots)
        logical = a - 1 - ((a - 1 - slots) % c)  # the newest logical time written to each slot
        return np.where(slots == c, self.zero_row, logical % self.ring)

    def pack_samples(self, replays: Sequence, batches: Sequence) -> np.ndarray:
        """int32 [N, 2k + 4, B] from `sample_slots` batches (None: seed not due, its rows copy a due
        seed's, computed and discarded): frame rows of observation and next observation, action,
        then reward, discount and weight as float32 bits."""
        k = self.stack_size
        filler = next(b for b in batches if b is not None)
        size = filler.action.shape[0]
        out = np.empty((self.num, 2 * k + 4, size), np.int32)
        floats = out.view(np.float32)  # the same memory: reward, discount, weight stored as bits
        for i, (replay, batch) in enumerate(zip(replays, batches)):
            if batch is None:
                replay, batch = replays[batches.index(filler)], filler
            slots = np.concatenate([batch.observation, batch.next_observation], axis=1)  # [B, 2k]
            out[i, : 2 * k] = self.device_rows(replay, slots).T
            out[i, 2 * k] = batch.action
            floats[i, 2 * k + 1] = batch.reward
            floats[i, 2 * k + 2] = batch.discount
            floats[i, 2 * k + 3] = batch.weight
        return out

    def upload(self, i: int, replay, chunk: int = 65536) -> None:
        """Copies seed i's live replay frames to the device (after a checkpoint restore), in chunks
        written in place (the store is donated: no second copy of it on the device)."""
        a, c = replay.add_count, self.capacity
        observation = replay._slot_arrays()["observation"]
        chunk = min(chunk, c)
        for start in range(max(0, a - c), a, chunk):
            logical = np.arange(start, start + chunk)
            logical = np.where(logical < a, logical, logical[0])  # a full-size chunk: one compilation
            self.store = _set_rows(self.store, np.int32(i), (logical % self.ring).astype(np.int32),
                                   observation[logical % c])

    # ----- device side (inside jit) --------------------------------------------------------
    def unpack_frames(self, packed):
        """Inverse of `pack_frames`: frames [N, *frame], rows [N], new_episode [N], active [N]."""
        n, size = packed.shape[0], self.frame_bytes
        raw = packed[:, :size]
        if self.dtype == np.uint8:
            frames = raw
        elif self.dtype == np.bool_:
            frames = raw != 0
        elif self.dtype.itemsize == 1:
            frames = jax.lax.bitcast_convert_type(raw, self.dtype)
        else:
            frames = jax.lax.bitcast_convert_type(raw.reshape(n, -1, self.dtype.itemsize), self.dtype)
        frames = frames.reshape((n, *self.frame_shape))
        rows = jax.lax.bitcast_convert_type(packed[:, size : size + 4], jnp.int32)
        return frames, rows, packed[:, size + 4] != 0, packed[:, size + 5] != 0

    def write(self, store, stacks, packed):
        """Writes a tick's frames at their rows and pushes them on the active seeds' stacks."""
        frames, rows, new_episode, active = self.unpack_frames(packed)
        store = store.at[jnp.arange(self.num), rows].set(frames)
        newest = frames[..., None]
        pushed = jnp.concatenate([stacks[..., 1:], newest], axis=-1)
        fresh = jnp.concatenate([jnp.zeros_like(stacks[..., 1:]), newest], axis=-1)
        expand = (-1,) + (1,) * (stacks.ndim - 1)
        stacks = jnp.where(active.reshape(expand), jnp.where(new_episode.reshape(expand), fresh, pushed), stacks)
        return store, stacks, active

    def gather(self, store, samples) -> Batch:
        """The stacked `Batch` [N, B, ...] of packed sample rows `samples` [N, 2k + 4, B]."""
        k = self.stack_size
        seeds = jnp.arange(self.num)[:, None, None]
        frames = jnp.moveaxis(store[seeds, samples[:, : 2 * k]], 1, -1)  # [N, B, *frame, 2k]
        floats = jax.lax.bitcast_convert_type(samples[:, 2 * k + 1 :], jnp.float32)
        return Batch(observation=frames[..., :k], action=samples[:, 2 * k], reward=floats[:, 0],
                     next_observation=frames[..., k:], discount=floats[:, 1], weight=floats[:, 2],
                     index=jnp.zeros(samples[:, 0].shape, jnp.int32))


class BatchedAgent:
    """N host agents of one kind behind stacked states and batched, compiled calls.

    The per-seed host agents (`HostAgent` subclasses) keep their replay, sample generator and
    checkpoint format; this class holds the stacked device state and keys while a run is in
    progress and writes them back (`sync_to_agents`) before checkpoints. All compiled bodies are
    the host agent's own `_act` / `_update_and_act`, mapped over seeds, so any agent that runs in
    the host runner runs here. With N = 1 they are called without `vmap`, so the arithmetic is
    exactly the single-seed shell's.
    """

    def __init__(self, agents: Sequence, act_map: str = "vmap", update_map: str = "vmap",
                 frames: Optional[DeviceFrames] = None):
        self.agents = list(agents)
        self.num = len(self.agents)
        self.frames = frames
        first = self.agents[0]
        self.state = _stack([a.state for a in self.agents])
        self.rng = jnp.stack([a._rng for a in self.agents])
        self.losses: list[tuple[np.ndarray, jax.Array]] = []  # (due mask, device losses [N]) per update

        def mapped(fn, in_axes, mode=update_map):
            return map_over_seeds(fn, in_axes, self.num, mode)

        act_eval = mapped(lambda s, r, o, e: first._act(s, r, o, e, training=False), (0, 0, 0, 0), act_map)
        act_train = mapped(lambda s, r, o, e: first._act(s, r, o, e, training=True), (0, 0, 0, 0), act_map)
        update_and_act = mapped(first._update_and_act, (0, 0, 0, 0, 0))

        def update_only(state, rng, batch, env_steps):
            state = state.replace(env_steps=jnp.asarray(env_steps, jnp.int32))
            rng, update_key = jax.random.split(rng)
            state, metrics = first.agent.update(state, batch, update_key)
            return state, rng, metrics

        update = mapped(update_only, (0, 0, 0, 0))

        def act_fn(state, rng, stacks, env_steps, active, training: bool):
            actions, new_rng = (act_train if training else act_eval)(state, rng, stacks, env_steps)
            next_steps = env_steps + active.astype(jnp.int32) if training else env_steps
            return actions, jnp.where(active[:, None], new_rng, rng), next_steps

        def update_and_act_fn(state, rng, batches, stacks, env_steps, active, due):
            batch = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[unpack_batch(b) for b in batches])
            return update_and_act_batch(state, rng, batch, stacks, env_steps, active, due)

        def update_and_act_batch(state, rng, batch, stacks, env_steps, active, due):
            new_state, rng_u, actions_u, metrics = update_and_act(state, rng, batch, stacks, env_steps)
            actions_a, rng_a = act_train(state, rng, stacks, env_steps)
            state = _select(due, new_state, state)
            new_rng = jnp.where(due[:, None], rng_u, rng_a)
            rng = jnp.where(active[:, None], new_rng, rng)
            actions = jnp.where(due, actions_u, actions_a)
            next_steps = env_steps + active.astype(jnp.int32)
            return state, rng, actions, next_steps, metrics["loss"], metrics.get("priorities")

        def update_fn(state, rng, batches, env_steps, due):
            batch = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[unpack_batch(b) for b in batches])
            return update_batch(state, rng, batch, env_steps, due)

        def update_batch(state, rng, batch, env_steps, due):
            new_state, new_rng, metrics = update(state, rng, batch, env_steps)
            state = _select(due, new_state, state)
            rng = jnp.where(due[:, None], new_rng, rng)
            return state, rng, metrics["loss"], metrics.get("priorities")

        self.act = jax.jit(act_fn, static_argnames="training")
        self.update_and_act = jax.jit(update_and_act_fn)
        self.update = jax.jit(update_fn)
        if frames is None:
            return

        # Device frames (`DeviceFrames`): `packed` is a tick's frames ([N, bytes] uint8, one
        # transfer), `samples` a sample's frame rows and scalars ([N, 2k + 4, B] int32, one
        # transfer); the frame store and the stacks are donated, so XLA updates them in place.
        def act_frames_fn(state, rng, store, stacks, packed, env_steps, training: bool):
            store, stacks, active = frames.write(store, stacks, packed)
            actions, rng, next_steps = act_fn(state, rng, stacks, env_steps, active, training)
            return actions, rng, next_steps, store, stacks

        def update_and_act_frames_fn(state, rng, store, stacks, packed, samples, env_steps, due):
            store, stacks, active = frames.write(store, stacks, packed)
            batch = frames.gather(store, samples)
            out = update_and_act_batch(state, rng, batch, stacks, env_steps, active, due)
            return (*out, store, stacks)

        def update_frames_fn(state, rng, store, samples, env_steps, due):
            return update_batch(state, rng, frames.gather(store, samples), env_steps, due)

        def write_frames_fn(store, packed):  # final observations: store rows only, no stacks
            frames_, rows, _, _ = frames.unpack_frames(packed)
            return store.at[jnp.arange(self.num), rows].set(frames_)

        def group_act_frames(lo: int, hi: int):
            """`act_frames` computing only seeds lo..hi-1 (a pipeline group): the others' states are
            not read, so acting for half the seeds costs half (where compute, not latency, rules)."""
            acts = {training: map_over_seeds(lambda s, r, o, e, t=training: first._act(s, r, o, e, training=t),
                                             (0, 0, 0, 0), hi - lo, act_map) for training in (False, True)}

            def fn(state, rng, store, stacks, packed, env_steps, training: bool):
                store, stacks, active = frames.write(store, stacks, packed)
                sub = jax.tree.map(lambda leaf: leaf[lo:hi], state)
                actions, new_rng = acts[training](sub, rng[lo:hi], stacks[lo:hi], env_steps[lo:hi])
                mine = active[lo:hi]
                rng = rng.at[lo:hi].set(jnp.where(mine[:, None], new_rng, rng[lo:hi]))
                if training:
                    env_steps = env_steps.at[lo:hi].add(mine.astype(jnp.int32))
                return jnp.zeros(self.num, actions.dtype).at[lo:hi].set(actions), rng, env_steps, store, stacks

            return jax.jit(fn, static_argnames="training", donate_argnames=("store", "stacks"))

        self.group_act_frames = functools.lru_cache(maxsize=None)(group_act_frames)
        self.act_frames = jax.jit(act_frames_fn, static_argnames="training", donate_argnames=("store", "stacks"))
        self.update_and_act_frames = jax.jit(update_and_act_frames_fn, donate_argnames=("store", "stacks"))
        self.update_frames = jax.jit(update_frames_fn)
        self.write_frames = jax.jit(write_frames_fn, donate_argnames="store")

    def pop_training_metrics(self) -> list[dict]:
        """Per seed, the mean loss over its updates since the last call (as `HostAgent` computes it:
        float64 sums of the float32 losses, in order) and their number. One transfer per chunk."""
        sums, counts = [0.0] * self.num, [0] * self.num
        values = jax.device_get([loss for _, loss in self.losses])  # no per-length compilation
        for (due, _), row in zip(self.losses, values):
            for i in np.flatnonzero(due):
                sums[i] += float(row[i])
                counts[i] += 1
        self.losses = []
        return [{"loss": s / c if c else float("nan"), "update_steps": c} for s, c in zip(sums, counts)]

    def sync_to_agents(self) -> None:
        """Writes each seed's state and key back into its host agent (before checkpoints)."""
        for i, agent in enumerate(self.agents):
            agent.state = _index(self.state, i)
            agent._rng = self.rng[i]

    def sync_from_agents(self) -> None:
        """Restacks the host agents' states and keys (after a restore)."""
        self.state = _stack([a.state for a in self.agents])
        self.rng = jnp.stack([a._rng for a in self.agents])


@gin.configurable
class MultiSeedRunner:
    """Runs N seeds of one agent side by side in one process (see the module docstring)."""

    def __init__(
        self,
        base_dir: str,
        create_environment_fn: Callable[[], gym.Env] = create_environment,
        create_agent_fn: Callable[..., object] = create_agent,
        *,
        seeds: Sequence[int] = (0,),
        create_batched_environment_fn: Optional[Callable[..., object]] = None,
        act_before_update: bool = False,
        overlap: bool = True,
        device_frames: Optional[bool] = None,
        act_map: str = "vmap",
        update_map: str = "vmap",
        pipeline: bool = False,
        num_iterations: Optional[int] = None,
        training_steps: Optional[int] = None,
        evaluation_steps: Optional[int] = None,
        max_steps_per_episode: Optional[int] = None,
        checkpoints_to_keep: Optional[int] = None,
        progress_bar: Optional[bool] = None,
        tensorboard: bool = True,
    ):
        seeds = [int(s) for s in seeds]
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"MultiSeedRunner needs one or more distinct seeds, got {seeds}")
        given = dict(num_iterations=num_iterations, training_steps=training_steps, evaluation_steps=evaluation_steps,
                     max_steps_per_episode=max_steps_per_episode, checkpoints_to_keep=checkpoints_to_keep)
        for name in _SCHEDULE:
            setattr(self, name, int(_runner_setting(name, given[name])))
        if self.num_iterations < 1 or self.training_steps < 0 or self.evaluation_steps < 0 or self.max_steps_per_episode < 1:
            raise ValueError(
                "MultiSeedRunner needs num_iterations >= 1, training_steps >= 0, evaluation_steps >= 0 and "
                f"max_steps_per_episode >= 1; got {self.num_iterations}, {self.training_steps}, "
                f"{self.evaluation_steps}, {self.max_steps_per_episode}"
            )
        self.base_dir = os.path.abspath(base_dir)
        self.seeds = seeds
        self.num = len(seeds)
        self.act_before_update = act_before_update
        self.overlap = overlap
        self.progress_bar = progress_bar
        self.tensorboard = tensorboard
        if create_batched_environment_fn is None:
            self.environment = EnvironmentList.create(create_environment_fn, self.num, self.max_steps_per_episode)
        else:
            self.environment = create_batched_environment_fn(num_envs=self.num, max_episode_steps=self.max_steps_per_episode)
        self.pipeline = bool(pipeline) and self.num > 1
        self._group_environments = []
        if self.pipeline:  # two halves of the seeds, each with its own environments (see _pipelined_loop)
            half = (self.num + 1) // 2
            self._groups = [np.arange(half), np.arange(half, self.num)]
            for group in self._groups:
                if create_batched_environment_fn is None:
                    env = EnvironmentList.create(create_environment_fn, len(group), self.max_steps_per_episode)
                else:
                    env = create_batched_environment_fn(num_envs=len(group), max_episode_steps=self.max_steps_per_episode)
                self._group_environments.append(env)
        action_space = self.environment.single_action_space
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ValueError(f"accumbens agents need a Discrete action space, got {action_space}")
        space = self.environment.single_observation_space
        agents = [
            create_agent_fn(num_actions=int(action_space.n), observation_shape=space.shape,
                            observation_dtype=space.dtype, seed=s)
            for s in seeds
        ]
        first = agents[0]
        supported = all(device_frames_supported(a.replay) for a in agents)
        if device_frames is None:  # auto: on an accelerator, where the replay allows it
            device_frames = supported and jax.default_backend() != "cpu"
        elif device_frames and not supported:
            raise ValueError(f"device_frames=True needs the circular (uniform or prioritized) replay, "
                             f"got {type(first.replay).__name__}")
        frames = DeviceFrames([a.replay for a in agents], first.stacked_shape, first.observation_dtype) if device_frames else None
        self.agent = BatchedAgent(agents, act_map=act_map, update_map=update_map, frames=frames)
        self._prioritized = getattr(first, "_prioritized", False)
        self.observation_dtype = first.observation_dtype
        self.stacks = np.zeros((self.num, *first.stacked_shape), first.observation_dtype)
        self.timings = dict.fromkeys(TIMED, 0.0)
        self._masks: dict[bytes, jax.Array] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(self.num, os.cpu_count() or 1))
        config = gin.operative_config_str()
        claim_base_dir(self.base_dir, config)
        self.checkpoints = []
        for s in seeds:
            directory = seed_directory(self.base_dir, s)
            claim_base_dir(directory, config)
            self.checkpoints.append(CheckpointManager(os.path.join(directory, "checkpoints"), keep=self.checkpoints_to_keep))

    # ----- helpers ------------------------------------------------------------------------
    @property
    def agents(self):
        return self.agent.agents

    def _push(self, i: int, observation: np.ndarray, new_episode: bool) -> None:
        """Frame stack of seed i: zeros at an episode start, then oldest out, newest last."""
        stack = self.stacks[i]
        if new_episode:
            stack[...] = 0
        elif stack.shape[-1] > 1:
            stack[..., :-1] = stack[..., 1:]
        stack[..., -1] = observation

    def _due(self, active: np.ndarray) -> np.ndarray:
        """Which seeds make a gradient step on this tick (HostAgent's rule, per seed)."""
        return np.array([bool(active[i]) and a._update_due() for i, a in enumerate(self.agents)])

    def _mask(self, mask: np.ndarray) -> jax.Array:
        """The device copy of a bool mask [N], cached (masks repeat), so a tick transfers none."""
        key = mask.tobytes()
        if key not in self._masks:
            self._masks[key] = jnp.asarray(mask)
        return self._masks[key]

    def _sample(self, due: np.ndarray):
        """One batch per due seed, packed for the compiled update; returns (host batches, packed batches [N]).

        Seeds not due get a due seed's batch (their update is computed and discarded); the
        batched update stacks them on the device.
        """
        start = time.perf_counter()

        def sample(i: int):
            agent = self.agents[i]
            batch = agent.replay.sample(agent._sample_rng, agent.batch_size)
            return batch, pack_batch(batch)

        chosen = np.flatnonzero(due)
        # Seeds' replays and generators are separate, so they can be sampled in parallel (NumPy's
        # gathers release the GIL); the draws are the same as one after the other.
        done = dict(zip(chosen, self._pool.map(sample, chosen) if len(chosen) > 1 else map(sample, chosen)))
        host = [done[i][0] if due[i] else None for i in range(self.num)]
        device = [done[i][1] if due[i] else None for i in range(self.num)]
        filler = next(b for b in device if b is not None)
        device = [filler if b is None else b for b in device]
        self.timings["replay"] += time.perf_counter() - start
        return host, device

    def _apply_priorities(self, due: np.ndarray, host_batches, priorities) -> None:
        if not self._prioritized or priorities is None:
            return
        priorities = np.asarray(priorities)
        for i, agent in enumerate(self.agents):
            if due[i]:
                agent.replay.update_priorities(host_batches[i].index, priorities[i])

    def _observe(self, observation, new_episode, active, last_observation) -> None:
        t = time.perf_counter()
        for i in np.flatnonzero(active):
            observation_i = np.asarray(observation[i], self.observation_dtype)
            self._push(i, observation_i, new_episode[i])
            last_observation[i] = observation_i
        self.timings["other"] += time.perf_counter() - t

    # ----- phases -------------------------------------------------------------------------
    def _run_phase(self, iteration: int, phase: int, min_steps: int, name: str) -> list[dict]:
        """Runs one phase for every seed; returns each seed's phase statistics."""
        n, training = self.num, phase == 0
        for agent in self.agents:
            agent.eval_mode = not training
        start = time.perf_counter()
        self._steps = np.zeros(n, np.int64)
        self._episode_return = np.zeros(n)
        self._returns: list[list[float]] = [[] for _ in range(n)]
        self._min_steps = min_steps
        active = np.ones(n, bool) if min_steps > 0 else np.zeros(n, bool)
        disable = (not sys.stderr.isatty()) if self.progress_bar is None else not self.progress_bar
        self._bar = tqdm.tqdm(total=min_steps * n, desc=f"iter {iteration} {name} x{n}", unit="step", leave=False, disable=disable)
        t = time.perf_counter()
        phase_seeds = [_phase_seed(s, iteration, phase) for s in self.seeds]
        pipelined = (self.pipeline and self.overlap and self.agent.frames is not None
                     and (self.act_before_update or not training))  # evaluation has no updates to order
        if pipelined:  # every phase reseeds its environments, so which objects step them does not matter
            observation = np.concatenate([env.reset([phase_seeds[i] for i in group])
                                          for env, group in zip(self._group_environments, self._groups)])
        else:
            observation = self.environment.reset(phase_seeds)
        self.timings["environment"] += time.perf_counter() - t
        if pipelined:
            self._pipelined_loop(observation, active, training)
        elif self.agent.frames is not None:
            self._frames_loop(observation, active, training, lagged=training and self.act_before_update)
        elif training and self.act_before_update:
            self._lagged_loop(observation, active)
        else:
            self._dopamine_loop(observation, active, training)
        self._bar.close()
        seconds = time.perf_counter() - start
        return [
            {
                f"{name}_episodes": len(r),
                f"{name}_return_mean": float(np.mean(r)) if r else float("nan"),
                f"{name}_return_median": float(np.median(r)) if r else float("nan"),
                f"{name}_steps": int(self._steps[i]),
                f"{name}_seconds": seconds,
                f"{name}_steps_per_second": self._steps[i] / seconds if seconds > 0 else float("nan"),
            }
            for i, r in enumerate(self._returns)
        ]

    def _end_step(self, i: int, reward: float, ended: bool, active: np.ndarray) -> None:
        """Per-seed episode bookkeeping after one environment step."""
        self._episode_return[i] += reward
        self._steps[i] += 1
        if ended:
            self._returns[i].append(float(self._episode_return[i]))
            self._episode_return[i] = 0.0
            if self._steps[i] >= self._min_steps:
                active[i] = False

    def _dopamine_loop(self, observation, active: np.ndarray, training: bool) -> None:
        """Dopamine's order (learn, then act with the new parameters); also every evaluation phase."""
        n, agent = self.num, self.agent
        last_observation = np.zeros((n, *self.stacks.shape[1:-1]), self.observation_dtype)
        new_episode = np.ones(n, bool)
        env_steps = jnp.asarray(np.array([a.env_steps for a in self.agents], np.int32))  # kept on the device
        while active.any():
            self._observe(observation, new_episode, active, last_observation)
            due = self._due(active) if training else np.zeros(n, bool)
            t = time.perf_counter()
            if due.any():
                host_batches, batches = self._sample(due)
                t = time.perf_counter()
                agent.state, agent.rng, actions, env_steps, loss, priorities = agent.update_and_act(
                    agent.state, agent.rng, batches, self.stacks, env_steps, self._mask(active), self._mask(due)
                )
                agent.losses.append((due, loss))
                actions = np.asarray(actions)
                self._apply_priorities(due, host_batches, priorities)
                self.timings["update"] += time.perf_counter() - t
            else:
                actions, agent.rng, env_steps = agent.act(
                    agent.state, agent.rng, self.stacks, env_steps, self._mask(active), training=training
                )
                actions = np.asarray(actions)
                self.timings["acting"] += time.perf_counter() - t
            t = time.perf_counter()
            self.environment.send(actions, active)
            result = self.environment.recv()
            self.timings["environment"] += time.perf_counter() - t
            t = time.perf_counter()
            if training:
                for i in np.flatnonzero(active):
                    self.agents[i].env_steps += 1
            was_active = active.copy()
            for i in np.flatnonzero(was_active):
                reward = float(result.reward[i])
                ended = bool(result.terminated[i] or result.truncated[i])
                if training:
                    final = result.final_observation[i] if ended else None
                    self.agents[i].replay.add(last_observation[i], int(actions[i]), reward, bool(result.terminated[i]),
                                              ended and not result.terminated[i], final_observation=final)
                new_episode[i] = ended
                self._end_step(i, reward, ended, active)
            observation = result.observation
            self._bar.update(int(was_active.sum()))
            self.timings["replay" if training else "other"] += time.perf_counter() - t

    def _lagged_loop(self, observation, active: np.ndarray) -> None:
        """`act_before_update=True`: act, send the actions, and while the emulators step, store the
        previous transition, sample and dispatch the update (see the module docstring)."""
        n, agent = self.num, self.agent
        last_observation = np.zeros((n, *self.stacks.shape[1:-1]), self.observation_dtype)
        new_episode = np.ones(n, bool)
        pending: list = [None] * n  # per seed, the transition to store on the next tick
        in_flight = None  # (due, host batches, device priorities) of the last update
        next_steps = jnp.asarray(np.array([a.env_steps for a in self.agents], np.int32))  # kept on the device
        while active.any():
            self._observe(observation, new_episode, active, last_observation)
            env_steps = next_steps
            t = time.perf_counter()
            actions, agent.rng, next_steps = agent.act(
                agent.state, agent.rng, self.stacks, env_steps, self._mask(active), training=True
            )
            actions = np.asarray(actions)
            self.timings["acting"] += time.perf_counter() - t
            t = time.perf_counter()
            self.environment.send(actions, active)
            result = None if self.overlap else self.environment.recv()
            self.timings["environment"] += time.perf_counter() - t
            # --- while the emulators step: last update's priorities, last transitions, this update
            t = time.perf_counter()
            if in_flight is not None:
                self._apply_priorities(*in_flight)
                in_flight = None
            self._flush(pending)
            due = self._due(active)
            self.timings["replay"] += time.perf_counter() - t
            if due.any():
                host_batches, batches = self._sample(due)
                t = time.perf_counter()
                agent.state, agent.rng, loss, priorities = agent.update(
                    agent.state, agent.rng, batches, env_steps, self._mask(due)
                )
                agent.losses.append((due, loss))
                in_flight = (due, host_batches, priorities)
                if not self.overlap:
                    jax.block_until_ready(agent.state)
                self.timings["update"] += time.perf_counter() - t
            t = time.perf_counter()
            for i in np.flatnonzero(active):
                self.agents[i].env_steps += 1
            self.timings["other"] += time.perf_counter() - t
            if result is None:
                t = time.perf_counter()
                result = self.environment.recv()
                self.timings["environment"] += time.perf_counter() - t
            t = time.perf_counter()
            was_active = active.copy()
            for i in np.flatnonzero(was_active):
                reward = float(result.reward[i])
                terminated = bool(result.terminated[i])
                ended = terminated or bool(result.truncated[i])
                final = result.final_observation[i].copy() if ended else None
                pending[i] = (last_observation[i].copy(), int(actions[i]), reward, terminated, ended and not terminated, final)
                new_episode[i] = ended
                self._end_step(i, reward, ended, active)
            observation = result.observation
            self._bar.update(int(was_active.sum()))
            self.timings["other"] += time.perf_counter() - t
        t = time.perf_counter()
        if in_flight is not None:
            self._apply_priorities(*in_flight)
        self._flush(pending)
        self.timings["replay"] += time.perf_counter() - t

    # ----- the device-frames loop (`DeviceFrames`) -------------------------------------------
    def _sample_slots(self, due: np.ndarray):
        """One `sample_slots` batch per due seed (the same draws as `sample`); returns the host
        batches (for priorities) and their packed rows [N, 2k + 4, B] (host array)."""
        start = time.perf_counter()
        host = [self.agents[i].replay.sample_slots(self.agents[i]._sample_rng, self.agents[i].batch_size)
                if due[i] else None for i in range(self.num)]
        packed = self.agent.frames.pack_samples([a.replay for a in self.agents], host)
        self.timings["replay"] += time.perf_counter() - start
        return host, packed

    def _store(self, i: int, item: tuple, finals: list) -> None:
        """Stores seed i's transition (o_t, a_t, r, terminated, truncated, final, T) in its host
        replay; T is the logical time o_t was written to on the device, checked here. An ended
        episode's final observation goes to `finals` (device row, frame) for `_write_finals`."""
        observation, action, reward, terminated, truncated, final, written_at = item
        replay = self.agents[i].replay
        if replay.add_count != written_at:
            raise RuntimeError(f"seed {self.seeds[i]}: device frame store out of step with the replay "
                               f"(frame written for logical time {written_at}, replay at {replay.add_count})")
        replay.add(observation, action, reward, terminated, truncated, final_observation=final)
        if final is not None:
            finals.append((i, (replay.add_count - 1) % self.agent.frames.ring, final))

    def _write_finals(self, finals: list) -> None:
        """Writes episodes' final observations to their device rows (one call; rare)."""
        if not finals:
            return
        frames = self.agent.frames
        data = np.zeros((self.num, *frames.frame_shape), frames.dtype)
        rows = np.full(self.num, frames.scratch_row, np.int64)
        for i, row, final in finals:
            data[i], rows[i] = final, row
        packed = frames.pack_frames(data, rows, np.zeros(self.num, bool), np.zeros(self.num, bool))
        frames.store = self.agent.write_frames(frames.store, packed)

    def _frames_loop(self, observation, active: np.ndarray, training: bool, lagged: bool) -> None:
        """Both schedules with `DeviceFrames`: each tick sends its frames once (one transfer, one
        compiled call that stores them, pushes the stacks and acts); an update sends only its
        sample's rows. `lagged` (act_before_update) acts first and dispatches the update while the
        environments step; otherwise Dopamine's order (update, then act, in one call)."""
        n, agent, frames = self.num, self.agent, self.agent.frames
        new_episode = np.ones(n, bool)
        pending: list = [None] * n  # lagged: per seed, the transition to store on the next tick
        in_flight = None  # lagged: (due, host batches, device priorities) of the last update
        env_steps = jnp.asarray(np.array([a.env_steps for a in self.agents], np.int32))  # on the device
        no_write = np.full(n, frames.scratch_row, np.int64)
        while active.any():
            t = time.perf_counter()
            if training:  # the logical time o_t will have in the replay (after the pending transition)
                times = [a.replay.add_count + (0 if p is None else 1 + (p[5] is not None))
                         for a, p in zip(self.agents, pending)]
                rows = np.where(active, np.asarray(times) % frames.ring, frames.scratch_row)
            else:
                times, rows = [None] * n, no_write
            packed = frames.pack_frames(observation, rows, new_episode, active)
            last_observation = np.asarray(observation, self.observation_dtype)
            due = self._due(active) if training and not lagged else np.zeros(n, bool)
            self.timings["other"] += time.perf_counter() - t
            host_batches = None
            if due.any():
                host_batches, samples = self._sample_slots(due)
                t = time.perf_counter()
                (agent.state, agent.rng, actions, env_steps, loss, priorities, frames.store,
                 frames.stacks) = agent.update_and_act_frames(agent.state, agent.rng, frames.store, frames.stacks,
                                                              packed, samples, env_steps, self._mask(due))
                agent.losses.append((due, loss))
                actions = np.asarray(actions)
                self._apply_priorities(due, host_batches, priorities)
                self.timings["update"] += time.perf_counter() - t
            else:
                t = time.perf_counter()
                actions, agent.rng, next_steps, frames.store, frames.stacks = agent.act_frames(
                    agent.state, agent.rng, frames.store, frames.stacks, packed, env_steps, training=training)
                actions = np.asarray(actions)
                self.timings["acting"] += time.perf_counter() - t
            t = time.perf_counter()
            self.environment.send(actions, active)
            result = None if (lagged and self.overlap) else self.environment.recv()
            self.timings["environment"] += time.perf_counter() - t
            if lagged:  # while the emulators step: last priorities, last transitions, this update
                t = time.perf_counter()
                if in_flight is not None:
                    self._apply_priorities(*in_flight)
                    in_flight = None
                finals: list = []
                for i in range(n):
                    if pending[i] is not None:
                        self._store(i, pending[i], finals)
                        pending[i] = None
                self._write_finals(finals)
                due = self._due(active)
                self.timings["replay"] += time.perf_counter() - t
                if due.any():
                    host_batches, samples = self._sample_slots(due)
                    t = time.perf_counter()
                    agent.state, agent.rng, loss, priorities = agent.update_frames(
                        agent.state, agent.rng, frames.store, samples, env_steps, self._mask(due))
                    agent.losses.append((due, loss))
                    in_flight = (due, host_batches, priorities)
                    if not self.overlap:
                        jax.block_until_ready(agent.state)
                    self.timings["update"] += time.perf_counter() - t
            if not due.any() or lagged:
                env_steps = next_steps
            if result is None:
                t = time.perf_counter()
                result = self.environment.recv()
                self.timings["environment"] += time.perf_counter() - t
            t = time.perf_counter()
            was_active = active.copy()
            finals = []
            for i in np.flatnonzero(was_active):
                if training:
                    self.agents[i].env_steps += 1
                reward = float(result.reward[i])
                terminated = bool(result.terminated[i])
                ended = terminated or bool(result.truncated[i])
                if training:
                    final = np.array(result.final_observation[i], self.observation_dtype) if ended else None
                    item = (last_observation[i], int(actions[i]), reward, terminated, ended and not terminated, final, times[i])
                    if lagged:
                        pending[i] = item
                    else:
                        self._store(i, item, finals)
                new_episode[i] = ended
                self._end_step(i, reward, ended, active)
            self._write_finals(finals)
            observation = result.observation
            self._bar.update(int(was_active.sum()))
            self.timings["replay" if training and not lagged else "other"] += time.perf_counter() - t
        t = time.perf_counter()
        if in_flight is not None:
            self._apply_priorities(*in_flight)
        finals = []
        for i in range(n):
            if pending[i] is not None:
                self._store(i, pending[i], finals)
        self._write_finals(finals)
        self.timings["replay"] += time.perf_counter() - t

    def _pipelined_loop(self, observation, active: np.ndarray, training: bool = True) -> None:
        """`pipeline=True` (overlapped, device frames; training phases with `act_before_update`, and
        evaluation phases): the seeds are split in two groups with their own environments, which
        take turns: while one group's emulators step, the host acts for the other group, so acting
        (a device round trip) overlaps with stepping.

        Per seed the sequence is the lagged schedule's: act on o_t with the parameters from before
        this tick's update, store the transition of t-1, sample, update, step. Once per cycle (at
        the second group's turn, when both groups have stored t-1) one compiled update serves the
        due seeds of both groups, with the step counters from before the cycle's acting. So every
        seed's numbers are those of `_frames_loop` (tested)."""
        n, agent, frames = self.num, self.agent, self.agent.frames
        observation = np.array(observation, copy=True)
        new_episode = np.ones(n, bool)
        pending: list = [None] * n
        times: list = [None] * n
        last_observation = [None] * n
        actions = np.zeros(n, np.int64)
        acted_at_send = [None, None]  # per group, which seeds its environments are stepping
        in_flight = None
        env_steps = jnp.asarray(np.array([a.env_steps for a in self.agents], np.int32))
        while True:
            steps_before = env_steps  # the counters the lagged update sees
            acted = np.zeros(n, bool)
            for g, (env, group) in enumerate(zip(self._group_environments, self._groups)):
                if acted_at_send[g] is not None:
                    t = time.perf_counter()
                    result = env.recv()
                    self.timings["environment"] += time.perf_counter() - t
                    t = time.perf_counter()
                    stepped = acted_at_send[g]
                    for j, i in enumerate(group):
                        if not stepped[i]:
                            continue
                        reward = float(result.reward[j])
                        terminated = bool(result.terminated[j])
                        ended = terminated or bool(result.truncated[j])
                        if training:
                            final = np.array(result.final_observation[j], self.observation_dtype) if ended else None
                            pending[i] = (last_observation[i], int(actions[i]), reward, terminated,
                                          ended and not terminated, final, times[i])
                        new_episode[i] = ended
                        observation[i] = result.observation[j]
                        self._end_step(i, reward, ended, active)
                    self._bar.update(int(stepped.sum()))
                    acted_at_send[g] = None
                    self.timings["other"] += time.perf_counter() - t
                mine = np.zeros(n, bool)
                mine[group] = active[group]
                if mine.any():
                    t = time.perf_counter()
                    rows = np.full(n, frames.scratch_row, np.int64)
                    for i in np.flatnonzero(mine) if training else ():
                        p = pending[i]
                        times[i] = self.agents[i].replay.add_count + (0 if p is None else 1 + (p[5] is not None))
                        rows[i] = times[i] % frames.ring
                        last_observation[i] = np.array(observation[i], self.observation_dtype)
                    packed = frames.pack_frames(observation, rows, new_episode, mine)
                    self.timings["other"] += time.perf_counter() - t
                    t = time.perf_counter()
                    out, agent.rng, env_steps, frames.store, frames.stacks = agent.group_act_frames(
                        int(group[0]), int(group[-1]) + 1)(agent.state, agent.rng, frames.store, frames.stacks, packed,
                                                           env_steps, training=training)
                    actions[group] = np.asarray(out)[group]
                    self.timings["acting"] += time.perf_counter() - t
                    t = time.perf_counter()
                    env.send(actions[group], mine[group])
                    acted_at_send[g] = mine
                    acted |= mine
                    self.timings["environment"] += time.perf_counter() - t
                t = time.perf_counter()
                if g == 0 and in_flight is not None:
                    self._apply_priorities(*in_flight)
                    in_flight = None
                finals: list = []
                for i in group:
                    if pending[i] is not None:
                        self._store(i, pending[i], finals)
                        pending[i] = None
                self._write_finals(finals)
                self.timings["replay"] += time.perf_counter() - t
            if not acted.any():
                break
            if not training:
                continue
            due = self._due(acted)
            if due.any():
                host_batches, samples = self._sample_slots(due)
                t = time.perf_counter()
                agent.state, agent.rng, loss, priorities = agent.update_frames(
                    agent.state, agent.rng, frames.store, samples, steps_before, self._mask(due))
                agent.losses.append((due, loss))
                in_flight = (due, host_batches, priorities)
                self.timings["update"] += time.perf_counter() - t
            for i in np.flatnonzero(acted):
                self.agents[i].env_steps += 1
        if in_flight is not None:
            self._apply_priorities(*in_flight)

    def _flush(self, pending: list) -> None:
        """Stores each seed's deferred transition (o_t, a_t, r_t+1, terminated, truncated, final)."""
        for i, item in enumerate(pending):
            if item is not None:
                observation, action, reward, terminated, truncated, final = item
                self.agents[i].replay.add(observation, action, reward, terminated, truncated, final_observation=final)
                pending[i] = None

    def run_iteration(self, iteration: int) -> list[dict]:
        """One training and one evaluation phase for every seed; one record per seed."""
        records = [{"iteration": iteration} for _ in self.seeds]
        for record, stats in zip(records, self._run_phase(iteration, 0, self.training_steps, "train")):
            record.update(stats)
        for record, metrics in zip(records, self.agent.pop_training_metrics()):
            record.update(metrics)
        if self.evaluation_steps > 0:
            for record, stats in zip(records, self._run_phase(iteration, 1, self.evaluation_steps, "eval")):
                record.update(stats)
        for record, agent in zip(records, self.agents):
            record["total_train_steps"] = agent.env_steps
        return records

    # ----- checkpoints --------------------------------------------------------------------
    def _save(self, iteration: int) -> None:
        self.agent.sync_to_agents()
        for agent, manager in zip(self.agents, self.checkpoints):
            manager.save(iteration, agent.bundle_and_checkpoint, metadata={"iteration": iteration})

    def _restore(self) -> int:
        """Restores every seed's newest good checkpoint; returns the first iteration to run."""
        restored = [m.restore_latest(lambda path, manifest, a=a: a.unbundle(path)) for a, m in zip(self.agents, self.checkpoints)]
        if any(r is None for r in restored):
            if not all(r is None for r in restored):  # killed between seeds' first saves
                raise RuntimeError(f"{self.base_dir}: some seeds have checkpoints and others none; "
                                   "remove the seed_*/checkpoints folders to start over")
            return 0
        start = min(restored)
        for agent, manager, r in zip(self.agents, self.checkpoints, restored):
            if r != start:  # killed between seeds' saves: go back to the common iteration
                manager.verify(start)
                agent.unbundle(manager.path(start))
        self.agent.sync_from_agents()
        if self.agent.frames is not None:
            for i, agent in enumerate(self.agents):
                self.agent.frames.upload(i, agent.replay)
        return start + 1

    def run_experiment(self) -> list[list[dict]]:
        """Runs (or resumes) the experiment; returns, per iteration run now, the seeds' records."""
        start = self._restore()
        resume = start - 1 if start else None
        writers = [StatisticsWriter(seed_directory(self.base_dir, s), resume_after_iteration=resume, tensorboard=self.tensorboard)
                   for s in self.seeds]
        if start >= self.num_iterations:
            print(f"[accumbens] {self.base_dir}: all {self.num_iterations} iterations already complete")
        elif start > 0:
            print(f"[accumbens] resuming {self.base_dir} at iteration {start}")
        history = []
        try:
            for iteration in range(start, self.num_iterations):
                records = self.run_iteration(iteration)
                now = time.time()
                for seed, record, writer in zip(self.seeds, records, writers):
                    record["wall_time"] = now
                    writer.write(record)
                    print(f"{_summary(record)} (seed {seed})", flush=True)
                self._save(iteration)
                history.append(records)
        finally:
            for writer in writers:
                writer.close()
        return history
