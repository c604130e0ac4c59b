"""Rainbow (prioritized replay) under the compiled runner, on gymnax CartPole (CPU, small budgets).

- rainbow/cartpole.gin, one seed, two iterations of 1000 steps: finite loss, the replay's sum tree
  holds exactly its valid slots with priorities that moved away from the initial 1.0, and greedy
  evaluation beats a random policy (~22 per episode);
- (slow) a small Rainbow killed after one iteration resumes to the uninterrupted run's numbers
  (the sum tree is part of the checkpoint).
"""
from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from accumbens.replay import jax_sum_tree
from accumbens.replay.device_prioritized import DevicePrioritizedReplayState


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    previous = {k: getattr(jax.config, k) for k in ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")}
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield
    for key, value in previous.items():
        jax.config.update(key, value)


def _runner(base_dir, bindings=(), **kwargs):
    from accumbens import train
    from accumbens.runners.compiled import CompiledRunner

    train.parse_config(["rainbow/cartpole"], list(bindings))
    return CompiledRunner(str(base_dir), tensorboard=False, **kwargs)


def _records(base_dir, seed=0):
    from accumbens.runners.logging import read_records

    return read_records(os.path.join(str(base_dir), f"seed_{seed}"))


def test_rainbow_cartpole_learns_with_device_prioritized_replay(tmp_path, compile_cache):
    runner = _runner(tmp_path, num_iterations=2, training_steps=1000, evaluation_steps=1000, num_eval_envs=4, seed=0)
    assert runner.prioritized and runner.replay.alpha == 0.5 and runner.replay.beta == 0.5 and runner.replay.stratified
    runner.run_experiment()
    records = _records(tmp_path)
    assert [r["update_steps"] for r in records] == [(1000 - 500) // 4, 1000 // 4]
    assert all(np.isfinite(r["loss"]) for r in records)
    assert records[1]["eval_return_mean"] is None or records[1]["eval_return_mean"] > 45, records[1]  # random: ~22
    # The tree after a phase (the same compiled program): mass exactly on the valid slots, and
    # the agent's priorities replaced the initial 1.0 of the slots it sampled.
    states, _ = runner.train_phase(runner.init_states(), 0)
    replay = jax.tree.map(lambda x: np.asarray(x)[0], jax.device_get(states.replay))
    assert isinstance(states.replay, DevicePrioritizedReplayState)
    leaves = np.asarray(jax_sum_tree.get(jax.tree.map(np.asarray, replay.tree), np.arange(runner.replay.num_slots)))
    valid = np.asarray(runner.replay.is_valid(replay, *runner.replay.locate(replay, np.arange(runner.replay.num_slots))))
    assert int(replay.num_valid) == valid.sum() == 1000 - 2  # the newest 2 steps wait for their 3-step windows
    assert np.all(leaves[~valid] == 0) and np.all(leaves[valid] > 0)
    assert np.sum(leaves[valid] != 1.0) > 100 and float(replay.tree.max_recorded) > 1.0


_SMALL = ["MLP.hidden_units = (32, 32)", "RainbowAgent.batch_size = 16", "RainbowAgent.min_replay_history = 100",
          "PrioritizedReplayBuffer.capacity = 2000"]


@pytest.mark.slow  # three runs, ~80 s on 2 busy CPU cores
def test_prioritized_resume_reproduces_uninterrupted_run(tmp_path, compile_cache):
    run = dict(training_steps=300, evaluation_steps=0, num_seeds=2, bindings=_SMALL)
    _runner(tmp_path / "full", num_iterations=2, **run).run_experiment()
    _runner(tmp_path / "cut", num_iterations=1, **run).run_experiment()
    _runner(tmp_path / "cut", num_iterations=2, **run).run_experiment()
    for seed in (0, 1):
        full, cut = _records(tmp_path / "full", seed), _records(tmp_path / "cut", seed)
        assert len(full) == len(cut) == 2
        for a, b in zip(full, cut):
            for key in ("train_episodes", "train_return_mean", "loss", "update_steps", "total_train_steps"):
                assert a[key] == b[key], (seed, a["iteration"], key)
