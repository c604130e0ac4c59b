"""A gymnax (JAX) environment as a gymnasium `Env`, so that the host `Runner` can play it.

Why: to compare the compiled runner with the host runner on *the same* environment (the
equivalence benchmark, `benchmarks/compiled_equivalence.py`), the host runner must step the
gymnax game that the compiled runner steps, not the `minatar` package. `GymnaxHostEnv` wraps
`create_jax_environment(name)` (so 'minatar:breakout' is gymnax Breakout-MinAtar with all 6
actions and sticky actions 0.1, exactly as the compiled runner builds it) and steps it with one
jitted call per step, returning NumPy values.

Semantics, matching `CompiledRunner`:
  * the episode cap is gymnax's own time limit, `params.max_steps_in_episode`, set from
    `max_episode_steps` (the compiled runner sets it from `Runner.max_steps_per_episode`); hitting
    it gives `truncated=True`, a game's end gives `terminated=True`;
  * observations are uint8 for MinAtar games (as the compiled runner stores them and as the
    `minatar` package's wrapper returns them), else gymnax's dtype (float32 for classic control);
  * the observation returned on the last step of an episode is its final observation
    (gymnax's `info['final_observation']`), not the first of the auto-reset next episode.

Seeding: `reset(seed=s)` restarts the environment's PRNG key from `s` (any non-negative integer
below 2**64); `reset()` continues the key, so an episode depends only on the last seed given and
the actions. Stepping after an episode ended without `reset` continues from gymnax's auto-reset
state (a new episode).

In the factory: `create_environment('jax:minatar:breakout')` (family 'jax', then any
`create_jax_environment` name), so gin configs for the host runner can name it too.
"""
from __future__ import annotations

from typing import Any, Optional

import gin
import gymnasium
import numpy as np

from accumbens.environments import jax_envs

# The names listed in error messages (any 'gymnax:<id>' is accepted as well when gymnax is installed).
GAMES: tuple[str, ...] = tuple(f"minatar:{game}" for game in jax_envs._MINATAR_IDS) + tuple(
    f"gym:{gym_id}" for gym_id in jax_envs._GYM_IDS
)


def canonical_game(name: str) -> Optional[str]:
    """The `create_jax_environment` name that `name` refers to ('minatar:Breakout' -> 'minatar:breakout')."""
    family, _, game = name.strip().partition(":")
    family, game = family.lower(), game.strip()
    if family == "minatar":
        key = game.lower().replace("-", "_")
        key = "space_invaders" if key == "spaceinvaders" else key
        return f"minatar:{key}" if key in jax_envs._MINATAR_IDS else None
    if family == "gym":
        by_lower = {gym_id.lower(): gym_id for gym_id in jax_envs._GYM_IDS}
        return f"gym:{by_lower[game.lower()]}" if game.lower() in by_lower else None
    if family == "gymnax":
        try:
            gymnax = jax_envs._import_gymnax()
        except ImportError:
            return None
        return f"gymnax:{game}" if game in gymnax.registered_envs else None
    return None


def unknown_game_hint(name: str) -> str:
    return " Names in the 'jax' family are create_jax_environment names, e.g. 'jax:minatar:breakout'."


def _seed_key(seed: int) -> np.ndarray:
    """A raw PRNG key from a 64-bit seed: `jax.random.PRNGKey(seed)` below 2**32 (which drops higher bits)."""
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be a non-negative integer below 2**64, got {seed}")
    seed = int(seed)
    return np.array([seed >> 32, seed & 0xFFFFFFFF], np.uint32)


@gin.configurable
class GymnaxHostEnv(gymnasium.Env):
    """A gymnax environment stepped from the host: gymnasium's reset/step over jitted gymnax calls.

    Args:
      name: a `create_jax_environment` name, e.g. 'minatar:breakout', 'gym:CartPole-v1'.
      max_episode_steps: gymnax's `max_steps_in_episode` (episodes are truncated there); None keeps
        gymnax's default (1000 for MinAtar games, 500 for CartPole-v1).
      sticky_action_probability: as `create_jax_environment`'s (None: 0.1 for 'minatar:' names).
    """

    metadata = {"render_modes": []}

    def __init__(self, name: str, max_episode_steps: Optional[int] = None, sticky_action_probability: Optional[float] = None):
        import jax

        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
        self.name = name
        self.jax_env, params = jax_envs.create_jax_environment(name, sticky_action_probability=sticky_action_probability)
        if max_episode_steps is not None:
            params = params.replace(max_steps_in_episode=int(max_episode_steps))
        self.env_params = params
        env = self.jax_env
        obs_spec = jax.eval_shape(lambda k: env.reset(k, params)[0], jax.random.PRNGKey(0))
        minatar = "minatar" in type(env).__module__.lower()
        self._dtype = np.dtype(np.uint8) if minatar else np.dtype(obs_spec.dtype)
        if minatar:
            self.observation_space = gymnasium.spaces.Box(0, 1, tuple(obs_spec.shape), np.uint8)
        else:
            self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, tuple(obs_spec.shape), self._dtype)
        self.action_space = gymnasium.spaces.Discrete(int(env.num_actions))
        dtype = self._dtype

        def reset(key):
            key, reset_key = jax.random.split(key)
            obs, state = env.reset(reset_key, params)
            return key, obs.astype(dtype), state

        def step(key, state, action):
            key, step_key = jax.random.split(key)
            obs, state, reward, terminated, truncated, info = env.step(step_key, state, action, params)
            ended = terminated | truncated
            shown = jax.numpy.where(ended, info["final_observation"], obs).astype(dtype)
            return key, shown, state, reward.astype(jax.numpy.float32), terminated, truncated

        self._reset_fn = jax.jit(reset)
        self._step_fn = jax.jit(step)
        self._key = jax.random.PRNGKey(0)
        self._state = None

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict[str, Any]] = None) -> tuple[np.ndarray, dict]:
        if seed is not None:
            self._key = _seed_key(seed)  # checks the seed first, with this module's message
        super().reset(seed=seed)
        self._key, obs, self._state = self._reset_fn(self._key)
        return np.asarray(obs), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._state is None:
            raise RuntimeError("GymnaxHostEnv.step called before reset()")
        if not self.action_space.contains(int(action)):
            raise ValueError(f"action {action} is outside the action space {self.action_space}")
        self._key, obs, self._state, reward, terminated, truncated = self._step_fn(self._key, self._state, np.int32(action))
        obs, reward, terminated, truncated = (np.asarray(x) for x in (obs, reward, terminated, truncated))
        return obs, float(reward), bool(terminated), bool(truncated) and not bool(terminated), {}


def make(game: str, **kwargs: Any) -> GymnaxHostEnv:
    """The factory's entry point (`create_environment('jax:<create_jax_environment name>')`)."""
    return GymnaxHostEnv(game, **kwargs)


__all__ = ["GAMES", "GymnaxHostEnv", "canonical_game", "make"]
