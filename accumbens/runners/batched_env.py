"""Several environments stepped together, for the several-seeds runner (`multi_seed.py`).

A batched environment holds one environment per seed and steps them all with one call:

  reset(seeds) -> observation [N, *obs_shape]        every environment, reseeded (None: not)
  send(actions [N], active [N] | None)                start a step (may run in the background)
  recv() -> BatchedStep                               wait for it

Episodes reset themselves in the same step ("same-step autoreset"): when environment i's
episode ends, `observation[i]` is already the first observation of its next episode and
`final_observation[i]` is the last observation of the one that ended. `truncated` includes
the cap `max_episode_steps` (agent steps since the episode began), so the runner's
`max_steps_per_episode` is applied here, where the reset happens.

Two implementations: `EnvironmentList` (any gymnasium environments, stepped one after the
other in this thread: MinAtar, classic control, and the single-environment Atari path) and
`accumbens.environments.vector_atari.VectorAtariEnv` (ale-py's C++ vector environment, threads).
Splitting `send` from `recv` is what lets the runner dispatch an update to the accelerator
while the environments step.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import gymnasium as gym
import numpy as np


class BatchedStep(NamedTuple):
    """One step of N environments; arrays have a leading axis N.

    observation: next observations; for environments whose episode ended, the first
      observation of the next episode.
    reward: float64 [N]; terminated, truncated: bool [N] (the episode cap counts as truncated).
    final_observation: [N, *obs_shape]; meaningful only where terminated | truncated.
    """

    observation: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_observation: np.ndarray


class EnvironmentList:
    """N gymnasium environments behind the batched interface, stepped in this thread.

    Each environment follows the host `Runner`'s protocol exactly: `reset(seeds)` calls
    `env.reset(seed=s)`, an ended episode is followed by `env.reset()` without a seed (the
    environment's own RNG continues), so seed i here sees the episodes a `Runner` with the same
    phase seeds would see. Inactive environments (`active[i]` False) are not stepped.
    """

    def __init__(self, environments: Sequence[gym.Env], max_episode_steps: Optional[int] = None):
        if not environments:
            raise ValueError("EnvironmentList needs at least one environment")
        self.environments = list(environments)
        self.num_envs = len(self.environments)
        self.max_episode_steps = max_episode_steps
        first = self.environments[0]
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self._episode_steps = np.zeros(self.num_envs, np.int64)
        self._pending: Optional[tuple[np.ndarray, Optional[np.ndarray]]] = None
        shape, dtype = first.observation_space.shape, first.observation_space.dtype
        self._final = np.zeros((self.num_envs, *shape), dtype)

    @classmethod
    def create(cls, make_environment: Callable[[], gym.Env], num_envs: int, max_episode_steps: Optional[int] = None):
        """`num_envs` environments from `make_environment()` (e.g. the gin-bound factory)."""
        return cls([make_environment() for _ in range(num_envs)], max_episode_steps)

    def reset(self, seeds: Sequence[Optional[int]]) -> np.ndarray:
        """Resets every environment (seed None: continue its RNG); returns [N, *obs_shape]."""
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset needs {self.num_envs} seeds, got {len(seeds)}")
        self._episode_steps[:] = 0
        return np.stack([np.asarray(env.reset(seed=s)[0]) for env, s in zip(self.environments, seeds)])

    def send(self, actions: np.ndarray, active: Optional[np.ndarray] = None) -> None:
        """Stores the actions; the environments step in `recv` (this implementation has no threads)."""
        self._pending = (np.asarray(actions), None if active is None else np.asarray(active, bool))

    def recv(self) -> BatchedStep:
        """Steps each active environment once; inactive ones repeat their last observation."""
        if self._pending is None:
            raise RuntimeError("recv() without a preceding send()")
        actions, active = self._pending
        self._pending = None
        observations, rewards = [], np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, bool)
        truncated = np.zeros(self.num_envs, bool)
        for i, env in enumerate(self.environments):
            if active is not None and not active[i]:
                observations.append(self._final[i])  # a placeholder the runner ignores
                continue
            observation, reward, term, trunc, _ = env.step(int(actions[i]))
            self._episode_steps[i] += 1
            rewards[i] = float(reward)
            cap = self.max_episode_steps is not None and self._episode_steps[i] >= self.max_episode_steps
            terminated[i] = bool(term)
            truncated[i] = (bool(trunc) or cap) and not term
            if term or truncated[i]:
                self._final[i] = observation
                observation, _ = env.reset()
                self._episode_steps[i] = 0
            observations.append(np.asarray(observation))
        return BatchedStep(np.stack(observations), rewards, terminated, truncated, self._final.copy())

    def close(self) -> None:
        for env in self.environments:
            env.close()
