"""Every packaged agent config runs an iteration; DQN learns CartPole."""
import numpy as np
import pytest


@pytest.mark.parametrize(
    "gin_file,extra",
    [
        ("dqn/minatar", ["Runner.training_steps = 300", "Runner.evaluation_steps = 100", "DQNAgent.min_replay_history = 100"]),
        ("dqn/atari", ["Runner.training_steps = 60", "Runner.evaluation_steps = 20", "Runner.max_steps_per_episode = 40", "DQNAgent.min_replay_history = 40", "ReplayBuffer.capacity = 1000"]),
        ("quickstart", ["Runner.training_steps = 300", "Runner.evaluation_steps = 100", "DQNAgent.min_replay_history = 100"]),
    ],
)
def test_packaged_config_runs_an_iteration(tmp_path, make_runner, gin_file, extra):
    runner = make_runner(gin_file, ["Runner.num_iterations = 1", *extra])
    records = runner.run_experiment()
    assert len(records) == 1
    record = records[0]
    assert record["train_steps"] >= 1 and record["eval_steps"] >= 1
    assert record["update_steps"] > 0 and np.isfinite(record["loss"])
    assert (tmp_path / "config.gin").exists() and (tmp_path / "checkpoints" / "ckpt-000000" / "manifest.json").exists()


def test_dqn_learns_cartpole(make_runner, assert_learns):
    """Mean evaluation return >= 195 within 30 iterations of 1000 steps (about a minute on 2 cores)."""
    assert_learns(make_runner("dqn/cartpole"), 195)
