"""The host runner: Dopamine's iteration loop with atomic checkpoints and exact resume.

Each iteration is a training phase (the agent acts epsilon-greedily, stores transitions and
learns) of at least `training_steps` agent steps, then a greedy evaluation phase of at least
`evaluation_steps`; both run whole episodes, so a phase may overshoot by part of an episode, as
in Dopamine. Episodes longer than `max_steps_per_episode` are truncated (bootstrapped, not
terminal).

Exact resume: the environment is reseeded at the start of every phase from (seed, iteration,
phase), and the agent's parameters, optimizer, replay, RNG keys and counters are checkpointed
after every iteration. A run killed at any moment and restarted with the same `base_dir`
continues from the last complete checkpoint and reproduces the uninterrupted run's per-iteration
returns exactly (on CPU, where XLA is deterministic).
"""
from __future__ import annotations

import difflib
import os
import sys
import time
from typing import Callable, Optional

import gin
import gymnasium as gym
import numpy as np
import tqdm

from accumbens.agents.registry import create_agent
from accumbens.atomic import atomic_write
from accumbens.environments import create_environment
from accumbens.runners.checkpoints import CheckpointManager
from accumbens.runners.logging import StatisticsWriter

CONFIG_FILE = "config.gin"
# Bindings that may change between a run and its resumption (extending a finished run).
_RESUMABLE_BINDINGS = ("Runner.num_iterations",)


class ConfigMismatchError(RuntimeError):
    """`base_dir` holds a run whose configuration differs from the one requested."""


def _comparable_config(text: str, resumable: tuple[str, ...] = _RESUMABLE_BINDINGS) -> list[str]:
    """The config's binding lines, without comments and without the `resumable` bindings."""
    lines = []
    for line in text.splitlines():
        line = line.rstrip()
        if not line or line.lstrip().startswith("#"):
            continue
        if line.split("=")[0].strip().endswith(resumable):
            continue
        lines.append(line)
    return lines


def claim_base_dir(base_dir: str, config_text: str, resumable: tuple[str, ...] = _RESUMABLE_BINDINGS) -> None:
    """Writes `config_text` to `base_dir/config.gin`, or refuses if a different config is there.

    Raises:
      ConfigMismatchError: `base_dir` already holds a run whose config differs in any binding
        other than the `resumable` ones; the message shows the difference. Nothing is written.
    """
    os.makedirs(base_dir, exist_ok=True)
    path = os.path.join(base_dir, CONFIG_FILE)
    if os.path.exists(path):
        with open(path) as f:
            previous = f.read()
        old, new = _comparable_config(previous, resumable), _comparable_config(config_text, resumable)
        if old != new:
            diff = "\n".join(difflib.unified_diff(old, new, "existing config.gin", "requested", lineterm="", n=0))
            raise ConfigMismatchError(
                f"{base_dir} holds a run with a different configuration; refusing to overwrite it.\n"
                f"Use another --base_dir, or the same gin files and bindings to resume.\n{diff}"
            )
    atomic_write(path, lambda f: f.write(config_text), text=True)


def _phase_seed(seed: int, iteration: int, phase: int) -> int:
    """A distinct, reproducible environment seed per (run seed, iteration, phase)."""
    return int(np.random.SeedSequence([seed, iteration, phase]).generate_state(1)[0])


@gin.configurable
class Runner:
    """Runs an agent on an environment for `num_iterations` train+eval iterations."""

    def __init__(
        self,
        base_dir: str,
        create_environment_fn: Callable[[], gym.Env] = create_environment,
        create_agent_fn: Callable[..., object] = create_agent,
        *,
        num_iterations: int = 200,
        training_steps: int = 250_000,
        evaluation_steps: int = 125_000,
        max_steps_per_episode: int = 27_000,
        seed: int = 0,
        checkpoints_to_keep: int = 3,
        progress_bar: Optional[bool] = None,
        tensorboard: bool = True,
        record_dataset_dir: Optional[str] = None,
    ):
        if num_iterations < 1 or training_steps < 0 or evaluation_steps < 0 or max_steps_per_episode < 1:
            raise ValueError(
                "Runner needs num_iterations >= 1, training_steps >= 0, evaluation_steps >= 0 and "
                f"max_steps_per_episode >= 1; got {num_iterations}, {training_steps}, "
                f"{evaluation_steps}, {max_steps_per_episode}"
            )
        self.base_dir = os.path.abspath(base_dir)
        self.num_iterations = num_iterations
        self.training_steps = training_steps
        self.evaluation_steps = evaluation_steps
        self.max_steps_per_episode = max_steps_per_episode
        self.seed = seed
        self.progress_bar = progress_bar
        self.tensorboard = tensorboard
        self.environment = create_environment_fn()
        if not isinstance(self.environment.action_space, gym.spaces.Discrete):
            raise ValueError(f"accumbens agents need a Discrete action space, got {self.environment.action_space}")
        space = self.environment.observation_space
        self.agent = create_agent_fn(
            num_actions=int(self.environment.action_space.n),
            observation_shape=space.shape,
            observation_dtype=space.dtype,
            seed=seed,
        )
        claim_base_dir(self.base_dir, gin.operative_config_str())
        self.checkpoints = CheckpointManager(os.path.join(self.base_dir, "checkpoints"), keep=checkpoints_to_keep)
        self.recorder = None  # record_dataset_dir: training transitions also go to a dataset
        if record_dataset_dir:
            from accumbens.replay.dataset import open_run_recorder  # noqa: PLC0415

            self.recorder = open_run_recorder(
                record_dataset_dir, self.base_dir, space.shape, space.dtype, int(self.environment.action_space.n),
                metadata={"seed": seed, "config": gin.operative_config_str()})
            self.agent.recorder = self.recorder

    # ----- episodes and phases ----------------------------------------------------------
    def _run_episode(self, first_seed: Optional[int], progress) -> tuple[int, float]:
        observation, _ = self.environment.reset(seed=first_seed)
        action = self.agent.begin_episode(observation)
        total_reward, steps = 0.0, 0
        while True:
            observation, reward, terminated, truncated, _ = self.environment.step(action)
            total_reward += float(reward)
            steps += 1
            progress.update(1)
            if terminated or truncated or steps >= self.max_steps_per_episode:
                self.agent.end_episode(float(reward), bool(terminated), observation)
                return steps, total_reward
            action = self.agent.step(float(reward), observation)

    def _run_phase(self, iteration: int, phase: int, min_steps: int, name: str) -> dict:
        self.agent.eval_mode = phase == 1
        steps, returns = 0, []
        start = time.perf_counter()
        disable = (not sys.stderr.isatty()) if self.progress_bar is None else not self.progress_bar
        with tqdm.tqdm(total=min_steps, desc=f"iter {iteration} {name}", unit="step", leave=False, disable=disable) as bar:
            seed = _phase_seed(self.seed, iteration, phase)
            while steps < min_steps:
                episode_steps, episode_return = self._run_episode(seed, bar)
                seed = None  # only the phase's first reset reseeds; later ones continue its RNG
                steps += episode_steps
                returns.append(episode_return)
                bar.set_postfix(ret=f"{np.mean(returns):.2f}", eps=len(returns))
        seconds = time.perf_counter() - start
        return {
            f"{name}_episodes": len(returns),
            f"{name}_return_mean": float(np.mean(returns)) if returns else float("nan"),
            f"{name}_return_median": float(np.median(returns)) if returns else float("nan"),
            f"{name}_steps": steps,
            f"{name}_seconds": seconds,
            f"{name}_steps_per_second": steps / seconds if seconds > 0 else float("nan"),
        }

    def run_iteration(self, iteration: int) -> dict:
        """One training phase and one evaluation phase; returns the iteration's record."""
        record = {"iteration": iteration}
        record.update(self._run_phase(iteration, 0, self.training_steps, "train"))
        if self.recorder is not None:
            self.recorder.flush(tag=iteration)  # before the checkpoint: resume truncates to it
        record.update(self.agent.pop_training_metrics())
        if self.evaluation_steps > 0:
            record.update(self._run_phase(iteration, 1, self.evaluation_steps, "eval"))
        record["total_train_steps"] = self.agent.env_steps
        return record

    # ----- checkpoints ------------------------------------------------------------------
    def _save(self, iteration: int) -> None:
        self.checkpoints.save(iteration, self.agent.bundle_and_checkpoint, metadata={"iteration": iteration})

    def _restore(self) -> int:
        """Restores the newest good checkpoint; returns the first iteration still to run."""
        restored = self.checkpoints.restore_latest(lambda path, manifest: self.agent.unbundle(path))
        return 0 if restored is None else restored + 1

    def run_experiment(self) -> list[dict]:
        """Runs (or resumes) the experiment; returns the records of the iterations run now."""
        start = self._restore()
        if self.recorder is not None:
            self.recorder.truncate_before_tag(start)
        writer = StatisticsWriter(self.base_dir, resume_after_iteration=start - 1 if start else None, tensorboard=self.tensorboard)
        if start >= self.num_iterations:
            print(f"[accumbens] {self.base_dir}: all {self.num_iterations} iterations already complete")
        elif start > 0:
            print(f"[accumbens] resuming {self.base_dir} at iteration {start}")
        records = []
        try:
            for iteration in range(start, self.num_iterations):
                record = self.run_iteration(iteration)
                record["wall_time"] = time.time()
                writer.write(record)
                self._save(iteration)
                records.append(record)
                print(self.summary(record), flush=True)
        finally:
            writer.close()
        return records

    def summary(self, record: dict) -> str:
        """The one-line progress message printed after each iteration."""
        return _summary(record)


def _summary(record: dict) -> str:
    parts = [f"iter {record['iteration']}"]
    parts.append(f"train return {record['train_return_mean']:.2f} ({record['train_episodes']} ep)")
    if "eval_return_mean" in record:
        parts.append(f"eval return {record['eval_return_mean']:.2f} ({record['eval_episodes']} ep)")
    parts.append(f"{record['train_steps_per_second']:.0f} steps/s")
    if np.isfinite(record.get("loss", float("nan"))):
        parts.append(f"loss {record['loss']:.4f}")
    return "[accumbens] " + ", ".join(parts)
