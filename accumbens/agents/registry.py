"""Agent selection in one place: `create_agent.agent_name = 'dqn'` in gin, or a user's class.

Packaged agents are registered by short name. A user's agent is any callable taking
`(num_actions, observation_shape, observation_dtype, seed)` and returning a host agent, passed by
gin reference: `create_agent.agent_fn = @MyAgent` (after `import my_module` in the gin file).
"""
from __future__ import annotations

import difflib
import importlib
from typing import Callable, Optional, Sequence

import gin
import numpy as np

# Packaged agents: short name -> "module:Class", imported on first use. Add one line per agent.
PACKAGED_AGENTS: dict[str, str] = {
    "dqn": "accumbens.agents.dqn:DQNAgent",
    "rainbow": "accumbens.agents.rainbow:RainbowAgent",
    "pessimistic": "accumbens.agents.pessimistic:PessimisticAgent",
    "hyperbolic": "accumbens.agents.hyperbolic:HyperbolicAgent",
    "deepmdp": "accumbens.agents.deepmdp:DeepMDPAgent",
    "cop_td": "accumbens.agents.cop_td:COPTDAgent",
    "sequence_dqn": "accumbens.agents.sequence_dqn:SequenceDQNAgent",
}

_REGISTRY: dict[str, Callable[[], Callable]] = {}


def register_agent(name: str, factory_loader: Callable[[], Callable]) -> None:
    """Registers `name` at run time; `factory_loader()` returns the agent class (imported lazily)."""
    _REGISTRY[name] = factory_loader


def _loader(reference: str) -> Callable[[], Callable]:
    module, attribute = reference.split(":")
    return lambda: getattr(importlib.import_module(module), attribute)


for _name, _reference in PACKAGED_AGENTS.items():
    register_agent(_name, _loader(_reference))


def known_agents() -> list[str]:
    return sorted(_REGISTRY)


@gin.configurable
def create_agent(
    num_actions: int,
    observation_shape: Sequence[int],
    observation_dtype: np.dtype,
    seed: int = 0,
    agent_name: str = "dqn",
    agent_fn: Optional[Callable] = None,
):
    """Builds the host agent chosen by `agent_fn` (a gin reference) or else by `agent_name`."""
    if agent_fn is None:
        if agent_name not in _REGISTRY:
            close = difflib.get_close_matches(str(agent_name), known_agents(), n=1)
            raise ValueError(
                f"unknown agent {agent_name!r}{f' (did you mean {close[0]!r}?)' if close else ''}; "
                f"known agents: {known_agents()}. To use your own agent, import its module in the gin "
                "file (`import my_agent`, or --gin_modules my_agent) and bind "
                "`create_agent.agent_fn = @MyAgent`; see docs/writing_an_agent.md."
            )
        agent_fn = _REGISTRY[agent_name]()
    return agent_fn(
        num_actions=num_actions,
        observation_shape=observation_shape,
        observation_dtype=observation_dtype,
        seed=seed,
    )
