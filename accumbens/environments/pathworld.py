"""Pathworld: a choice among paths of different lengths and rewards under an uncertain hazard.

After Fedus et al. (2019), "Hyperbolic Discounting and Learning over Multiple Horizons", sec. 5
(Pathworld). At the start state the agent picks one of `len(delays)` paths (action p). Path p is a
corridor of `delays[p]` cells; from each cell every action moves one cell on, and leaving the last
cell gives `rewards[p]` and ends the episode (`terminated`). All other rewards are 0, so the
reward of path p arrives `delays[p]` steps after the choice: its value under a discount
Gamma(t) is rewards[p] * Gamma(delays[p]).

Hazard. At reset a hazard rate lambda is drawn from the prior (`hazard_prior`):
  'exponential'  lambda ~ Exponential with mean k (`hazard_k`), density (1/k) exp(-lambda / k);
  'fixed'        lambda = `hazard_rate`;
  'none'         lambda = 0 (the hazard-free world, where the agent learns its Q_gamma heads).
Each step taken from a path cell first survives with probability exp(-lambda); otherwise the
episode ends with reward 0 (`terminated`, info['died'] = True). Path p's reward needs delays[p]
such survivals, so under the exponential prior its expected return is

    rewards[p] * E[exp(-lambda d)] = rewards[p] * integral (1/k) exp(-lambda / k - lambda d) dlambda
                                   = rewards[p] / (1 + k d),        d = delays[p],

the hyperbolic value (`hyperbolic_values`). A fixed hazard lambda gives rewards[p] gamma^d with
gamma = exp(-lambda) (`exponential_values`): an agent certain of its hazard discounts
exponentially; one uncertain of it, hyperbolically (the paper's Lemma 4.1 and eq. 8). The agent
never observes lambda.

Observation: float32 one-hot of the cell, shape [num_states], num_states = 1 + sum(delays);
cell 0 is the start, path p's cells follow those of paths 0..p-1.
"""
from __future__ import annotations

import re
from typing import Any, Optional, Sequence

import gin
import gymnasium
import numpy as np

from accumbens.replay.batch import Batch

# The default paths: delays spanning 1..16 steps, rewards growing with the delay so that under
# 1 / (1 + t / 2) the middle paths are worth most (what `benchmarks/hyperbolic_pathworld.py` uses).
DEFAULT_DELAYS: tuple[int, ...] = (1, 2, 4, 8, 16)
DEFAULT_REWARDS: tuple[float, ...] = (1.0, 1.6, 2.6, 4.0, 6.0)
HAZARD_PRIORS = ("exponential", "fixed", "none")

# Listed in error messages.
GAMES: tuple[str, ...] = ("paths",)
_NAME = re.compile(r"paths?", re.IGNORECASE)


def canonical_game(name: str) -> str | None:
    """'paths' (also 'path', any case), or None."""
    return "paths" if _NAME.fullmatch(name) else None


def hyperbolic_values(delays: Sequence[int], rewards: Sequence[float], k: float) -> np.ndarray:
    """The start state's true values r_p / (1 + k d_p) under the exponential hazard prior (float64 [P])."""
    return np.asarray(rewards, np.float64) / (1.0 + k * np.asarray(delays, np.float64))


def exponential_values(delays: Sequence[int], rewards: Sequence[float], gamma: float) -> np.ndarray:
    """The start state's values r_p gamma^d_p for one exponential discount (float64 [P])."""
    return np.asarray(rewards, np.float64) * float(gamma) ** np.asarray(delays, np.float64)


@gin.configurable
class PathworldEnv(gymnasium.Env):
    """Pathworld; one action per path, one-hot float32 observations (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        delays: Sequence[int] = DEFAULT_DELAYS,
        rewards: Sequence[float] = DEFAULT_REWARDS,
        hazard_prior: str = "exponential",
        hazard_k: float = 0.5,
        hazard_rate: float = 0.0,
        max_episode_steps: Optional[int] = None,
    ):
        """Creates the paths.

        Args:
          delays: steps from the choice to each path's reward (positive integers).
          rewards: each path's final reward.
          hazard_prior: 'exponential' (mean `hazard_k`), 'fixed' (`hazard_rate`) or 'none'.
          hazard_k: k of the exponential prior, the k of 1 / (1 + k t).
          hazard_rate: lambda of the fixed hazard.
          max_episode_steps: truncate after this many steps (None: episodes end by themselves,
            after at most 1 + max(delays) steps).
        """
        delays = tuple(int(d) for d in delays)
        rewards = tuple(float(r) for r in rewards)
        if not delays or len(delays) != len(rewards):
            raise ValueError(f"need one reward per path and at least one path; got delays {delays}, rewards {rewards}")
        if min(delays) < 1:
            raise ValueError(f"every path delay must be >= 1, got {delays}")
        if hazard_prior not in HAZARD_PRIORS:
            raise ValueError(f"unknown hazard_prior {hazard_prior!r}; valid: {list(HAZARD_PRIORS)}")
        if hazard_k <= 0 or hazard_rate < 0:
            raise ValueError(f"need hazard_k > 0 and hazard_rate >= 0, got {hazard_k}, {hazard_rate}")
        self.delays, self.rewards = delays, rewards
        self.hazard_prior, self.hazard_k, self.hazard_rate = hazard_prior, float(hazard_k), float(hazard_rate)
        self.max_episode_steps = max_episode_steps
        self.num_states = 1 + sum(delays)
        self.first_cell = tuple(1 + int(x) for x in np.cumsum((0,) + delays[:-1]))  # index of each path's cell 1
        self.observation_space = gymnasium.spaces.Box(0.0, 1.0, (self.num_states,), np.float32)
        self.action_space = gymnasium.spaces.Discrete(len(delays))
        self._state = 0
        self._hazard = 0.0
        self._steps = 0

    # ----- the state graph (hazard-free) ------------------------------------------------------------
    def observation_of(self, state: int) -> np.ndarray:
        """One-hot observation of cell `state` ([num_states] float32)."""
        observation = np.zeros(self.num_states, np.float32)
        observation[state] = 1.0
        return observation

    def _path_of(self, state: int) -> tuple[int, int]:
        """(path, position 1..delay) of a path cell."""
        for p, (first, delay) in enumerate(zip(self.first_cell, self.delays)):
            if first <= state < first + delay:
                return p, state - first + 1
        raise ValueError(f"cell {state} is not on a path")

    def transition(self, state: int, action: int) -> tuple[int, float, bool]:
        """The hazard-free move: (next cell, reward, terminated). The next cell of a terminal move is 0."""
        if state == 0:
            return self.first_cell[int(action)], 0.0, False
        path, position = self._path_of(state)
        if position == self.delays[path]:
            return 0, self.rewards[path], True
        return state + 1, 0.0, False

    def all_transitions(self, stack_size: int = 1, gamma: float = 1.0) -> Batch:
        """Every (cell, action) pair of the hazard-free world once, as a replay `Batch`.

        Uniform sampling from it is what a replay full of hazard-free experience converges to;
        the Pathworld checks train on it whole. Observations are [S*A, num_states, stack_size]
        with the frame repeated (stack_size 1 in the checks); discount is `gamma`, 0 on the final
        move of a path; weight 1.
        """
        obs, action, reward, next_obs, discount = [], [], [], [], []
        for s in range(self.num_states):
            for a in range(self.action_space.n):
                s2, r, done = self.transition(s, a)
                obs.append(self.observation_of(s))
                action.append(a)
                reward.append(r)
                next_obs.append(self.observation_of(s2))
                discount.append(0.0 if done else gamma)
        stack = lambda x: np.repeat(np.asarray(x, np.float32)[..., None], stack_size, axis=-1)  # noqa: E731
        n = len(action)
        return Batch(
            observation=stack(obs),
            action=np.asarray(action, np.int32),
            reward=np.asarray(reward, np.float32),
            next_observation=stack(next_obs),
            discount=np.asarray(discount, np.float32),
            weight=np.ones(n, np.float32),
            index=np.arange(n),
        )

    # ----- gymnasium API -------------------------------------------------------------------------------
    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if self.hazard_prior == "exponential":
            self._hazard = float(self.np_random.exponential(self.hazard_k))
        elif self.hazard_prior == "fixed":
            self._hazard = self.hazard_rate
        else:
            self._hazard = 0.0
        self._state, self._steps = 0, 0
        return self.observation_of(0), {"hazard": self._hazard}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self.action_space.contains(int(action)):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        self._steps += 1
        info = {"hazard": self._hazard, "died": False}
        if self._state != 0 and self.np_random.random() >= np.exp(-self._hazard):
            info["died"] = True
            self._state = 0
            return self.observation_of(0), 0.0, True, False, info
        self._state, reward, terminated = self.transition(self._state, int(action))
        truncated = (not terminated) and self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        return self.observation_of(self._state), reward, terminated, truncated, info


def make(game: str, **kwargs: Any) -> PathworldEnv:
    """The factory hook: `create_environment('pathworld:paths', hazard_prior='none', ...)`."""
    del game  # one layout; its paths are constructor arguments
    return PathworldEnv(**kwargs)
