"""The several-seeds runner against its reference: N separate host `Runner` runs with those seeds.

Reference numbers come from `accumbens.runners.runner.Runner`, the single-seed host loop; every
per-seed quantity (returns, episode counts, steps, losses, update counts, final parameters) must
match. DQN on MinAtar Breakout with tiny budgets keeps each run to seconds on CPU while still
crossing `min_replay_history`, so updates, target syncs and epsilon decay all happen.
"""
import json
import os

import jax
import numpy as np
import pytest

from accumbens import train
from accumbens.runners.multi_seed import MultiSeedRunner, seed_directory
from accumbens.runners.runner import Runner

BINDINGS = [
    "Runner.num_iterations = 2",
    "Runner.training_steps = 200",
    "Runner.evaluation_steps = 50",
    "Runner.max_steps_per_episode = 150",
    "DQNAgent.min_replay_history = 100",
    "DQNAgent.update_period = 4",
    "DQNAgent.target_update_period = 64",
    "DQNAgent.epsilon_decay_period = 200",
    "DQNAgent.batch_size = 8",
    "ReplayBuffer.capacity = 5000",
]
# Records must agree on these exactly (wall-clock keys excluded).
COMPARED = ("iteration", "train_episodes", "train_return_mean", "train_return_median", "train_steps",
            "loss", "update_steps", "eval_episodes", "eval_return_mean", "eval_steps", "total_train_steps")


def _separate(tmp_path, seed, extra=()):
    train.parse_config(["dqn/minatar.gin"], BINDINGS + [f"Runner.seed = {seed}", *extra])
    runner = Runner(base_dir=str(tmp_path / f"single_{seed}"), tensorboard=False, progress_bar=False)
    return runner, [runner.run_iteration(i) for i in range(runner.num_iterations)]


def _multi(tmp_path, seeds, name, extra=(), **kwargs):
    train.parse_config(["dqn/minatar.gin"], BINDINGS + list(extra))
    runner = MultiSeedRunner(base_dir=str(tmp_path / name), seeds=seeds, tensorboard=False, progress_bar=False, **kwargs)
    return runner, runner.run_experiment()


def _assert_same_records(got, want):
    for key in COMPARED:
        a, b = got[key], want[key]
        if isinstance(b, float) and np.isnan(b):
            assert np.isnan(a), key
        else:
            assert a == b, f"{key}: {a} != {b}"


@pytest.fixture(scope="module")
def separate_runs(tmp_path_factory):
    path = tmp_path_factory.mktemp("separate")
    return {seed: _separate(path, seed) for seed in (0, 1, 2)}


def test_one_seed_is_exactly_the_host_runner(tmp_path, separate_runs):
    runner, history = _multi(tmp_path, [1], "multi1")
    single, records = separate_runs[1]
    for got, want in zip(history, records):
        _assert_same_records(got[0], want)
    runner.agent.sync_to_agents()
    jax.tree.map(np.testing.assert_array_equal, runner.agents[0].state, single.agent.state)


def test_three_seeds_give_each_seeds_separate_run(tmp_path, separate_runs):
    runner, history = _multi(tmp_path, [0, 1, 2], "multi3")
    for i, seed in enumerate((0, 1, 2)):
        single, records = separate_runs[seed]
        for got, want in zip(history, records):
            assert got[i]["train_episodes"] == want["train_episodes"]
            assert got[i]["train_steps"] == want["train_steps"]
            assert got[i]["update_steps"] == want["update_steps"]
            # vmap may reassociate float sums in the batched convolution: losses within float32
            # round-off, returns equal (actions are argmaxes of Q-values far apart at this scale).
            np.testing.assert_allclose(got[i]["loss"], want["loss"], rtol=1e-4)
            assert got[i]["train_return_mean"] == want["train_return_mean"]
            assert got[i]["eval_return_mean"] == want["eval_return_mean"]
        runner.agent.sync_to_agents()
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                     runner.agents[i].state, single.agent.state)
    # Per-seed files in the Runner's format.
    for seed in (0, 1, 2):
        directory = seed_directory(runner.base_dir, seed)
        with open(os.path.join(directory, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f]
        assert [r["iteration"] for r in rows] == [0, 1]
        assert os.path.isdir(os.path.join(directory, "checkpoints", "ckpt-000001"))


def test_overlap_on_or_off_gives_identical_numbers(tmp_path):
    _, on = _multi(tmp_path, [0, 3], "on", act_before_update=True, overlap=True)
    runner, off = _multi(tmp_path, [0, 3], "off", act_before_update=True, overlap=False)
    for a, b in zip(on, off):
        for x, y in zip(a, b):
            _assert_same_records(x, y)
    assert runner.timings["update"] > 0 and runner.timings["environment"] > 0


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    _, full = _multi(tmp_path, [0, 1], "full")
    _, first = _multi(tmp_path, [0, 1], "resumed", extra=["Runner.num_iterations = 1"])
    _, rest = _multi(tmp_path, [0, 1], "resumed")
    assert len(first) == 1 and len(rest) == 1
    for x, y in zip(rest[0], full[1]):
        _assert_same_records(x, y)


def test_bad_seeds_are_refused(tmp_path):
    train.parse_config(["dqn/minatar.gin"], BINDINGS)
    with pytest.raises(ValueError, match="distinct seeds"):
        MultiSeedRunner(base_dir=str(tmp_path), seeds=[1, 1])


def test_gymnasium_environments_through_the_same_runner(tmp_path):
    """CartPole (gymnasium classic control) with the lagged, overlapped schedule: two seeds in one
    process give each seed the episodes, steps and update counts of a one-seed run of that seed."""
    cartpole = ["Runner.num_iterations = 1", "Runner.training_steps = 300", "Runner.evaluation_steps = 0",
                "DQNAgent.min_replay_history = 100", "DQNAgent.batch_size = 16", "MLP.hidden_units = (32,)"]
    runs = {}
    for name, seeds in (("both", [0, 1]), ("only_1", [1])):
        train.parse_config(["dqn/cartpole.gin"], cartpole)
        runner = MultiSeedRunner(base_dir=str(tmp_path / name), seeds=seeds, act_before_update=True,
                                 tensorboard=False, progress_bar=False)
        runs[name] = runner.run_experiment()[0]
    got, want = runs["both"][1], runs["only_1"][0]
    for key in ("train_episodes", "train_steps", "train_return_mean", "update_steps"):
        assert got[key] == want[key], key
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-4)
    assert got["update_steps"] > 0
