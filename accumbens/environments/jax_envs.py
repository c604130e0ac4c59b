"""JAX-native environments (gymnax) for the compiled runner.

`create_jax_environment(name)` returns gymnax's `(env, params)`: `env.reset(key, params)` and
`env.step(key, state, action, params)` are pure functions usable under `jax.jit`, `jax.vmap` and
`lax.scan`. gymnax's `step` returns `(obs, state, reward, terminated, truncated, info)` and
resets automatically when an episode ends.

Names:
  gymnax:<id>          any gymnax id with gymnax's own defaults, e.g. "gymnax:Breakout-MinAtar"
                       (minimal action set, 1000-step episodes), "gymnax:CartPole-v1".
  minatar:<game>       the gymnax port of a MinAtar game, configured to match
                       `create_environment("minatar:<game>")`: all 6 actions, same channels.
                       gymnax's MinAtar has no sticky actions and caps episodes at
                       `params.max_steps_in_episode` (1000 by default; override with
                       `params={"max_steps_in_episode": ...}`).
  gym:<id>             the gymnax port of a classic-control task, e.g. "gym:CartPole-v1".

gymnax is an optional dependency (`pip install -e ".[jax-envs]"`); it is imported only here, on
first use.
"""
from __future__ import annotations

from typing import Any

import gin

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


@gin.configurable
def create_jax_environment(
    name: str, params: dict[str, Any] | None = None, **kwargs: Any
) -> tuple[Any, Any]:
    """Creates a gymnax environment and its parameters.

    Args:
      name: "gymnax:Breakout-MinAtar", "minatar:breakout", "gym:CartPole-v1", ...
      params: fields of gymnax's `EnvParams` to override, e.g. {"max_steps_in_episode": 27000}.
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
    env, env_params = gymnax.make(gymnax_id, **{**implied_kwargs, **kwargs})
    if params:
        env_params = env_params.replace(**params)
    return env, env_params
