"""Every packaged agent config runs an iteration; DQN learns CartPole."""
import gin
import numpy as np
import pytest

from accumbens import train
from accumbens.runners.runner import Runner


def _runner(tmp_path, gin_file, bindings):
    train.parse_config([gin_file], bindings)
    return Runner(base_dir=str(tmp_path), tensorboard=False)


@pytest.mark.parametrize(
    "gin_file,extra",
    [
        ("dqn/minatar", ["Runner.training_steps = 300", "Runner.evaluation_steps = 100", "DQNAgent.min_replay_history = 100"]),
        ("dqn/atari", ["Runner.training_steps = 60", "Runner.evaluation_steps = 20", "Runner.max_steps_per_episode = 40", "DQNAgent.min_replay_history = 40", "ReplayBuffer.capacity = 1000"]),
        ("quickstart", ["Runner.training_steps = 300", "Runner.evaluation_steps = 100", "DQNAgent.min_replay_history = 100"]),
    ],
)
def test_packaged_config_runs_an_iteration(tmp_path, gin_file, extra):
    runner = _runner(tmp_path, gin_file, ["Runner.num_iterations = 1", *extra])
    records = runner.run_experiment()
    assert len(records) == 1
    record = records[0]
    assert record["train_steps"] >= 1 and record["eval_steps"] >= 1
    assert record["update_steps"] > 0 and np.isfinite(record["loss"])
    assert (tmp_path / "config.gin").exists() and (tmp_path / "checkpoints" / "ckpt-000000" / "manifest.json").exists()


def test_dqn_learns_cartpole(tmp_path):
    """Mean evaluation return >= 195 within 30 iterations of 1000 steps (about a minute on 2 cores)."""
    runner = _runner(tmp_path, "dqn/cartpole", [])
    best = -np.inf
    for iteration in range(runner.num_iterations):
        record = runner.run_iteration(iteration)
        best = max(best, record["eval_return_mean"])
        if best >= 195:
            break
    assert best >= 195, f"best evaluation return {best:.1f} after {iteration + 1} iterations"
