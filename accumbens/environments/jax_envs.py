"""JAX-native environments (gymnax) for the compiled runner.

`create_jax_environment(name)` returns gymnax's `(env, params)`: `env.reset(key, params)` and
`env.step(key, state, action, params)` are pure functions usable under `jax.jit`, `jax.vmap` and
`lax.scan`. gymnax's `step` returns `(obs, state, reward, terminated, truncated, info)` and
resets automatically when an episode ends.

Names:
  gymnax:<id>          any gymnax id with gymnax's own defaults, e.g. "gymnax:Breakout-MinAtar"
                       (minimal action set, 1000-step episodes), "gymnax:CartPole-v1".
  minatar:<game>       the gymnax port of a MinAtar game, configured to match
                       `create_environment("minatar:<game>")`: all 6 actions, same channels,
                       sticky actions with probability 0.1 as the minatar package has
                       (gymnax's port has none; `sticky_actions` adds them), and Freeway
                       terminal after 2501 steps as in the package (gymnax's never is). gymnax caps
                       episodes at `params.max_steps_in_episode` (1000 by default; the
                       runners set it from `Runner.max_steps_per_episode`).
                       What still differs from the minatar package is measured by
                       benchmarks/minatar_parity.py (random-policy returns and lengths).
  gym:<id>             the gymnax port of a classic-control task, e.g. "gym:CartPole-v1".

gymnax's Asterix gets one speed fix with identical outputs (`accumbens.environments.gymnax_fixes`).

gymnax is an optional dependency (`pip install -e ".[jax-envs]"`); it is imported only here, on
first use.
"""
from __future__ import annotations

from typing import Any

import gin

from accumbens.environments import gymnax_fixes

_MINATAR_IDS: dict[str, str] = {
    "asterix": "Asterix-MinAtar",
    "breakout": "Breakout-MinAtar",
    "freeway": "Freeway-MinAtar",
    "seaquest": "Seaquest-MinAtar",
    "space_invaders": "SpaceInvaders-MinAtar",
}
_GYM_IDS: tuple[str, ...] = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0")


def _import_gymnax() -> Any:
    try:
        import gymnax
    except ImportError as error:
        raise ImportError(
            "JAX environments need gymnax, an optional dependency of accumbens. Install it with "
            "`pip install -e \".[jax-envs]\"` (or `pip install gymnax`)."
        ) from error
    return gymnax


def _resolve(name: str, gymnax_ids: list[str]) -> tuple[str, dict[str, Any]]:
    """Returns (gymnax id, constructor kwargs implied by the name)."""
    family, _, game = name.partition(":")
    family = family.strip().lower()
    game = game.strip()
    valid = (
        "Valid names: 'gymnax:<id>' with id one of "
        f"{', '.join(gymnax_ids)}; 'minatar:<game>' with game one of "
        f"{', '.join(_MINATAR_IDS)}; 'gym:<id>' with id one of {', '.join(_GYM_IDS)}."
    )
    if family == "gymnax" and game in gymnax_ids:
        return game, {}
    if family == "minatar":
        key = game.lower().replace("-", "_")
        key = "space_invaders" if key == "spaceinvaders" else key
        if key in _MINATAR_IDS:
            return _MINATAR_IDS[key], {"use_minimal_action_set": False}
    if family == "gym":
        by_lower = {gym_id.lower(): gym_id for gym_id in _GYM_IDS}
        if game.lower() in by_lower:
            return by_lower[game.lower()], {}
    raise ValueError(f"Unknown JAX environment {name!r}. {valid}")


MINATAR_STICKY_ACTION_PROBABILITY = 0.1  # the minatar package's default
# Games that the minatar package ends by their own clock (terminal, not truncated): Freeway's
# timer starts at 2500 and the episode is terminal once it falls below 0, after 2501 steps.
# gymnax's Freeway never terminates (it only truncates at max_steps_in_episode).
MINATAR_GAME_CLOCK = {"Freeway-MinAtar": 2501}


def sticky_actions(env: Any, probability: float, terminate_after: int | None = None) -> Any:
    """`env` where, at each step, the previous executed action repeats with `probability`.

    As the minatar package does it: the executed action (sticky or chosen) becomes the previous
    action; it is 0 after a reset. The wrapper's state is (inner state, previous action); gymnax's
    auto-reset and time limit work unchanged (they act on the wrapper's `step_env`/`reset_env`
    and on the inner state's time). `terminate_after`: the episode is terminal (not truncated)
    once this many steps have been taken, as a game with its own clock (MinAtar Freeway) is.
    """
    import jax
    import jax.numpy as jnp
    from flax import struct
    from gymnax.environments import environment

    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"sticky action probability must be in [0, 1], got {probability}")

    @struct.dataclass
    class StickyState:
        inner: Any
        previous_action: jax.Array
        time: jax.Array

    class StickyActions(environment.Environment):
        def __init__(self):
            super().__init__()
            self.inner = env
            self.sticky_action_probability = float(probability)

        @property
        def default_params(self):
            return env.default_params

        @property
        def name(self) -> str:
            return env.name

        @property
        def num_actions(self) -> int:
            return env.num_actions

        def action_space(self, params=None):
            return env.action_space(params)

        def observation_space(self, params):
            return env.observation_space(params)

        def step_env(self, key, state, action, params):
            sticky_key, step_key = jax.random.split(key)
            action = jnp.where(jax.random.uniform(sticky_key) < self.sticky_action_probability, state.previous_action, action)
            action = action.astype(state.previous_action.dtype)
            obs, inner, reward, terminated, info = env.step_env(step_key, state.inner, action, params)
            if terminate_after is not None:
                terminated = jnp.logical_or(terminated, inner.time >= terminate_after)
            return obs, StickyState(inner, action, inner.time), reward, terminated, info

        def reset_env(self, key, params):
            obs, inner = env.reset_env(key, params)
            return obs, StickyState(inner, jnp.zeros((), jnp.int32), inner.time)

        def is_truncated(self, state, params):
            return env.is_truncated(state.inner, params)

    StickyActions.__module__ = type(env).__module__  # still recognised as a MinAtar game
    return StickyActions()


@gin.configurable
def create_jax_environment(
    name: str,
    params: dict[str, Any] | None = None,
    sticky_action_probability: float | None = None,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """Creates a gymnax environment and its parameters.

    Args:
      name: "gymnax:Breakout-MinAtar", "minatar:breakout", "gym:CartPole-v1", ...
      params: fields of gymnax's `EnvParams` to override, e.g. {"max_steps_in_episode": 27000}.
      sticky_action_probability: None: 0.1 for 'minatar:<game>' (the minatar package's default),
        none for other names; a number: that probability (0 turns the wrapper off).
      **kwargs: passed to the gymnax environment's constructor (they override those implied by
        the name, e.g. `use_minimal_action_set=True`).

    Returns:
      (env, env_params): a `gymnax.environments.environment.Environment` and its params.

    Raises:
      ImportError: gymnax is not installed (the message says how to install it).
      ValueError: unknown name; the message lists the valid ones.
    """
    gymnax = _import_gymnax()
    gymnax_id, implied_kwargs = _resolve(name, list(gymnax.registered_envs))
    if gymnax_id == "Asterix-MinAtar":
        gymnax_fixes.install()  # same outputs, no while loop in the step (see gymnax_fixes)
    env, env_params = gymnax.make(gymnax_id, **{**implied_kwargs, **kwargs})
    if params:
        env_params = env_params.replace(**params)
    if name.strip().lower().startswith("minatar:"):  # the minatar package's semantics
        if sticky_action_probability is None:
            sticky_action_probability = MINATAR_STICKY_ACTION_PROBABILITY
        env = sticky_actions(env, sticky_action_probability, MINATAR_GAME_CLOCK.get(gymnax_id))
    elif sticky_action_probability:
        env = sticky_actions(env, sticky_action_probability)
    return env, env_params
