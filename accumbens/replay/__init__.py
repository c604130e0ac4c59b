"""The one shared replay: circular storage, n-step returns, frame stacks, prioritized sampling.

  ReplayBuffer             uniform host replay (NumPy), `add` / `sample` / `update_priorities` /
                           `save` / `load`, returns `Batch`
  PrioritizedReplayBuffer  proportional prioritized replay on a `SumTree`
  create_replay            by scheme name: 'uniform', 'prioritized' or 'fixed'
  FixedReplayBuffer        read-only replay of a fixed dataset (same sampler); DatasetWriter
                           records one (accumbens.replay.dataset)
  SumTree                  NumPy sum tree; `accumbens.replay.jax_sum_tree` is its JAX form
"""
from accumbens.replay import jax_sum_tree
from accumbens.replay.batch import Batch
from accumbens.replay.checkpointing import ReplayCheckpointError
from accumbens.replay.circular import ReplayBuffer
from accumbens.replay.dataset import DatasetBatch, DatasetWriter, FixedReplayBuffer
from accumbens.replay.factory import REPLAY_SCHEMES, create_replay
from accumbens.replay.prioritized import PrioritizedReplayBuffer
from accumbens.replay.sequence import SequenceBatch, SequenceReplayBuffer
from accumbens.replay.sum_tree import SumTree

__all__ = [
    "Batch",
    "DatasetBatch",
    "DatasetWriter",
    "FixedReplayBuffer",
    "PrioritizedReplayBuffer",
    "REPLAY_SCHEMES",
    "ReplayBuffer",
    "ReplayCheckpointError",
    "SequenceBatch",
    "SequenceReplayBuffer",
    "SumTree",
    "create_replay",
    "jax_sum_tree",
]
