"""Environments: one factory, `create_environment("family:game", **kwargs)`.

Families and names (see each module for its options):

  atari:Pong, atari:SpaceInvaders   Atari 2600 through ale-py with Dopamine's preprocessing
                                    (`atari.py`). Game names are Dopamine-style CamelCase or the
                                    ROM id ("space_invaders"); gym ids such as
                                    "PongNoFrameskip-v4" are refused because their suffix implies
                                    other preprocessing settings.
  minatar:breakout                  MinAtar: asterix, breakout, freeway, seaquest,
                                    space_invaders (`minatar.py`).
  gym:CartPole-v1                   gymnasium classic control with discrete actions (`gym.py`).
  memory:corridor, memory:corridor-100
                                    the memory corridor of issue 6 (`memory.py`).
  pathworld:paths                   paths of different delays under an uncertain hazard, for the
                                    hyperbolic-discounting check (`pathworld.py`).
  jax:minatar:breakout              a gymnax (JAX) environment stepped from the host, by its
                                    `create_jax_environment` name (`gymnax_host.py`): the host
                                    runner on the compiled runner's exact game.

Every environment is a gymnasium `Env` with a `Discrete` action space that keeps `terminated`
(a true end: do not bootstrap) apart from `truncated` (a time limit: bootstrap).

JAX environments (gymnax, for the compiled runner) come from `create_jax_environment`, see
`jax_envs.py`.

`create_environment` is gin-configurable, so a gin file can say
    create_environment.name = "minatar:breakout"
    create_environment.max_episode_steps = 27000   # forwarded to the family's constructor
(every family accepts `max_episode_steps`), and the family constructors (`AtariEnv`,
`MinAtarEnv`, `create_gym_environment`, `MemoryCorridorEnv`) are gin-configurable too.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any

import gin
import gymnasium

from accumbens.environments import atari, gym, gymnax_host, memory, minatar, pathworld
from accumbens.environments.jax_envs import create_jax_environment

__all__ = ["FAMILIES", "create_environment", "create_jax_environment", "parse_name"]

# Family name -> module implementing it. Each module provides
#   GAMES: tuple[str, ...]                      the names listed in error messages,
#   canonical_game(name: str) -> str | None     the game a user's spelling refers to,
#   make(game: str, **kwargs) -> gymnasium.Env  the environment for a canonical game.
# Importing the modules registers their gin configurables; the heavy packages behind them
# (minatar imports matplotlib) are imported only when an environment is made.
FAMILIES: dict[str, ModuleType] = {
    "atari": atari, "gym": gym, "jax": gymnax_host, "memory": memory, "minatar": minatar, "pathworld": pathworld
}


def _family_module(family: str, name: str) -> ModuleType:
    if family not in FAMILIES:
        raise ValueError(
            f"Unknown environment family {family!r} in {name!r}. Valid families: "
            f"{', '.join(sorted(FAMILIES))}. Names look like 'minatar:breakout', 'atari:Pong', "
            "'gym:CartPole-v1' or 'memory:corridor'."
        )
    return FAMILIES[family]


def parse_name(name: str) -> tuple[str, str]:
    """Splits "family:game" and returns (family, canonical game name).

    Raises:
      ValueError: if the family or game is unknown; the message lists the valid ones.
    """
    family, separator, game = name.partition(":")
    family = family.strip().lower()
    if not separator or not game:
        raise ValueError(
            f"Environment name {name!r} must look like 'family:game'. Valid families: "
            f"{', '.join(sorted(FAMILIES))}."
        )
    module = _family_module(family, name)
    canonical = module.canonical_game(game.strip())
    if canonical is None:
        hint = getattr(module, "unknown_game_hint", lambda _: "")(game)
        raise ValueError(
            f"Unknown {family} game {game!r}.{hint} Valid {family} games: "
            f"{', '.join(module.GAMES)}."
        )
    return family, canonical


@gin.configurable
def create_environment(name: str, **kwargs: Any) -> gymnasium.Env:
    """Creates the environment called `name` ("family:game"); kwargs go to its constructor.

    Args:
      name: e.g. "atari:Pong", "minatar:breakout", "gym:CartPole-v1", "memory:corridor-100".
      **kwargs: options of the family (e.g. `terminal_on_life_loss=True` for Atari,
        `flicker_probability=0.5` or `max_episode_steps=...` for MinAtar, `length=100` for the
        memory corridor).

    Returns:
      A gymnasium Env with a Discrete action space.

    Raises:
      ValueError: unknown family or game; the message lists the valid ones.
    """
    family, game = parse_name(name)
    env = FAMILIES[family].make(game, **kwargs)
    assert isinstance(env.action_space, gymnasium.spaces.Discrete), env.action_space
    return env
