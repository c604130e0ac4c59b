"""The thin stateful shell that lets the host `Runner` drive any pure `Agent`.

It owns what is inherently stateful on the host: the replay buffer, the frame stack used for
acting, the NumPy generator that draws replay samples and the JAX key used for acting and
updates. Each agent step is one compiled call: "update (if due) then act", so the host crosses
into XLA once per environment step.

Verbs follow Dopamine: `begin_episode(obs) -> action`, `step(reward, obs) -> action`,
`end_episode(reward, terminated, final_observation)`, `bundle_and_checkpoint(dir)`, `unbundle(dir)`.
Transitions are stored as (obs_t, a_t, r_{t+1}, terminated, truncated); the final observation of
every episode goes to replay too, so truncated episodes bootstrap from it.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import flax.serialization
import jax
import numpy as np

from accumbens.agents.base import Agent
from accumbens import replay as replay_lib

_AGENT_FILE = "agent_state.msgpack"
_SHELL_FILE = "agent_shell.json"


class HostAgent:
    """Wraps pure `init/act/update` with replay, frame stacking and RNG for the host runner.

    The wrapped state must be a pytree with an `env_steps` field (agent steps taken in training
    mode), which the shell keeps equal to its own counter before every compiled call.
    """

    def __init__(
        self,
        agent: Agent,
        *,
        num_actions: int,
        observation_shape: Sequence[int],
        observation_dtype: np.dtype,
        stack_size: int,
        gamma: float,
        update_horizon: int,
        min_replay_history: int,
        update_period: int,
        batch_size: int,
        replay_scheme: str,
        seed: int,
    ):
        self.agent = agent
        self.num_actions = num_actions
        self.observation_shape = tuple(observation_shape)
        self.observation_dtype = np.dtype(observation_dtype)
        self.stack_size = stack_size
        self.min_replay_history = min_replay_history
        self.update_period = update_period
        self.batch_size = batch_size
        self.eval_mode = False
        self._prioritized = replay_scheme == "prioritized"
        self.replay = replay_lib.create_replay(
            replay_scheme,
            observation_shape=self.observation_shape,
            observation_dtype=self.observation_dtype,
            stack_size=stack_size,
            update_horizon=update_horizon,
            gamma=gamma,
        )
        self.stacked_shape = self.observation_shape + (stack_size,)
        init_key, self._rng = jax.random.split(jax.random.PRNGKey(seed))
        self.state = agent.init(init_key, self.stacked_shape, num_actions)
        self._sample_rng = np.random.default_rng(seed)
        self.env_steps = 0
        self._stack = np.zeros(self.stacked_shape, self.observation_dtype)
        self._last_observation: np.ndarray | None = None
        self._last_action = 0
        self._loss_sum = 0.0
        self._loss_count = 0
        self._act_fn = jax.jit(self._act, static_argnames="training")
        self._update_and_act_fn = jax.jit(self._update_and_act)
        self._update_fn = jax.jit(self._update)
        self._update_many_fn = jax.jit(self._update_many)
        # Optional dataset recording (Runner.record_dataset_dir): a replay.dataset.DatasetWriter
        # that receives every training transition with mu(a|s) from `agent.policy` (NaN if None).
        self.recorder = None
        self._last_probability = float("nan")
        self._policy_fn = jax.jit(self._policy, static_argnames="training") if agent.policy is not None else None

    # ----- compiled bodies -------------------------------------------------------------
    def _act(self, state, rng, observation, env_steps, training: bool):
        state = state.replace(env_steps=jax.numpy.asarray(env_steps, jax.numpy.int32))
        rng, act_key = jax.random.split(rng)
        return self.agent.act(state, observation, act_key, training), rng

    def _update_and_act(self, state, rng, batch, observation, env_steps):
        # A strongly typed int32, so the returned state matches the input and jit never retraces.
        state = state.replace(env_steps=jax.numpy.asarray(env_steps, jax.numpy.int32))
        rng, update_key, act_key = jax.random.split(rng, 3)
        state, metrics = self.agent.update(state, batch, update_key)
        action = self.agent.act(state, observation, act_key, True)
        return state, rng, action, metrics

    def _update(self, state, rng, batch, env_steps):
        state = state.replace(env_steps=jax.numpy.asarray(env_steps, jax.numpy.int32))
        rng, update_key = jax.random.split(rng)
        state, metrics = self.agent.update(state, batch, update_key)
        return state, rng, metrics

    def _update_many(self, state, rng, batches, env_steps):
        """`_update` over a leading axis of K batches with `lax.scan`; returns the K losses."""

        def body(carry, batch):
            state, rng, steps = carry
            state, rng, metrics = self._update(state, rng, batch, steps)
            return (state, rng, steps + self.update_period), metrics["loss"]

        (state, rng, _), losses = jax.lax.scan(body, (state, rng, jax.numpy.asarray(env_steps, jax.numpy.int32)), batches)
        return state, rng, losses

    def _policy(self, state, observation, env_steps, training: bool):
        state = state.replace(env_steps=jax.numpy.asarray(env_steps, jax.numpy.int32))
        return self.agent.policy(state, observation, training)

    # ----- offline learning --------------------------------------------------------------
    def learn(self, num_updates: int, updates_per_call: int = 1) -> None:
        """`num_updates` gradient steps on batches sampled from replay, without acting (offline).

        Each update advances the step counter by `update_period`, as `update_period` agent steps
        do online, so target syncs keep their online spacing in updates (one per
        `target_update_period / update_period` updates). Losses go to `pop_training_metrics`.
        With `updates_per_call` K > 1 (uniform replay only), K batches are sampled at once and
        the K updates run in one compiled `lax.scan`, saving K-1 host round trips.
        """
        num_updates, k = int(num_updates), int(updates_per_call)
        if k > 1 and not self._prioritized:
            while num_updates >= k:
                batch = self.replay.sample(self._sample_rng, k * self.batch_size)
                batches = jax.tree.map(lambda x: x.reshape(k, self.batch_size, *x.shape[1:]), batch)
                self.state, self._rng, losses = self._update_many_fn(self.state, self._rng, batches, self.env_steps)
                self._loss_sum += float(np.sum(losses))
                self._loss_count += k
                self.env_steps += k * self.update_period
                num_updates -= k
        for _ in range(num_updates):
            batch = self.replay.sample(self._sample_rng, self.batch_size)
            self.state, self._rng, metrics = self._update_fn(self.state, self._rng, batch, self.env_steps)
            if self._prioritized:
                self.replay.update_priorities(batch.index, np.asarray(metrics["priorities"]))
            self._loss_sum += float(metrics["loss"])
            self._loss_count += 1
            self.env_steps += self.update_period

    # ----- Dopamine verbs ----------------------------------------------------------------
    def begin_episode(self, observation: np.ndarray) -> int:
        """Starts an episode at `observation`; returns the first action."""
        self._stack[...] = 0
        return self._select(observation)

    def step(self, reward: float, observation: np.ndarray) -> int:
        """Records the last transition (training mode), learns if due, returns the next action."""
        if not self.eval_mode:
            self.replay.add(self._last_observation, self._last_action, reward, False, False)
            if self.recorder is not None:
                self.recorder.add(self._last_observation, self._last_action, reward,
                                  behaviour_probability=self._last_probability)
        return self._select(observation)

    def end_episode(self, reward: float, terminated: bool, final_observation: np.ndarray) -> None:
        """Records the episode's last transition; `terminated=False` means it was truncated."""
        if not self.eval_mode:
            self.replay.add(
                self._last_observation,
                self._last_action,
                reward,
                bool(terminated),
                not terminated,
                final_observation=final_observation,
            )
            if self.recorder is not None:
                self.recorder.add(self._last_observation, self._last_action, reward, bool(terminated),
                                  not terminated, final_observation=final_observation,
                                  behaviour_probability=self._last_probability)

    def _select(self, observation: np.ndarray) -> int:
        observation = np.asarray(observation, self.observation_dtype)
        if self.stack_size > 1:  # shift the frame stack in place: oldest out, newest last
            self._stack[..., :-1] = self._stack[..., 1:]
        self._stack[..., -1] = observation
        self._last_observation = observation
        if self.eval_mode:
            action, self._rng = self._act_fn(self.state, self._rng, self._stack, self.env_steps, training=False)
        elif self._update_due():
            batch = self.replay.sample(self._sample_rng, self.batch_size)
            self.state, self._rng, action, metrics = self._update_and_act_fn(
                self.state, self._rng, batch, self._stack, self.env_steps
            )
            if self._prioritized:
                self.replay.update_priorities(batch.index, np.asarray(metrics["priorities"]))
            self._loss_sum += float(metrics["loss"])
            self._loss_count += 1
        else:
            action, self._rng = self._act_fn(self.state, self._rng, self._stack, self.env_steps, training=True)
        if self.recorder is not None and not self.eval_mode and self._policy_fn is not None:
            probabilities = self._policy_fn(self.state, self._stack, self.env_steps, training=True)
            self._last_probability = float(probabilities[int(action)])
        if not self.eval_mode:
            self.env_steps += 1
        self._last_action = int(action)
        return self._last_action

    def _update_due(self) -> bool:
        return (
            len(self.replay) >= self.min_replay_history
            and self.env_steps % self.update_period == 0
            and self.replay.can_sample(self.batch_size)
        )

    def pop_training_metrics(self) -> dict:
        """Mean loss over the updates since the last call (NaN if there were none)."""
        mean = self._loss_sum / self._loss_count if self._loss_count else float("nan")
        count = self._loss_count
        self._loss_sum, self._loss_count = 0.0, 0
        return {"loss": mean, "update_steps": count}

    # ----- checkpoints -------------------------------------------------------------------
    def bundle_and_checkpoint(self, directory: str) -> None:
        """Writes agent state, RNGs, counters and replay under `directory` (no pickle)."""
        tree = {"state": self.state, "rng": self._rng}
        with open(os.path.join(directory, _AGENT_FILE), "wb") as f:
            f.write(flax.serialization.to_bytes(tree))
        shell = {
            "env_steps": self.env_steps,
            "sample_rng": self._sample_rng.bit_generator.state,
        }
        with open(os.path.join(directory, _SHELL_FILE), "w") as f:
            json.dump(shell, f)
        replay_dir = os.path.join(directory, "replay")
        os.makedirs(replay_dir, exist_ok=True)
        self.replay.save(replay_dir)

    def unbundle(self, directory: str) -> None:
        """Restores what `bundle_and_checkpoint` wrote; raises if anything is missing or corrupt."""
        template = {"state": self.state, "rng": self._rng}
        with open(os.path.join(directory, _AGENT_FILE), "rb") as f:
            tree = flax.serialization.from_bytes(template, f.read())
        self.state = jax.tree.map(jax.numpy.asarray, tree["state"])
        self._rng = jax.numpy.asarray(tree["rng"], dtype=self._rng.dtype)
        with open(os.path.join(directory, _SHELL_FILE)) as f:
            shell = json.load(f)
        self.env_steps = int(shell["env_steps"])
        self._sample_rng.bit_generator.state = shell["sample_rng"]
        self.replay.load(os.path.join(directory, "replay"))
