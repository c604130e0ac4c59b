"""The offline runner (learns on CartPole from uniform-random data, resumes exactly, selected by
name) and the host runner's dataset recording (the dataset equals the run's own replay)."""
from __future__ import annotations

import json
import os

import gymnasium as gym
import numpy as np
import pytest

from accumbens import train
from accumbens.replay.dataset import DatasetError, DatasetWriter, FixedReplayBuffer, read_manifest
from accumbens.runners import create_runner
from accumbens.runners.logging import read_records
from accumbens.runners.offline import OfflineRunner
from accumbens.runners.runner import Runner

# A smaller network than dqn/cartpole's 512-512 keeps the test within seconds on a loaded CPU.
SMALL = ["MLP.hidden_units = (64, 64)", "DQNAgent.batch_size = 64"]


@pytest.fixture(scope="module")
def random_dataset(tmp_path_factory):
    """3000 steps of the uniform random policy on CartPole-v1; returns (directory, mean return)."""
    directory = str(tmp_path_factory.mktemp("data") / "cartpole_random")
    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(0)
    returns, episode_return = [], 0.0
    with DatasetWriter(directory, (4,), np.float32, 2, chunk_size=1000) as writer:
        observation, _ = env.reset(seed=0)
        for _ in range(3000):
            action = int(rng.integers(2))
            next_observation, reward, terminated, truncated, _ = env.step(action)
            episode_return += reward
            ended = terminated or truncated
            writer.add(observation, action, reward, terminated, truncated,
                       final_observation=next_observation if ended else None,
                       behaviour_probability=0.5, epsilon=1.0)
            if ended:
                returns.append(episode_return)
                episode_return = 0.0
                observation, _ = env.reset()
            else:
                observation = next_observation
    return directory, float(np.mean(returns))


def make_offline(base_dir, dataset_dir, bindings=()):
    train.parse_config(["offline/dqn_cartpole"], [f"OfflineRunner.dataset_dir = '{dataset_dir}'", *SMALL, *bindings])
    return OfflineRunner(base_dir=str(base_dir), tensorboard=False, progress_bar=False)


def test_offline_dqn_improves_over_the_random_policy(tmp_path, random_dataset, assert_learns):
    """Random CartPole returns about 22; offline DQN on its data must reach 3x that online."""
    directory, random_return = random_dataset
    assert 15 < random_return < 30
    runner = make_offline(tmp_path, directory, ["OfflineRunner.num_iterations = 8",
                                                "OfflineRunner.training_steps = 250",
                                                "OfflineRunner.evaluation_steps = 500"])
    assert len(runner.agent.replay) == 3000
    assert_learns(runner, 3 * random_return)


def _comparable(records):
    drop = ("seconds", "per_second", "wall_time")
    return [{k: v for k, v in r.items() if not any(d in k for d in drop)} for r in records]


def test_offline_resume_reproduces_the_uninterrupted_run(tmp_path, random_dataset):
    directory, _ = random_dataset
    short = ["OfflineRunner.training_steps = 40", "OfflineRunner.evaluation_steps = 60"]
    make_offline(tmp_path / "a", directory, [*short, "OfflineRunner.num_iterations = 2"]).run_experiment()
    make_offline(tmp_path / "b", directory, [*short, "OfflineRunner.num_iterations = 1"]).run_experiment()
    resumed = make_offline(tmp_path / "b", directory, [*short, "OfflineRunner.num_iterations = 2"])
    assert [r["iteration"] for r in resumed.run_experiment()] == [1]
    a, b = read_records(str(tmp_path / "a")), read_records(str(tmp_path / "b"))
    assert _comparable(a) == _comparable(b)
    assert len(a) == 2 and a[-1]["total_gradient_steps"] == 80 and a[-1]["update_steps"] == 40
    # The checkpoint holds a reference to the dataset, not a copy of it.
    ckpt = tmp_path / "a" / "checkpoints" / "ckpt-000001" / "replay"
    assert sorted(os.listdir(ckpt)) == ["fixed_replay.json"]


def test_selected_by_name_and_clear_errors(tmp_path, random_dataset):
    directory, _ = random_dataset
    train.parse_config(["offline/dqn_cartpole"], [f"OfflineRunner.dataset_dir = '{directory}'", *SMALL,
                                                  "OfflineRunner.tensorboard = False"])
    assert isinstance(create_runner(str(tmp_path / "by_gin")), OfflineRunner)  # default_runner in the gin file
    train.parse_config(["dqn/cartpole"], [f"OfflineRunner.dataset_dir = '{directory}'", *SMALL])
    assert isinstance(create_runner(str(tmp_path / "by_cli"), runner_name="offline"), OfflineRunner)
    # The agent's own replay may be the fixed one; then OfflineRunner.dataset_dir is optional.
    train.parse_config(["offline/dqn_cartpole"], [*SMALL, "DQNAgent.replay_scheme = 'fixed'",
                                                  f"FixedReplayBuffer.dataset_dir = '{directory}'"])
    runner = OfflineRunner(base_dir=str(tmp_path / "agent_fixed"), tensorboard=False)
    assert isinstance(runner.agent.replay, FixedReplayBuffer) and len(runner.agent.replay) == 3000
    train.parse_config(["offline/dqn_cartpole"], [*SMALL, "DQNAgent.replay_scheme = 'fixed'",
                                                  f"FixedReplayBuffer.dataset_dir = '{directory}'",
                                                  f"OfflineRunner.dataset_dir = '{tmp_path}'"])
    with pytest.raises(ValueError, match="set only one"):
        OfflineRunner(base_dir=str(tmp_path / "both"), tensorboard=False)
    train.parse_config(["offline/dqn_cartpole"], SMALL)
    with pytest.raises(ValueError, match="OfflineRunner.dataset_dir"):
        OfflineRunner(base_dir=str(tmp_path / "none"), tensorboard=False)
    # A dataset from another environment: observation shapes differ.
    other = tmp_path / "other"
    with DatasetWriter(other, (3,), np.float32, 2) as writer:
        writer.add(np.zeros(3), 0, 1.0, True, final_observation=np.zeros(3))
    train.parse_config(["offline/dqn_cartpole"], [f"OfflineRunner.dataset_dir = '{other}'", *SMALL])
    with pytest.raises(DatasetError, match="shape"):
        OfflineRunner(base_dir=str(tmp_path / "other_run"), tensorboard=False)


def _recording_runner(base_dir, dataset_dir, iterations):
    train.parse_config(["dqn/cartpole"], [*SMALL, f"Runner.record_dataset_dir = '{dataset_dir}'",
                                          f"Runner.num_iterations = {iterations}", "Runner.training_steps = 150",
                                          "Runner.evaluation_steps = 20", "DQNAgent.min_replay_history = 10000"])  # no updates: nothing to compile
    return Runner(base_dir=str(base_dir), tensorboard=False, progress_bar=False)


def test_recorded_dataset_equals_the_runs_replay_and_resumes_exactly(tmp_path):
    runner = _recording_runner(tmp_path / "run", tmp_path / "data", 2)
    runner.run_experiment()
    online = runner.agent.replay
    fixed = FixedReplayBuffer(str(tmp_path / "data"), online.observation_shape, online.observation_dtype,
                              online.stack_size, online.update_horizon, online.gamma)
    np.testing.assert_array_equal(fixed.valid_indices(), online.valid_indices())
    valid = online.valid_indices()
    want, got = online.get_transitions(valid), fixed.get_transitions(valid)
    for name in ("observation", "action", "reward", "next_observation", "discount"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    manifest = read_manifest(str(tmp_path / "data"))
    assert [c["tag"] for c in manifest["chunks"]] == [0, 1] and not manifest["open_episode"]
    assert manifest["num_steps"] == runner.agent.env_steps
    # DQN's `policy` gives mu(a|s); epsilon is 1 during the warm-up, so mu = 1/2 over CartPole's 2 actions.
    np.testing.assert_allclose(got.behaviour_probability, 0.5)
    # Interrupted after iteration 0 (and iteration 1's data partly written), then resumed: the same data.
    _recording_runner(tmp_path / "run2", tmp_path / "data2", 1).run_experiment()
    with open(tmp_path / "data2" / "manifest.json") as f:
        assert len(json.load(f)["chunks"]) == 1
    resumed = _recording_runner(tmp_path / "run2", tmp_path / "data2", 2)
    resumed.recorder.add(np.zeros(4), 0, 0.0)  # stray steps of the crashed iteration, then a flush
    resumed.recorder.flush()
    resumed.run_experiment()
    assert read_manifest(str(tmp_path / "data2"))["num_steps"] == manifest["num_steps"]
    second = FixedReplayBuffer(str(tmp_path / "data2"))
    np.testing.assert_array_equal(second._observation, fixed._observation)
    np.testing.assert_array_equal(second._action, fixed._action)
    # Another run may not append to (or truncate) this dataset.
    with pytest.raises(DatasetError, match="recorded by run"):
        _recording_runner(tmp_path / "run3", tmp_path / "data", 1)


def test_scanned_updates_equal_one_by_one(tmp_path, random_dataset):
    """HostAgent.learn(K > 1) runs K updates in one lax.scan: same result as K single updates."""
    import jax

    directory, _ = random_dataset
    runner = make_offline(tmp_path, directory, ["DQNAgent.target_update_period = 8"])  # a sync inside the scan
    agent = runner.agent
    k = 5
    batch = agent.replay.sample(np.random.default_rng(0), k * agent.batch_size)
    batches = jax.tree.map(lambda x: x.reshape(k, agent.batch_size, *x.shape[1:]), batch)
    state, rng, losses = agent._update_many_fn(agent.state, agent._rng, batches, 0)
    one_state, one_rng = agent.state, agent._rng
    for i in range(k):
        single = jax.tree.map(lambda x: x[i], batches)
        one_state, one_rng, metrics = agent._update_fn(one_state, one_rng, single, i * agent.update_period)
        np.testing.assert_allclose(losses[i], metrics["loss"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), state.params, one_state.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), state.target_params, one_state.target_params)
    np.testing.assert_array_equal(rng, one_rng)
    agent.learn(12, updates_per_call=5)  # two scans of 5 and two single updates
    assert agent.pop_training_metrics()["update_steps"] == 12 and agent.env_steps == 12 * agent.update_period


OFFLINE_CONFIGS = sorted(f[:-4] for f in os.listdir(os.path.join(train.CONFIG_ROOT, "offline")) if f.endswith(".gin"))


@pytest.mark.parametrize("name", OFFLINE_CONFIGS)
def test_offline_configs_parse_and_select_the_offline_runner(name):
    import gin

    train.parse_config([f"offline/{name}"], [])
    assert gin.query_parameter("create_runner.default_runner") == "offline"


def test_offline_minatar_config_runs_an_iteration(tmp_path):
    from accumbens.environments import create_environment

    env = create_environment("minatar:breakout")
    rng = np.random.default_rng(0)
    with DatasetWriter(tmp_path / "data", (10, 10, 4), np.uint8, 6) as writer:
        observation, _ = env.reset(seed=0)
        for _ in range(300):
            action = int(rng.integers(6))
            next_observation, reward, terminated, truncated, _ = env.step(action)
            ended = terminated or truncated
            writer.add(observation, action, reward, terminated, truncated,
                       final_observation=next_observation if ended else None, behaviour_probability=1 / 6)
            observation = env.reset()[0] if ended else next_observation
    train.parse_config(["offline/dqn_minatar"], [f"OfflineRunner.dataset_dir = '{tmp_path / 'data'}'",
                                                 "OfflineRunner.num_iterations = 1", "OfflineRunner.training_steps = 20",
                                                 "OfflineRunner.evaluation_steps = 30", "OfflineRunner.updates_per_call = 10"])
    runner = create_runner(str(tmp_path / "run"))
    record = runner.run_experiment()[0]
    assert record["update_steps"] == 20 and np.isfinite(record["loss"]) and record["eval_steps"] >= 30
