"""The one shared replay: circular storage, n-step returns, frame stacks, prioritized sampling."""
from accumbens.replay.batch import Batch
from accumbens.replay.checkpointing import ReplayCheckpointError
from accumbens.replay.circular import ReplayBuffer

__all__ = ["Batch", "ReplayBuffer", "ReplayCheckpointError"]
