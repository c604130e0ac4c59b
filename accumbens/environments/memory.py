"""A memory corridor (issue 6): remember a cue seen once, act on it `length` steps later.

An episode: at the first step the agent sees a cue, A or B, drawn uniformly. It then walks down
a corridor of `length` steps in which every observation is the same (the cue is gone and its
actions do not matter), and reaches a junction with two exits. Taking the exit that matches the
cue (action 0 for A, 1 for B) gives `correct_reward` (+1), the other `wrong_reward` (-1); either
ends the episode (`terminated=True`). Every other step gives 0. An episode is `length + 1` steps.

Observation: a float32 vector [cue_is_A, cue_is_B, at_junction], so
  step 0:             [1, 0, 0] or [0, 1, 0]
  steps 1..length-1:  [0, 0, 0]
  step length:        [0, 0, 1]   (decide here)
(For `length=0` the cue and the junction share the first observation.)

Why frame stacking cannot solve it: an agent whose input at the junction is the last k
observations sees observations length-k+1 .. length, which for length >= k never include step 0.
Its input at the junction is then identical whichever cue was drawn, so any such policy picks
the right exit with probability exactly 1/2: chance. With DQN's k = 4 stacked frames every
length >= 4 is unsolvable, and issue 6's benchmark uses length 100. A recurrent or attention
agent that carries information from step 0 solves it perfectly.
"""
from __future__ import annotations

import re
from typing import Any

import gin
import gymnasium
import numpy as np

# Listed in error messages; "corridor-<N>" sets the length in the name.
GAMES: tuple[str, ...] = ("corridor", "corridor-<N>")

_NAME = re.compile(r"corridor(?:-(\d+))?", re.IGNORECASE)


def canonical_game(name: str) -> str | None:
    """"corridor" or "corridor-<N>" (lower case), or None."""
    match = _NAME.fullmatch(name)
    return match.group(0).lower() if match else None


@gin.configurable
class MemoryCorridorEnv(gymnasium.Env):
    """The memory corridor; observations are float32 vectors of shape [3], 2 actions."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        length: int = 100,
        correct_reward: float = 1.0,
        wrong_reward: float = -1.0,
        max_episode_steps: int | None = None,
    ):
        """Creates the corridor.

        Args:
          length: steps between the cue and the junction (issue 6: up to 1000, 100 in its
            benchmark).
          correct_reward: reward for the exit that matches the cue.
          wrong_reward: reward for the other exit (-1, or 0 for a 0/1 success signal).
          max_episode_steps: truncate episodes after this many steps (None: no cap; episodes
            last `length + 1` steps). Accepted, like every family's, so that one binding of
            `create_environment.max_episode_steps` fits them all.
        """
        if length < 0:
            raise ValueError(f"length must be non-negative, got {length}.")
        self.length = length
        self.correct_reward = correct_reward
        self.wrong_reward = wrong_reward
        self.max_episode_steps = max_episode_steps
        self.observation_space = gymnasium.spaces.Box(0.0, 1.0, shape=(3,), dtype=np.float32)
        self.action_space = gymnasium.spaces.Discrete(2)
        self._cue = 0
        self._position = 0

    def _observation(self) -> np.ndarray:
        observation = np.zeros(3, dtype=np.float32)
        if self._position == 0:
            observation[self._cue] = 1.0
        if self._position == self.length:
            observation[2] = 1.0
        return observation

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._cue = int(self.np_random.integers(2))
        self._position = 0
        return self._observation(), {"cue": self._cue}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._position < self.length:
            self._position += 1
            truncated = (
                self.max_episode_steps is not None and self._position >= self.max_episode_steps
            )
            return self._observation(), 0.0, False, truncated, {}
        success = int(action) == self._cue
        reward = self.correct_reward if success else self.wrong_reward
        # The episode is over; the final observation carries no information.
        return np.zeros(3, dtype=np.float32), float(reward), True, False, {"success": success}


def make(game: str, **kwargs: Any) -> MemoryCorridorEnv:
    """The factory's entry point: "corridor" or "corridor-<N>" (sets `length=N`)."""
    match = _NAME.fullmatch(game)
    assert match is not None, game
    if match.group(1) is not None:
        length = int(match.group(1))
        if kwargs.setdefault("length", length) != length:
            raise ValueError(
                f"memory:{game} sets length={length} but length={kwargs['length']} was also "
                "given; use one."
            )
    return MemoryCorridorEnv(**kwargs)
