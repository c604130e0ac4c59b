"""MinAtar (Young & Tian, 2019) as a gymnasium environment, with an optional flicker.

A thin wrapper over the `minatar` package's `Environment`, keeping its defaults: sticky actions
with probability 0.1 and the difficulty ramp on. As in the MinAtar paper's DQN (which uses
`env.num_actions()`), the agent sees all 6 actions (no-op, left, up, right, down, fire) in every
game; pass `minimal_action_set=True` for the per-game minimal set instead.

Observations are the game's boolean state as uint8, shape [10, 10, C] (C = 4 for Breakout,
4 Asterix, 7 Freeway, 10 Seaquest, 6 Space Invaders). MinAtar episodes end only by the game's
own terminal (`terminated=True`); an optional `max_episode_steps` truncates them
(`truncated=True`).

Flickering MinAtar (issue 6): with `flicker_probability=p` each observation (including the first
of an episode) is replaced by zeros with probability p, drawn from the environment's own seeded
generator, making the game partially observable.

Seeding: `reset(seed=s)` seeds both the game's `numpy.random.RandomState` (spawns, sticky
actions) and the flicker generator, so two environments reset with the same seed and fed the
same actions produce the same episode.
"""
from __future__ import annotations

import logging
from typing import Any

import gin
import gymnasium
import numpy as np

GAMES: tuple[str, ...] = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")


def canonical_game(name: str) -> str | None:
    """Maps "breakout", "Breakout", "SpaceInvaders", "space-invaders" to MinAtar's game name."""
    key = name.lower().replace("-", "").replace("_", "")
    by_key = {game.replace("_", ""): game for game in GAMES}
    return by_key.get(key)


def _import_minatar_environment() -> type:
    """Imports `minatar.Environment` without it configuring the root logger.

    `minatar` calls `logging.warning` when seaborn is missing, which runs `logging.basicConfig`
    as a side effect; a temporary handler on the root logger prevents that.
    """
    root = logging.getLogger()
    guard = logging.NullHandler()
    root.addHandler(guard)
    try:
        from minatar import Environment
    finally:
        root.removeHandler(guard)
    return Environment


@gin.configurable
class MinAtarEnv(gymnasium.Env):
    """A MinAtar game as a gymnasium Env with uint8 observations of shape [10, 10, C]."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        game: str,
        sticky_action_probability: float = 0.1,
        difficulty_ramping: bool = True,
        max_episode_steps: int | None = None,
        flicker_probability: float = 0.0,
        minimal_action_set: bool = False,
    ):
        """Creates the game.

        Args:
          game: one of `GAMES`, e.g. "breakout".
          sticky_action_probability: probability that the previous action repeats (MinAtar: 0.1).
          difficulty_ramping: MinAtar's gradual speed-up in asterix, seaquest, space_invaders.
          max_episode_steps: truncate episodes after this many steps (None: no cap).
          flicker_probability: probability that an observation is all zeros (issue 6 uses 0.5).
          minimal_action_set: use the game's minimal actions instead of all 6.
        """
        if not 0.0 <= flicker_probability <= 1.0:
            raise ValueError(f"flicker_probability must be in [0, 1], got {flicker_probability}.")
        environment_class = _import_minatar_environment()
        self.game = game
        self._game = environment_class(
            game,
            sticky_action_prob=sticky_action_probability,
            difficulty_ramping=difficulty_ramping,
        )
        self._actions = (
            list(self._game.minimal_action_set())
            if minimal_action_set
            else list(range(self._game.num_actions()))
        )
        self.max_episode_steps = max_episode_steps
        self.flicker_probability = flicker_probability
        self._episode_steps = 0

        self.observation_space = gymnasium.spaces.Box(
            low=0, high=1, shape=tuple(self._game.state_shape()), dtype=np.uint8
        )
        self.action_space = gymnasium.spaces.Discrete(len(self._actions))

    def _observe(self) -> tuple[np.ndarray, dict[str, Any]]:
        observation = self._game.state().astype(np.uint8)
        flickered = bool(
            self.flicker_probability > 0.0 and self.np_random.random() < self.flicker_probability
        )
        if flickered:
            observation[...] = 0
        return observation, {"flickered": flickered}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._game.seed(seed)
        # Starting each episode from a no-op makes an episode depend only on the seed and the
        # actions, not on the last action of the previous episode.
        self._game.last_action = 0
        self._game.reset()
        self._episode_steps = 0
        return self._observe()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        reward, terminal = self._game.act(self._actions[int(action)])
        self._episode_steps += 1
        terminated = bool(terminal)
        truncated = (
            not terminated
            and self.max_episode_steps is not None
            and self._episode_steps >= self.max_episode_steps
        )
        observation, info = self._observe()
        return observation, float(reward), terminated, bool(truncated), info


def make(game: str, **kwargs: Any) -> MinAtarEnv:
    """The factory's entry point (see `accumbens.environments.create_environment`)."""
    return MinAtarEnv(game, **kwargs)
