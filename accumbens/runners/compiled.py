"""The compiled runner: the whole training loop under `jit`, many seeds at once, on any number of devices.

`CompiledRunner` runs the same agent as the host `Runner` (built by `create_agent`, so every gin
binding of the agent applies; only its pure `init`/`act`/`update` and its hyperparameters are used)
on a JAX-native environment (gymnax, via `create_jax_environment`). One iteration is two compiled
programs:

  training phase   `lax.scan` over chunks of `update_period` agent steps: one update (sampled from
                   the device replay, `accumbens.replay.device`) when the replay holds at least
                   `min_replay_history` steps, then `update_period` steps of the vectorised
                   environments (epsilon-greedy acting, transitions into replay). This is the host
                   runner's order: update (if due) before acting at every step where
                   `env_steps % update_period == 0`. Target syncs happen inside the agent's update.
  evaluation phase greedy acting (`training=False`) on separate environment copies, reset at the
                   start of every evaluation phase, no updates.

Seeds: both programs are `jax.vmap`ped over a leading seed axis (seeds `seed .. seed+num_seeds-1`);
the seed axis is sharded over all visible devices with a 1-D `jax.sharding.Mesh` ('seeds'), so the
same command uses one GPU or eight (the number of devices used is the largest divisor of the
number of members, `num_seeds` times the swept settings, not above the device count). Seed i of a many-seed run computes what a one-seed run
with seed i computes. Under `accumbens.train --distributed` the devices are those of several
processes (hosts, `jax.distributed`), and process 0 writes every file (`runners/distributed.py`).

Differences from the host runner (documented, by design):
  * phases are a fixed number of agent steps (`training_steps` and `evaluation_steps` rounded up to
    whole vectorised steps/chunks), not "whole episodes until at least N steps": training episodes
    continue across iteration boundaries, and the episode statistics of a phase are the returns of
    the episodes that *completed* during it (NaN when none did);
  * evaluation runs on `num_eval_envs` environments for `ceil(evaluation_steps / num_eval_envs)`
    vectorised steps; episodes still running at the end of the phase are not counted;
  * episodes are truncated at `max_steps_per_episode` through gymnax's own time limit
    (`max_steps_in_episode`), which bootstraps (truncated, not terminated);
  * replay holds `capacity` steps split over the `num_envs` training environments, and stores each
    step's next observation explicitly (see `accumbens.replay.device`); agents with
    `replay_scheme = 'prioritized'` (Rainbow) get its prioritized form
    (`accumbens.replay.device_prioritized`: proportional PER with the host buffer's gin-bound
    alpha, beta and stratified sampling; priorities from the agent's `metrics['priorities']`
    after every update).

Hyperparameter sweeps: `hyperparameters={'create_optimizer.learning_rate': (1e-4, 3e-4, 1e-3)}`
(or the gin binding `CompiledRunner.hyperparameters = {...}`, e.g. through `--gin_bindings`) makes
every (values, seed) pair a member of the vmapped axis, sharded like seeds: 3 values x 4 seeds is
one program of 12 members. Several bindings give their grid (product). Only values that are
traced agent state can be swept (the shapes of every member must agree): the optimizer's
`create_optimizer.learning_rate` and `create_optimizer.eps`, which `create_optimizer` injects into
the optimizer state (`optax.inject_hyperparams`); each member's values are written into its
state at initialisation. Any other binding is refused with an error naming those that can be
swept; run it as separate experiments. Member i of a sweep computes what a one-value run with its
values and seed computes.

Outputs, per seed under `base_dir/seed_<n>/` (a sweep: `base_dir/<binding>=<value>/.../seed_<n>/`,
one folder level per swept binding, values as Python writes them, e.g.
`create_optimizer.learning_rate=0.0003/seed_0/`): `metrics.csv`, `metrics.jsonl`, `tensorboard/` with
the host runner's keys. Shared: `base_dir/config.gin` (the same configuration guard as the host
runner) and `base_dir/checkpoints/ckpt-<iteration>/` (one flax msgpack file per member,
`seed_<n>.msgpack`, or for a sweep its folder name with '/' written '__', plus JSON metadata,
written atomically by `CheckpointManager`; no pickle). Restarting with the same `base_dir` resumes
from the last complete checkpoint and reproduces the uninterrupted run's numbers exactly on CPU.

Settings left unset (None) fall back to the host runner's gin bindings (`Runner.training_steps`,
...) and environment name (`create_environment.name`), so a config written for the host runner
runs unchanged with `--runner compiled`.
"""
from __future__ import annotations

import inspect
import itertools
import json
import math
import os
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.serialization
import flax.struct
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from accumbens.agents.registry import create_agent
from accumbens.environments.jax_envs import create_jax_environment
from accumbens.replay.device import DeviceReplayBuffer, DeviceReplayState
from accumbens.replay.device_prioritized import DevicePrioritizedReplayBuffer
from accumbens.runners import distributed
from accumbens.runners import runner as host_runner
from accumbens.runners.checkpoints import CheckpointManager
from accumbens.runners.logging import StatisticsWriter

_METADATA_FILE = "compiled_runner.json"
# Settings that may change when a finished run is extended.
_RESUMABLE = ("num_iterations",)
# Bindings a sweep can vmap over: gin binding -> key of the injected optimizer hyperparameters
# (`opt_state.hyperparams`, see `accumbens.agents.dqn.create_optimizer`).
_TRACED_HYPERPARAMETERS = {
    "create_optimizer.learning_rate": "learning_rate",
    "create_optimizer.eps": "eps",
}
_INJECTED = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)


def _injected_states(tree: Any) -> list:
    """The optax inject-hyperparameters states inside `tree` (an agent state)."""
    is_injected = lambda node: isinstance(node, _INJECTED)  # noqa: E731
    return [node for node in jax.tree.leaves(tree, is_leaf=is_injected) if is_injected(node)]


def _set_injected(tree: Any, key: str, value: jax.Array) -> Any:
    """`tree` with hyperparameter `key` of every injected optimizer state set to `value`."""

    def put(node):
        if isinstance(node, _INJECTED) and key in node.hyperparams:
            hyperparams = dict(node.hyperparams)
            hyperparams[key] = jnp.asarray(value, hyperparams[key].dtype)
            return node._replace(hyperparams=hyperparams)
        return node

    return jax.tree.map(put, tree, is_leaf=lambda node: isinstance(node, _INJECTED))


@flax.struct.dataclass
class SeedState:
    """Everything one seed carries between compiled steps (the runner stacks it over seeds).

    agent: the agent's state (its `env_steps` counts training agent steps over all envs);
    replay: `DeviceReplayState`; env_state: gymnax states [E]; stack: the agent's frame stacks
    [E, *obs_shape, k] (storage dtype); episode_return: running training returns [E];
    rng: PRNG key; loss_sum, update_count: over the current training phase.
    """

    agent: Any
    replay: DeviceReplayState
    env_state: Any
    stack: jax.Array
    episode_return: jax.Array
    rng: jax.Array
    loss_sum: jax.Array
    update_count: jax.Array


def _runner_default(name: str):
    return inspect.signature(host_runner.Runner.__init__).parameters[name].default


def _gin_or(binding: str, fallback):
    try:
        return gin.query_parameter(binding)
    except (ValueError, KeyError):
        return fallback


def _is_minatar(env) -> bool:
    return "minatar" in type(env).__module__.lower() or "MinAtar" in getattr(env, "name", "")


def _push(stack: jax.Array, observation: jax.Array, reset: jax.Array) -> jax.Array:
    """Adds `observation` [E, *obs] as the newest frame; rows with `reset` [E] start from zeros."""
    shifted = jnp.concatenate([stack[..., 1:], observation[..., None]], axis=-1)
    fresh = jnp.concatenate([jnp.zeros_like(stack[..., 1:]), observation[..., None]], axis=-1)
    reset = reset.reshape(reset.shape + (1,) * (stack.ndim - 1))
    return jnp.where(reset, fresh, shifted)


@gin.configurable
class CompiledRunner:
    """Trains `num_seeds` seeds of an agent on a gymnax environment, end to end under `jit`.

    Args:
      base_dir: where config.gin, checkpoints/ and seed_<n>/ go.
      create_agent_fn: builds the (host) agent; its `.agent` pure functions and hyperparameters
        (min_replay_history, update_period, batch_size, stack_size, replay capacity, gamma,
        update_horizon) are used.
      environment_name: a `create_jax_environment` name; None: `create_jax_environment.name` or
        else `create_environment.name` from gin ('minatar:breakout' -> gymnax Breakout-MinAtar with
        all 6 actions, 'gym:CartPole-v1' -> gymnax CartPole-v1).
      num_iterations, training_steps, evaluation_steps, max_steps_per_episode, seed: as the host
        Runner's (None: the value bound for `Runner.<name>` in gin, else the Runner's default).
      num_seeds: seeds seed .. seed + num_seeds - 1, one program.
      num_envs: training environments per seed (1 reproduces the host runner's data stream shape).
      num_eval_envs: evaluation environments per seed.
      checkpoint_every: checkpoint after every this many iterations (and after the last one).
      checkpoints_to_keep, tensorboard: as the host Runner's.
      use_all_devices: shard the seed axis over all visible devices (else use the default one).
      scan_unroll: `lax.scan` unroll factor of the training loop (fewer loop iterations on GPUs,
        longer compilation); results do not depend on it.
      hyperparameters: {gin binding: values} to sweep in the same program (see the module
        docstring), e.g. {'create_optimizer.learning_rate': (1e-4, 3e-4)}; members are the grid of
        values times the seeds, listed in `members` / `member_names`.
    """

    def __init__(
        self,
        base_dir: str,
        create_agent_fn: Callable[..., Any] = create_agent,
        *,
        environment_name: Optional[str] = None,
        num_iterations: Optional[int] = None,
        training_steps: Optional[int] = None,
        evaluation_steps: Optional[int] = None,
        max_steps_per_episode: Optional[int] = None,
        seed: Optional[int] = None,
        num_seeds: int = 1,
        num_envs: int = 1,
        num_eval_envs: int = 1,
        checkpoint_every: int = 1,
        checkpoints_to_keep: int = 3,
        tensorboard: bool = True,
        use_all_devices: bool = True,
        scan_unroll: int = 1,
        hyperparameters: Optional[Mapping[str, Sequence[float]]] = None,
    ):
        def setting(name, value):
            return value if value is not None else _gin_or(f"Runner.{name}", _runner_default(name))

        self.num_iterations = int(setting("num_iterations", num_iterations))
        self.training_steps = int(setting("training_steps", training_steps))
        self.evaluation_steps = int(setting("evaluation_steps", evaluation_steps))
        self.max_steps_per_episode = int(setting("max_steps_per_episode", max_steps_per_episode))
        self.seed = int(setting("seed", seed))
        if self.num_iterations < 1 or self.training_steps < 1 or self.evaluation_steps < 0 or self.max_steps_per_episode < 1:
            raise ValueError(
                "CompiledRunner needs num_iterations >= 1, training_steps >= 1, evaluation_steps >= 0 and "
                f"max_steps_per_episode >= 1; got {self.num_iterations}, {self.training_steps}, "
                f"{self.evaluation_steps}, {self.max_steps_per_episode}"
            )
        if num_seeds < 1 or num_envs < 1 or num_eval_envs < 1 or checkpoint_every < 1:
            raise ValueError(
                f"num_seeds, num_envs, num_eval_envs and checkpoint_every must be >= 1; got {num_seeds}, "
                f"{num_envs}, {num_eval_envs}, {checkpoint_every}"
            )
        self.base_dir = os.path.abspath(base_dir)
        self.num_seeds = num_seeds
        self.seeds = [self.seed + i for i in range(num_seeds)]
        self.num_envs = num_envs
        self.num_eval_envs = num_eval_envs
        self.checkpoint_every = checkpoint_every
        self.tensorboard = tensorboard
        self.scan_unroll = int(scan_unroll)

        # ----- environment
        if environment_name is None:
            environment_name = _gin_or("create_jax_environment.name", None) or _gin_or("create_environment.name", None)
        if environment_name is None:
            raise ValueError(
                "CompiledRunner needs a JAX environment: bind CompiledRunner.environment_name (or "
                "create_environment.name) to e.g. 'minatar:breakout' or 'gym:CartPole-v1'."
            )
        self.environment_name = environment_name
        self.env, env_params = create_jax_environment(environment_name)
        if hasattr(env_params, "max_steps_in_episode"):
            env_params = env_params.replace(max_steps_in_episode=self.max_steps_per_episode)
        self.env_params = env_params
        obs_spec = jax.eval_shape(lambda k: self.env.reset(k, self.env_params)[0], jax.random.PRNGKey(0))
        self.observation_shape = tuple(obs_spec.shape)
        self.observation_dtype = np.dtype(np.uint8) if _is_minatar(self.env) else np.dtype(obs_spec.dtype)
        self.num_actions = int(self.env.num_actions)

        # ----- agent (the host shell is built once, for its gin-configured pure core and settings)
        shell = create_agent_fn(
            num_actions=self.num_actions,
            observation_shape=self.observation_shape,
            observation_dtype=self.observation_dtype,
            seed=self.seed,
        )
        self.prioritized = bool(getattr(shell, "_prioritized", False))
        self.agent = shell.agent
        self.stack_size = int(shell.stack_size)
        self.batch_size = int(shell.batch_size)
        self.min_replay_history = int(shell.min_replay_history)
        self.update_period = int(shell.update_period)
        self.stacked_shape = self.observation_shape + (self.stack_size,)
        replay_kwargs = dict(
            capacity=int(shell.replay.capacity),
            observation_shape=self.observation_shape,
            observation_dtype=self.observation_dtype,
            num_envs=num_envs,
            stack_size=self.stack_size,
            update_horizon=int(shell.replay.update_horizon),
            gamma=float(shell.replay.gamma),
        )
        if self.prioritized:  # the host buffer's gin-bound alpha, beta and stratified
            self.replay = DevicePrioritizedReplayBuffer(
                **replay_kwargs, alpha=shell.replay.alpha, beta=shell.replay.beta, stratified=shell.replay.stratified
            )
        else:
            self.replay = DeviceReplayBuffer(**replay_kwargs)
        del shell
        # ----- members: every (swept values, seed), the vmapped (and sharded) axis
        self.hyperparameters = self._check_hyperparameters(hyperparameters)
        grid = itertools.product(*self.hyperparameters.values())
        self.members = [
            {"hyperparameters": dict(zip(self.hyperparameters, values)), "seed": seed}
            for values in grid
            for seed in self.seeds
        ]
        self.num_members = len(self.members)
        self.member_names = [
            "/".join([f"{k}={v!r}" for k, v in m["hyperparameters"].items()] + [f"seed_{m['seed']}"]) for m in self.members
        ]
        if self.replay.rows * num_envs < self.min_replay_history:
            raise ValueError(
                f"replay capacity {self.replay.capacity} is below min_replay_history {self.min_replay_history}: "
                "the agent would never learn. Raise ReplayBuffer.capacity."
            )

        # ----- schedule: a chunk is `ticks_per_chunk` vectorised steps preceded by `updates_per_chunk` updates
        p, e = self.update_period, num_envs
        if p % e and e % p:
            raise ValueError(
                f"num_envs ({e}) and update_period ({p}) must divide one another so that updates fall "
                "on whole vectorised steps."
            )
        self.ticks_per_chunk = max(1, p // e)
        self.updates_per_chunk = max(1, e // p)
        self.chunks_per_phase = math.ceil(self.training_steps / (e * self.ticks_per_chunk))
        self.ticks_per_phase = self.chunks_per_phase * self.ticks_per_chunk
        self.steps_per_phase = self.ticks_per_phase * e  # per seed
        self.eval_ticks = math.ceil(self.evaluation_steps / num_eval_envs) if self.evaluation_steps else 0

        # ----- devices
        devices = jax.devices() if use_all_devices else jax.devices()[:1]
        used = max(d for d in range(1, len(devices) + 1) if self.num_members % d == 0)
        if jax.process_count() > 1:  # several processes (jax.distributed): each holds a share of the members
            devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
            used = len(devices)
            if not use_all_devices or self.num_members % used:
                raise ValueError(
                    f"a run over {jax.process_count()} processes shards its members over all {used} devices: "
                    f"the number of members ({self.num_members}: num_seeds x hyperparameter settings) must be "
                    f"a multiple of {used}, with use_all_devices=True"
                )
        self.mesh = Mesh(np.array(devices[:used]), ("seeds",))
        self.seed_sharding = NamedSharding(self.mesh, PartitionSpec("seeds"))
        replicated = NamedSharding(self.mesh, PartitionSpec())
        self._init_fn = jax.jit(jax.vmap(self._init_seed), in_shardings=self.seed_sharding, out_shardings=self.seed_sharding)
        self._train_fn = jax.jit(
            self._train_phase,
            in_shardings=(self.seed_sharding, replicated),
            out_shardings=(self.seed_sharding, self.seed_sharding),
            donate_argnums=0,
        )
        self._eval_fn = jax.jit(
            jax.vmap(self._eval_seed),
            in_shardings=self.seed_sharding,
            out_shardings=(self.seed_sharding, self.seed_sharding),
            donate_argnums=0,
        )

        resumable = host_runner._RESUMABLE_BINDINGS + tuple(
            f"CompiledRunner.{prefix}{name}" for prefix in ("", "resolved_") for name in _RESUMABLE
        )
        if distributed.is_main_process():  # several processes: process 0 writes (runners/distributed.py)
            host_runner.claim_base_dir(self.base_dir, self._config_text(), resumable)
        self.checkpoints = CheckpointManager(os.path.join(self.base_dir, "checkpoints"), keep=checkpoints_to_keep)

    # ----- configuration guard (the host runner's, plus the settings resolved from Runner.*) --------
    def _config_text(self) -> str:
        resolved = {
            "environment_name": self.environment_name,
            "num_iterations": self.num_iterations,
            "training_steps": self.training_steps,
            "evaluation_steps": self.evaluation_steps,
            "max_steps_per_episode": self.max_steps_per_episode,
            "seed": self.seed,
        }
        if self.hyperparameters:  # also when passed as an argument rather than bound in gin
            resolved["hyperparameters"] = self.hyperparameters
        lines = [gin.operative_config_str().rstrip(), "", "# CompiledRunner settings after falling back to Runner.* bindings:"]
        lines += [f"CompiledRunner.resolved_{k} = {v!r}" for k, v in resolved.items()]
        return "\n".join(lines) + "\n"

    def _check_hyperparameters(self, hyperparameters) -> dict[str, tuple[float, ...]]:
        """The sweep as {binding: values}, after checking that every binding is traced agent state."""
        if not hyperparameters:
            return {}
        shapes = jax.eval_shape(lambda key: self.agent.init(key, self.stacked_shape, self.num_actions), jax.random.PRNGKey(0))
        injected = {key for state in _injected_states(shapes) for key in state.hyperparams}
        sweepable = sorted(name for name, key in _TRACED_HYPERPARAMETERS.items() if key in injected)
        checked = {}
        for name, values in dict(hyperparameters).items():
            if name not in sweepable:
                raise ValueError(
                    f"CompiledRunner cannot vmap over {name!r}: it is not traced state of this agent (it fixes "
                    "shapes or is compiled in as a constant). Bindings it can vmap over: "
                    f"{sweepable}. Run other settings as separate experiments."
                )
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise ValueError(f"hyperparameters[{name!r}] must be a non-empty list of numbers, got {values!r}")
            if not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values):
                raise ValueError(
                    f"hyperparameters[{name!r}] must hold numbers (one scalar per member, so that all members "
                    f"have the same shapes), got {values!r}"
                )
            values = tuple(float(v) for v in values)
            if len(set(values)) != len(values):
                raise ValueError(f"hyperparameters[{name!r}] must be distinct values, got {values!r}")
            checked[name] = values
        return checked

    def member_dir(self, member: int) -> str:
        """Output folder of member `member` (`base_dir/seed_<n>`, or under its swept values)."""
        return os.path.join(self.base_dir, *self.member_names[member].split("/"))

    def _member_file(self, member: int) -> str:
        """Checkpoint file name of member `member` (`seed_<n>.msgpack` without a sweep)."""
        return self.member_names[member].replace("/", "__") + ".msgpack"

    # ----- pure, per-seed pieces (vmapped over seeds) ----------------------------------------------
    def _reset_envs(self, key, count):
        obs, env_state = jax.vmap(self.env.reset, in_axes=(0, None))(jax.random.split(key, count), self.env_params)
        stack = jnp.zeros((count,) + self.stacked_shape, self.observation_dtype)
        return env_state, _push(stack, obs.astype(self.observation_dtype), jnp.ones((count,), bool))

    def _step_envs(self, key, env_state, action, count):
        obs, env_state, reward, terminated, truncated, info = jax.vmap(self.env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(key, count), env_state, action, self.env_params
        )
        final = info["final_observation"].astype(self.observation_dtype)
        return obs.astype(self.observation_dtype), env_state, reward.astype(jnp.float32), terminated, truncated, final

    def _init_seed(self, member: jax.Array) -> SeedState:
        """The fresh state of member `member` (an index into `members`): its seed's keys, as the
        host agent shell draws them, and its swept values written into the agent state."""
        seed = jnp.asarray([m["seed"] for m in self.members], jnp.int32)[member]
        init_key, rng = jax.random.split(jax.random.PRNGKey(seed))  # as the host agent shell does
        agent_state = self.agent.init(init_key, self.stacked_shape, self.num_actions)
        for name in self.hyperparameters:
            values = jnp.asarray([m["hyperparameters"][name] for m in self.members], jnp.float32)
            agent_state = _set_injected(agent_state, _TRACED_HYPERPARAMETERS[name], values[member])
        rng, env_key = jax.random.split(rng)
        env_state, stack = self._reset_envs(env_key, self.num_envs)
        return SeedState(
            agent=agent_state,
            replay=self.replay.init(),
            env_state=env_state,
            stack=stack,
            episode_return=jnp.zeros((self.num_envs,), jnp.float32),
            rng=rng,
            loss_sum=jnp.zeros((), jnp.float32),
            update_count=jnp.zeros((), jnp.int32),
        )

    def _train_tick(self, s: SeedState, tick: jax.Array) -> tuple[SeedState, jax.Array]:
        """One vectorised training step (the phase's `tick`-th overall, the same for every seed);
        returns the returns of episodes that ended ([E], else NaN)."""
        rng, act_key, env_key = jax.random.split(s.rng, 3)
        action = self.agent.act(s.agent, s.stack, act_key, True)
        obs, env_state, reward, terminated, truncated, final = self._step_envs(env_key, s.env_state, action, self.num_envs)
        replay = self.replay.add(s.replay, s.stack[..., -1], action, reward, terminated, truncated, final, count=tick)
        ended = terminated | truncated
        episode_return = s.episode_return + reward
        completed = jnp.where(ended, episode_return, jnp.nan)
        agent_state = s.agent.replace(env_steps=s.agent.env_steps + self.num_envs)
        new = s.replace(
            agent=agent_state,
            replay=replay,
            env_state=env_state,
            stack=_push(s.stack, obs, ended),
            episode_return=jnp.where(ended, 0.0, episode_return),
            rng=rng,
        )
        return new, completed

    def _update(self, s: SeedState, due: jax.Array):
        """One update from replay; returns the fields it changes (agent, rng, loss statistics, and
        the prioritized replay's sum tree, else None).

        The caller keeps the agent, rng and loss results only where `due`; prioritized replay
        gets the new priorities (the agent's `metrics['priorities']`) only where `due`, by
        sending out-of-range indices otherwise (cheaper than selecting between two trees).
        """
        rng, sample_key, update_key = jax.random.split(s.rng, 3)
        batch = self.replay.sample(s.replay, sample_key, self.batch_size)
        agent_state, metrics = self.agent.update(s.agent, batch, update_key)
        tree = None  # only the sum tree changes (returning the whole replay would copy its storage)
        if self.prioritized:
            if "priorities" not in metrics:
                raise ValueError(
                    "prioritized replay needs the agent's update to return metrics['priorities'] (one raw "
                    "priority per sample); this agent's metrics are " + repr(sorted(metrics))
                )
            index = jnp.where(due, batch.index, -1)
            tree = self.replay.update_priorities(s.replay, index, metrics["priorities"]).tree
        return agent_state, rng, s.loss_sum + metrics["loss"], s.update_count + 1, tree

    def _train_phase(self, states: SeedState, start_tick: jax.Array) -> tuple[SeedState, jax.Array]:
        """A training phase for all seeds: returns (states, completed-episode returns [S, T, E])."""
        states = states.replace(loss_sum=jnp.zeros_like(states.loss_sum), update_count=jnp.zeros_like(states.update_count))

        def chunk(states, i):
            tick = start_tick + i * self.ticks_per_chunk
            # The same for every seed (all step in lock step), so it stays a scalar outside vmap.
            due = jnp.minimum(tick, self.replay.rows) * self.num_envs >= self.min_replay_history
            for _ in range(self.updates_per_chunk):
                agent_state, rng, loss_sum, count, tree = jax.vmap(self._update, in_axes=(0, None))(states, due)
                keep = lambda new, old: jnp.where(due, new, old)  # noqa: E731
                states = states.replace(
                    agent=jax.tree.map(keep, agent_state, states.agent),
                    rng=keep(rng, states.rng),
                    loss_sum=keep(loss_sum, states.loss_sum),
                    update_count=keep(count, states.update_count),
                )
                if tree is not None:  # new priorities, written only where due
                    states = states.replace(replay=states.replay.replace(tree=tree))
            # `tick` is unbatched (outside vmap): replay writes are slice updates, not scatters.
            step = jax.vmap(self._train_tick, in_axes=(0, None))
            if self.ticks_per_chunk == 1:  # no inner loop (one loop iteration less per step on GPUs)
                states, completed = step(states, tick)
                return states, completed[None]
            ticks = tick + jnp.arange(self.ticks_per_chunk, dtype=jnp.int32)
            states, completed = jax.lax.scan(lambda s, t: step(s, t), states, ticks)
            return states, completed  # completed: [ticks_per_chunk, S, E]

        states, completed = jax.lax.scan(
            chunk, states, jnp.arange(self.chunks_per_phase, dtype=jnp.int32), unroll=self.scan_unroll
        )
        completed = completed.reshape((self.ticks_per_phase,) + completed.shape[2:])
        return states, jnp.moveaxis(completed, 1, 0)

    def _eval_seed(self, s: SeedState) -> tuple[SeedState, jax.Array]:
        """A greedy evaluation phase on fresh environment copies: (state, completed returns [T, E_eval])."""
        rng, reset_key, loop_key = jax.random.split(s.rng, 3)
        count = self.num_eval_envs
        env_state, stack = self._reset_envs(reset_key, count)

        def tick(carry, _):
            env_state, stack, episode_return, key = carry
            key, act_key, env_key = jax.random.split(key, 3)
            action = self.agent.act(s.agent, stack, act_key, False)
            obs, env_state, reward, terminated, truncated, _ = self._step_envs(env_key, env_state, action, count)
            ended = terminated | truncated
            episode_return = episode_return + reward
            completed = jnp.where(ended, episode_return, jnp.nan)
            carry = (env_state, _push(stack, obs, ended), jnp.where(ended, 0.0, episode_return), key)
            return carry, completed

        carry = (env_state, stack, jnp.zeros((count,), jnp.float32), loop_key)
        _, completed = jax.lax.scan(tick, carry, None, length=self.eval_ticks)
        return s.replace(rng=rng), completed

    # ----- host side --------------------------------------------------------------------------------
    def init_states(self) -> SeedState:
        """Fresh states for all members, sharded over the mesh: a `SeedState` with a leading [M] axis."""
        members = distributed.global_array(np.arange(self.num_members, dtype=np.int32), self.seed_sharding)
        return self._init_fn(members)

    def train_phase(self, states: SeedState, iteration: int) -> tuple[SeedState, np.ndarray]:
        """Runs iteration `iteration`'s training phase (donates `states`); returns completed returns [S, T, E]."""
        states, completed = self._train_fn(states, jnp.asarray(iteration * self.ticks_per_phase, jnp.int32))
        return states, completed

    def eval_phase(self, states: SeedState) -> tuple[SeedState, np.ndarray]:
        return self._eval_fn(states)

    def seed_dir(self, seed: int) -> str:
        return os.path.join(self.base_dir, f"seed_{seed}")

    @staticmethod
    def _phase_stats(name: str, completed: np.ndarray, steps: int, seconds: float) -> dict:
        returns = completed[~np.isnan(completed)]
        return {
            f"{name}_episodes": int(returns.size),
            f"{name}_return_mean": float(np.mean(returns)) if returns.size else float("nan"),
            f"{name}_return_median": float(np.median(returns)) if returns.size else float("nan"),
            f"{name}_steps": int(steps),
            f"{name}_seconds": seconds,
            f"{name}_steps_per_second": steps / seconds if seconds > 0 else float("nan"),
        }

    def run_iteration(self, states: SeedState, iteration: int) -> tuple[SeedState, list[dict]]:
        """One training and one evaluation phase for all seeds; returns (states, one record per seed)."""
        start = time.perf_counter()
        states, train_completed = self.train_phase(states, iteration)
        train_completed = distributed.to_host(train_completed)  # every process: all seeds
        train_seconds = time.perf_counter() - start
        loss_sum, update_count, env_steps = distributed.to_host((states.loss_sum, states.update_count, states.agent.env_steps))
        eval_completed, eval_seconds = None, 0.0
        if self.eval_ticks:
            start = time.perf_counter()
            states, eval_completed = self.eval_phase(states)
            eval_completed = distributed.to_host(eval_completed)
            eval_seconds = time.perf_counter() - start
        records = []
        for i in range(self.num_members):
            record = {"iteration": iteration}
            record.update(self._phase_stats("train", train_completed[i], self.steps_per_phase, train_seconds))
            count = int(update_count[i])
            record["loss"] = float(loss_sum[i]) / count if count else float("nan")
            record["update_steps"] = count
            if eval_completed is not None:
                record.update(self._phase_stats("eval", eval_completed[i], self.eval_ticks * self.num_eval_envs, eval_seconds))
            record["total_train_steps"] = int(env_steps[i])
            records.append(record)
        return states, records

    # ----- checkpoints ------------------------------------------------------------------------------
    def _save(self, states: SeedState, iteration: int) -> None:
        host = distributed.to_host(states)  # several processes: all gather, process 0 writes
        if not distributed.is_main_process():
            return

        def write(directory: str) -> None:
            for i in range(self.num_members):
                one = jax.tree.map(lambda x: x[i], host)
                with open(os.path.join(directory, self._member_file(i)), "wb") as f:
                    f.write(flax.serialization.to_bytes(one))
            with open(os.path.join(directory, _METADATA_FILE), "w") as f:
                meta = {"iteration": iteration, "seeds": self.seeds, "members": self.member_names, "num_envs": self.num_envs}
                json.dump(meta, f)

        self.checkpoints.save(iteration, write, metadata={"iteration": iteration, "seeds": self.seeds})

    def _restore(self) -> tuple[Optional[SeedState], int]:
        """(restored states or None, first iteration still to run)."""
        shapes = jax.eval_shape(self._init_fn, jax.ShapeDtypeStruct((self.num_members,), jnp.int32))
        template = jax.tree.map(lambda x: np.zeros(x.shape[1:], x.dtype), shapes)
        loaded: dict = {}

        def read(path: str, manifest: dict) -> None:
            with open(os.path.join(path, _METADATA_FILE)) as f:
                meta = json.load(f)
            members = meta.get("members", [f"seed_{seed}" for seed in meta["seeds"]])
            if members != self.member_names or meta["num_envs"] != self.num_envs:
                raise ValueError(
                    f"checkpoint holds members {members} (num_envs {meta['num_envs']}), not {self.member_names}"
                )
            per_seed = []
            for i in range(self.num_members):
                with open(os.path.join(path, self._member_file(i)), "rb") as f:
                    per_seed.append(flax.serialization.from_bytes(template, f.read()))
            loaded["states"] = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *per_seed)

        restored = self.checkpoints.restore_latest(read) if distributed.is_main_process() else None
        # Several processes: process 0 reads the checkpoint and sends it to the others.
        restored = int(distributed.broadcast_from_0(np.int32(-1 if restored is None else restored)))
        if restored < 0:
            return None, 0
        if not distributed.is_main_process():
            loaded["states"] = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes)
        states = distributed.broadcast_from_0(loaded["states"])
        return distributed.global_tree(states, self.seed_sharding), restored + 1

    def run_experiment(self) -> list[list[dict]]:
        """Runs (or resumes) all seeds; returns, per iteration run now, the records of all seeds."""
        states, start = self._restore()
        if states is None:
            states = self.init_states()
        main = distributed.is_main_process()  # several processes: process 0 logs every seed
        writers = [
            StatisticsWriter(self.member_dir(i), resume_after_iteration=start - 1 if start else None, tensorboard=self.tensorboard)
            for i in range(self.num_members)
        ] if main else []
        if start >= self.num_iterations:
            print(f"[accumbens] {self.base_dir}: all {self.num_iterations} iterations already complete")
        elif start > 0:
            print(f"[accumbens] resuming {self.base_dir} at iteration {start}")
        processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
        population = f"{self.num_seeds} seed(s)"
        if self.hyperparameters:
            population = f"{self.num_members} members ({population} x {self.num_members // self.num_seeds} hyperparameter settings)"
        print(
            f"[accumbens] compiled runner: {population} on {self.mesh.devices.size} "
            f"{jax.devices()[0].platform} device(s){processes}, {self.environment_name}, {self.steps_per_phase} training "
            "steps per seed per iteration",
            flush=True,
        )
        all_records = []
        try:
            for iteration in range(start, self.num_iterations):
                states, records = self.run_iteration(states, iteration)
                now = time.time()
                for writer, record in zip(writers, records):
                    record["wall_time"] = now
                    writer.write(record)
                if (iteration + 1) % self.checkpoint_every == 0 or iteration + 1 == self.num_iterations:
                    self._save(states, iteration)
                all_records.append(records)
                print(_summary(records), flush=True)
        finally:
            for writer in writers:
                writer.close()
        return all_records


def _summary(records: list[dict]) -> str:
    def mean(key):
        values = [r[key] for r in records if key in r and np.isfinite(r[key])]
        return float(np.mean(values)) if values else float("nan")

    parts = [f"iter {records[0]['iteration']}", f"{len(records)} seed(s)"]
    parts.append(f"train return {mean('train_return_mean'):.2f}")
    if "eval_return_mean" in records[0]:
        parts.append(f"eval return {mean('eval_return_mean'):.2f}")
    rate = records[0]["train_steps_per_second"] * len(records)
    parts.append(f"{rate:.0f} steps/s over all seeds")
    if np.isfinite(mean("loss")):
        parts.append(f"loss {mean('loss'):.4f}")
    return "[accumbens] " + ", ".join(parts)


__all__ = ["CompiledRunner", "SeedState"]
