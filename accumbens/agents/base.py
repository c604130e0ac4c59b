"""The agent contract: pure functions over explicit state.

Every agent in accumbens is an `Agent`: three pure functions that the host runner (through a thin
stateful shell) and the compiled runner (under `jit`/`vmap`/`lax.scan`) both call.

  init(rng, observation_shape, num_actions) -> AgentState
  act(state, observation, rng, training) -> action            # observation: [*obs_shape] or batched
  update(state, batch, rng) -> (state, metrics)               # one gradient step, target sync inside

`update` returns new priorities under metrics["priorities"] when replay is prioritized.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax

from accumbens.replay.batch import Batch

PRNGKey = jax.Array
AgentState = Any  # a pytree, usually a flax.struct dataclass
Metrics = dict


class Agent(NamedTuple):
    """The pure core of an agent. Compose these functions to build new agents."""

    init: Callable[[PRNGKey, tuple, int], AgentState]
    act: Callable[[AgentState, jax.Array, PRNGKey, bool], jax.Array]
    update: Callable[[AgentState, Batch, PRNGKey], tuple[AgentState, Metrics]]
    # Optional: policy(state, observation, training) -> the action probabilities [..., A] that `act`
    # samples from. Recorded datasets use it for the behaviour probability mu(a|s) of each taken
    # action; None (the default) records NaN, "unknown".
    policy: Optional[Callable[[AgentState, jax.Array, bool], jax.Array]] = None


__all__ = ["Agent", "AgentState", "Batch", "Metrics", "PRNGKey"]
