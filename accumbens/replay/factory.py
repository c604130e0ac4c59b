"""`create_replay`: the replay for a `replay_scheme` name, so agents and gin files pick by name."""
from __future__ import annotations

import gin

from accumbens.replay.circular import ReplayBuffer
from accumbens.replay.dataset import FixedReplayBuffer
from accumbens.replay.prioritized import PrioritizedReplayBuffer
from accumbens.replay.sequence import SequenceReplayBuffer

REPLAY_SCHEMES = {
    "uniform": ReplayBuffer,
    "prioritized": PrioritizedReplayBuffer,
    "fixed": FixedReplayBuffer,
    "sequence": SequenceReplayBuffer,  # L-step histories with a mask, for sequence agents
}


@gin.configurable
def create_replay(scheme: str = "uniform", **kwargs) -> ReplayBuffer:
    """Builds the replay for `scheme`: 'uniform' (ReplayBuffer), 'prioritized', or 'fixed' (a
    read-only FixedReplayBuffer over the dataset at `FixedReplayBuffer.dataset_dir`).

    Keyword arguments go to the constructor: capacity, observation_shape, observation_dtype,
    stack_size, update_horizon, gamma; prioritized also takes alpha, beta, stratified, block_size;
    'sequence' (SequenceReplayBuffer) takes context_length.
    Unbound constructor arguments still come from gin (`ReplayBuffer.capacity = ...`).
    """
    if scheme not in REPLAY_SCHEMES:
        raise ValueError(f"Unknown replay scheme {scheme!r}; choose one of {sorted(REPLAY_SCHEMES)}.")
    return REPLAY_SCHEMES[scheme](**kwargs)
