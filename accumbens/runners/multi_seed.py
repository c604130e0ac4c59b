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

Gin: `create_runner.default_runner = 'multi_seed'`, `MultiSeedRunner.seeds = (0, 1, 2)`; the
schedule (`num_iterations`, `training_steps`, ...) comes from the `Runner.*` bindings unless
given to `MultiSeedRunner`, so a host-runner gin file runs unchanged. For ale-py's vector
environment bind `MultiSeedRunner.create_batched_environment_fn = @create_vector_atari_environment`
(default: an `EnvironmentList` of `create_environment()` instances).
"""
from __future__ import annotations

import concurrent.futures
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
    """A host `Batch` as few device transfers: each transfer costs ~150 us of latency on the
    device machine whatever its size, and a Batch has seven arrays. The frames go as they are;
    action, reward, discount and weight go as one float32 [4, B] array (actions are small
    integers, exact in float32); `index` stays on the host (only priorities need it). Batches of
    other types, or with a mask, are transferred leaf by leaf."""
    if type(batch) is not Batch or batch.mask is not None:
        return jax.device_put(batch)
    small = np.stack([batch.action.astype(np.float32), batch.reward, batch.discount, batch.weight]).astype(np.float32)
    return {"packed_frames": (jax.device_put(batch.observation), jax.device_put(batch.next_observation)),
            "packed_small": jax.device_put(small)}


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


class BatchedAgent:
    """N host agents of one kind behind stacked states and batched, compiled calls.

    The per-seed host agents (`HostAgent` subclasses) keep their replay, sample generator and
    checkpoint format; this class holds the stacked device state and keys while a run is in
    progress and writes them back (`sync_to_agents`) before checkpoints. All compiled bodies are
    the host agent's own `_act` / `_update_and_act`, mapped over seeds, so any agent that runs in
    the host runner runs here. With N = 1 they are called without `vmap`, so the arithmetic is
    exactly the single-seed shell's.
    """

    def __init__(self, agents: Sequence):
        self.agents = list(agents)
        self.num = len(self.agents)
        first = self.agents[0]
        self.state = _stack([a.state for a in self.agents])
        self.rng = jnp.stack([a._rng for a in self.agents])
        self.losses: list[tuple[np.ndarray, jax.Array]] = []  # (due mask, device losses [N]) per update

        def mapped(fn, in_axes):
            if self.num > 1:
                return jax.vmap(fn, in_axes=in_axes)
            def single(*args):
                args = [_index(a, 0) if ax == 0 else a for a, ax in zip(args, in_axes)]
                return jax.tree.map(lambda leaf: leaf[None], fn(*args))
            return single

        act_eval = mapped(lambda s, r, o, e: first._act(s, r, o, e, training=False), (0, 0, 0, 0))
        act_train = mapped(lambda s, r, o, e: first._act(s, r, o, e, training=True), (0, 0, 0, 0))
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
            new_state, new_rng, metrics = update(state, rng, batch, env_steps)
            state = _select(due, new_state, state)
            rng = jnp.where(due[:, None], new_rng, rng)
            return state, rng, metrics["loss"], metrics.get("priorities")

        self.act = jax.jit(act_fn, static_argnames="training")
        self.update_and_act = jax.jit(update_and_act_fn)
        self.update = jax.jit(update_fn)

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
        action_space = self.environment.single_action_space
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ValueError(f"accumbens agents need a Discrete action space, got {action_space}")
        space = self.environment.single_observation_space
        agents = [
            create_agent_fn(num_actions=int(action_space.n), observation_shape=space.shape,
                            observation_dtype=space.dtype, seed=s)
            for s in seeds
        ]
        self.agent = BatchedAgent(agents)
        first = agents[0]
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
        """One batch per due seed, copied to the device; returns (host batches, device batches [N]).

        Seeds not due get a due seed's device batch (their update is computed and discarded), so
        nothing is copied twice; the batched update stacks them on the device.
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
        observation = self.environment.reset([_phase_seed(s, iteration, phase) for s in self.seeds])
        self.timings["environment"] += time.perf_counter() - t
        if training and self.act_before_update:
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
