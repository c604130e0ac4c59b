"""Gymnasium classic-control environments (CartPole, Acrobot, MountainCar) by id.

These are the small, fast sanity-check tasks of the framework (e.g. `dqn/cartpole.gin`). The
environment is gymnasium's own, made with `gymnasium.make`, so its `TimeLimit` (500 steps for
CartPole-v1) reports `truncated=True` while a pole falling reports `terminated=True`.
Observations are float32 vectors.
"""
from __future__ import annotations

from typing import Any

import gin
import gymnasium
import numpy as np

# Classic-control ids with a Discrete action space (Pendulum and MountainCarContinuous are
# continuous-action and so do not fit a value-based agent).
GAMES: tuple[str, ...] = ("CartPole-v0", "CartPole-v1", "Acrobot-v1", "MountainCar-v0")


def canonical_game(name: str) -> str | None:
    """Returns the gymnasium id matching `name` (case-insensitive), or None if unknown."""
    by_lower = {game.lower(): game for game in GAMES}
    return by_lower.get(name.lower())


class Float32Observation(gymnasium.ObservationWrapper):
    """Casts observations (and the observation space) to float32."""

    def __init__(self, env: gymnasium.Env):
        super().__init__(env)
        space = env.observation_space
        assert isinstance(space, gymnasium.spaces.Box), space
        self.observation_space = gymnasium.spaces.Box(
            low=space.low.astype(np.float32),
            high=space.high.astype(np.float32),
            shape=space.shape,
            dtype=np.float32,
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.asarray(observation, dtype=np.float32)


@gin.configurable
def create_gym_environment(
    game: str, max_episode_steps: int | None = None, **kwargs: Any
) -> gymnasium.Env:
    """Makes a gymnasium classic-control environment with float32 observations.

    Args:
      game: a gymnasium id from `GAMES`, e.g. "CartPole-v1".
      max_episode_steps: overrides gymnasium's registered time limit (None keeps it).
      **kwargs: passed to `gymnasium.make` (e.g. `render_mode`).

    Returns:
      A gymnasium Env with a Discrete action space and Box(float32) observations of shape
      [obs_dim].
    """
    env = gymnasium.make(game, max_episode_steps=max_episode_steps, **kwargs)
    assert isinstance(env.action_space, gymnasium.spaces.Discrete), env.action_space
    return Float32Observation(env)


def make(game: str, **kwargs: Any) -> gymnasium.Env:
    """The factory's entry point (see `accumbens.environments.create_environment`)."""
    return create_gym_environment(game, **kwargs)
