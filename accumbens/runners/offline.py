"""The offline runner: learn from a fixed dataset, evaluate online.

Each iteration is `training_steps` gradient steps on batches sampled from a fixed dataset (no
environment interaction), then a greedy evaluation phase of at least `evaluation_steps` online
steps, exactly as the host `Runner` evaluates. Logging (CSV, JSON lines, TensorBoard), atomic
checkpoints after every iteration, exact resume and the config guard are the host runner's: this
class only replaces the training phase and the agent's replay.

Datasets: `OfflineRunner.dataset_dir` (an accumbens dataset written by `DatasetWriter`, a run's
`Runner.record_dataset_dir`, or `python -m accumbens.build_datasets`; or a DQN Replay Dataset
`replay_logs` folder with `FixedReplayBuffer.dataset_format = 'dqn_replay'`). The agent's own
replay is replaced by a `FixedReplayBuffer` with the agent's frame stack, n-step horizon and
discount, so batches come from the same sampler as online training. Alternatively the agent can
be configured with `replay_scheme = 'fixed'` and `FixedReplayBuffer.dataset_dir`; then
`dataset_dir` may be left unset. Other `FixedReplayBuffer` settings (`max_steps`,
`dataset_format`, `checkpoints`) come from gin.

Defaults follow batch_rl's fixed-replay DQN (Agarwal, Schuurmans & Norouzi 2020,
github.com/google-research/batch_rl, fixed_replay/configs/dqn.gin): 200 iterations of 250,000
agent steps at one update per 4 steps, i.e. 62,500 gradient steps, and 125,000 evaluation steps.
Checkpoints hold the agent and RNGs and only a reference to the dataset (its path, the random
identifier drawn when it was created, and its size), which is checked on resume: a run never
silently continues on a dataset rebuilt at the same path.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable, Optional

import gin
import gymnasium as gym
import numpy as np
import tqdm

from accumbens.agents.registry import create_agent
from accumbens.environments import create_environment
from accumbens.replay.dataset import DatasetError, FixedReplayBuffer
from accumbens.runners.runner import Runner

# Gradient steps between progress-bar updates.
_PROGRESS_BLOCK = 250


@gin.configurable
class OfflineRunner(Runner):
    """Iterations of `training_steps` gradient steps on a fixed dataset, then online evaluation.

    Args:
      base_dir, create_environment_fn, create_agent_fn: as for `Runner` (the environment is used
        for evaluation only).
      dataset_dir: the dataset to learn from (see the module docstring).
      num_iterations: iterations (training + evaluation).
      training_steps: gradient steps per iteration.
      evaluation_steps: minimum online evaluation steps per iteration (whole episodes).
      max_steps_per_episode, seed, checkpoints_to_keep, progress_bar, tensorboard: as for `Runner`.
      updates_per_call: K gradient steps per compiled call (`HostAgent.learn`: K batches sampled at
        once, updates in a `lax.scan`). 1 (default) samples before every update. On a 2-core CPU
        K = 50 was not faster (MinAtar DQN, 9 vs 13 ms per update on a loaded machine); the saving
        of host round trips on a GPU is not measured.
    """

    def __init__(
        self,
        base_dir: str,
        create_environment_fn: Callable[[], gym.Env] = create_environment,
        create_agent_fn: Callable[..., object] = create_agent,
        *,
        dataset_dir: Optional[str] = None,
        num_iterations: int = 200,
        training_steps: int = 62_500,
        evaluation_steps: int = 125_000,
        max_steps_per_episode: int = 27_000,
        seed: int = 0,
        checkpoints_to_keep: int = 3,
        progress_bar: Optional[bool] = None,
        tensorboard: bool = True,
        updates_per_call: int = 1,
    ):
        super().__init__(
            base_dir,
            create_environment_fn,
            create_agent_fn,
            num_iterations=num_iterations,
            training_steps=training_steps,
            evaluation_steps=evaluation_steps,
            max_steps_per_episode=max_steps_per_episode,
            seed=seed,
            checkpoints_to_keep=checkpoints_to_keep,
            progress_bar=progress_bar,
            tensorboard=tensorboard,
            record_dataset_dir=None,
        )
        self.dataset_dir = dataset_dir
        if updates_per_call < 1:
            raise ValueError(f"updates_per_call must be >= 1, got {updates_per_call}.")
        self.updates_per_call = updates_per_call
        replay = self.agent.replay
        if isinstance(replay, FixedReplayBuffer):
            if dataset_dir is not None and replay.dataset_dir != os.path.abspath(dataset_dir):
                raise ValueError(
                    f"The agent's replay already reads {replay.dataset_dir}, but OfflineRunner.dataset_dir is "
                    f"{dataset_dir}; set only one of them."
                )
        elif dataset_dir is None:
            raise ValueError(
                "OfflineRunner needs a dataset: bind OfflineRunner.dataset_dir = '/path/to/dataset' (or give "
                "the agent replay_scheme = 'fixed' and FixedReplayBuffer.dataset_dir)."
            )
        else:
            self.agent.replay = FixedReplayBuffer(
                dataset_dir,
                observation_shape=self.agent.observation_shape,
                observation_dtype=self.agent.observation_dtype,
                stack_size=replay.stack_size,
                update_horizon=replay.update_horizon,
                gamma=replay.gamma,
            )
        num_actions = int(self.environment.action_space.n)
        if self.agent.replay.num_actions > num_actions:
            raise DatasetError(
                f"The dataset has actions up to {self.agent.replay.num_actions - 1}, but the environment has "
                f"{num_actions} actions."
            )

    def run_iteration(self, iteration: int) -> dict:
        """`training_steps` gradient steps, then the evaluation phase; returns the iteration's record."""
        record = {"iteration": iteration}
        self.agent.eval_mode = False
        disable = (not sys.stderr.isatty()) if self.progress_bar is None else not self.progress_bar
        start = time.perf_counter()
        with tqdm.tqdm(total=self.training_steps, desc=f"iter {iteration} train", unit="update", leave=False, disable=disable) as bar:
            done = 0
            while done < self.training_steps:
                block = min(_PROGRESS_BLOCK, self.training_steps - done)
                self.agent.learn(block, self.updates_per_call)
                done += block
                bar.update(block)
        seconds = time.perf_counter() - start
        record.update({
            "train_gradient_steps": self.training_steps,
            "train_seconds": seconds,
            "train_steps_per_second": self.training_steps / seconds if seconds > 0 else float("nan"),
        })
        record.update(self.agent.pop_training_metrics())
        if self.evaluation_steps > 0:
            record.update(self._run_phase(iteration, 1, self.evaluation_steps, "eval"))
        record["total_gradient_steps"] = (iteration + 1) * self.training_steps
        return record

    def summary(self, record: dict) -> str:
        parts = [f"iter {record['iteration']}", f"{record['train_gradient_steps']} updates "
                 f"({record['train_steps_per_second']:.0f}/s)"]
        if np.isfinite(record.get("loss", float("nan"))):
            parts.append(f"loss {record['loss']:.4f}")
        if "eval_return_mean" in record:
            parts.append(f"eval return {record['eval_return_mean']:.2f} ({record['eval_episodes']} ep)")
        return "[accumbens offline] " + ", ".join(parts)
