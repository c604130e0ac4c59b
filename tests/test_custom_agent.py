"""The extension path as a user takes it: `examples/custom_agent/` copied outside the repository.

Checks, in order: the example's expected-SARSA target against hand-computed and closed-form
values; its `update` against a float64 NumPy reference; that the included config's `DQNAgent.*`
bindings reach the user's agent; one short run of the copied example through the CLI (logs,
TensorBoard, checkpoint), its resumption from another working directory, and its plot; and that
a misspelt agent, reference or module fails with a message naming it and creates no run directory.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from accumbens import train
from accumbens.agents import losses, networks
from accumbens.agents.base import Batch
from accumbens.agents.registry import create_agent

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "custom_agent"
# Tiny budgets: one iteration of MinAtar Breakout is a few seconds after start-up.
TINY = [
    "Runner.num_iterations = 1",
    "Runner.training_steps = 200",
    "Runner.evaluation_steps = 50",
    "Runner.max_steps_per_episode = 100",
    "DQNAgent.min_replay_history = 100",
    "ReplayBuffer.capacity = 1000",
]
KEYS = ("train_episodes", "train_return_mean", "train_steps", "eval_return_mean", "eval_steps", "loss", "update_steps", "total_train_steps")


def _load_example():
    """The example module, imported by path under the name its gin file imports (`my_agent`)."""
    if "my_agent" in sys.modules:
        return sys.modules["my_agent"]
    spec = importlib.util.spec_from_file_location("my_agent", EXAMPLE / "my_agent.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["my_agent"] = module
    spec.loader.exec_module(module)
    return module


my_agent = _load_example()


@pytest.fixture
def user_project(tmp_path) -> Path:
    """A copy of examples/custom_agent/ in a temporary folder outside the repository."""
    project = tmp_path / "user_project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", "runs"))
    assert REPO not in project.resolve().parents
    return project


# ----- the expected-SARSA target ----------------------------------------------------------------
def test_expected_sarsa_target_hand_computed():
    # A = 3, epsilon = 0.3: pi = 0.1 on every action plus 0.7 on the greedy one.
    next_q = jnp.array([[1.0, 3.0, 2.0], [0.0, 0.0, -4.0], [5.0, 5.0, 5.0]])
    reward = jnp.array([1.0, -1.0, 2.0])
    discount = jnp.array([0.9, 0.5, 0.0])
    target = my_agent.expected_sarsa_target(reward, discount, next_q, 0.3)
    # row 0: pi = (.1, .8, .1), E = .1 + 2.4 + .2 = 2.7 -> 1 + .9 * 2.7 = 3.43
    # row 1: tie between actions 0 and 1 goes to the first: pi = (.8, .1, .1), E = -.4 -> -1 - .2
    # row 2: terminal (discount 0) -> the reward alone
    np.testing.assert_allclose(target, [3.43, -1.2, 2.0], rtol=1e-6)
    # pi greedy on other Q-values (the online network's): row 0 pi = (.8, .1, .1), E = .8 + .3 + .2 = 1.3
    policy_q = jnp.array([[9.0, 0.0, 0.0], [0.0, 0.0, -4.0], [5.0, 5.0, 5.0]])
    target = my_agent.expected_sarsa_target(reward, discount, next_q, 0.3, policy_q)
    np.testing.assert_allclose(target, [1.0 + 0.9 * 1.3, -1.2, 2.0], rtol=1e-6)


def test_expected_sarsa_target_limits():
    """epsilon = 0 is DQN's max target (`losses.q_learning_target`); epsilon = 1 the mean over actions."""
    rng = np.random.default_rng(0)
    next_q = jnp.asarray(rng.normal(size=(16, 5)), jnp.float32)
    reward = jnp.asarray(rng.normal(size=16), jnp.float32)
    discount = jnp.asarray(rng.choice([0.0, 0.99], size=16), jnp.float32)
    np.testing.assert_allclose(
        my_agent.expected_sarsa_target(reward, discount, next_q, 0.0),
        losses.q_learning_target(reward, discount, next_q),
        rtol=1e-6,
    )
    expected_mean = np.asarray(reward, np.float64) + np.asarray(discount, np.float64) * np.asarray(next_q, np.float64).mean(-1)
    np.testing.assert_allclose(my_agent.expected_sarsa_target(reward, discount, next_q, 1.0), expected_mean, rtol=1e-5, atol=1e-6)
    probabilities = my_agent.epsilon_greedy_probabilities(next_q, 0.37)
    np.testing.assert_allclose(np.asarray(probabilities).sum(-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("target_epsilon,expected_epsilon", [(None, 0.55), (0.2, 0.2)])
def test_update_loss_matches_float64_reference(target_epsilon, expected_epsilon):
    """The jitted update's loss is the weighted squared error to the expected-SARSA target computed in NumPy.

    With target_epsilon None the policy's epsilon is the training schedule at env_steps = 150:
    warm-up 100, decay 100, final 0.1 -> 0.1 + 0.9 * (200 - 150) / 100 = 0.55.
    """
    network = networks.QNetwork(torso=networks.MLP(hidden_units=(8,)), num_actions=3)
    agent = my_agent.make_expected_sarsa(
        network,
        optax.sgd(0.1),
        target_epsilon=target_epsilon,
        loss_type="mse",
        epsilon_train=0.1,
        epsilon_decay_period=100,
        epsilon_warmup_steps=100,
    )
    state = agent.init(jax.random.PRNGKey(0), (4, 1), 3)
    state = state.replace(
        target_params=jax.tree.map(lambda p: 0.5 * p + 0.1, state.params),  # target != online
        env_steps=jnp.array(150, jnp.int32),
    )
    rng = np.random.default_rng(1)
    batch = Batch(
        observation=rng.normal(size=(6, 4, 1)).astype(np.float32),
        action=rng.integers(0, 3, size=6).astype(np.int32),
        reward=rng.normal(size=6).astype(np.float32),
        next_observation=rng.normal(size=(6, 4, 1)).astype(np.float32),
        discount=np.array([0.99, 0.99, 0.0, 0.99, 0.99, 0.0], np.float32),
        weight=rng.uniform(0.5, 1.0, size=6).astype(np.float32),
        index=np.arange(6),
    )
    new_state, metrics = jax.jit(agent.update)(state, batch, jax.random.PRNGKey(2))

    q = np.asarray(network.apply(state.params, batch.observation), np.float64)
    next_q = np.asarray(network.apply(state.target_params, batch.next_observation), np.float64)
    pi = np.full(next_q.shape, expected_epsilon / 3)
    pi[np.arange(6), next_q.argmax(-1)] += 1.0 - expected_epsilon
    target = batch.reward + batch.discount * (pi * next_q).sum(-1)
    chosen = q[np.arange(6), batch.action]
    expected_loss = np.mean(batch.weight * 0.5 * (target - chosen) ** 2)
    np.testing.assert_allclose(float(metrics["loss"]), expected_loss, rtol=1e-5)
    assert int(new_state.update_steps) == 1
    assert not np.allclose(np.asarray(new_state.params["params"]["Dense_0"]["kernel"]), np.asarray(state.params["params"]["Dense_0"]["kernel"]))


def test_included_dqn_bindings_configure_the_user_agent(user_project):
    train.parse_config([str(user_project / "my_agent.gin")], ["ExpectedSarsaAgent.target_epsilon = 0.05"])
    agent = create_agent(num_actions=6, observation_shape=(10, 10, 4), observation_dtype=np.uint8)
    assert type(agent).__name__ == "ExpectedSarsaAgent"
    # from dqn/minatar.gin's DQNAgent.* bindings, through ExpectedSarsaAgent's **dqn_kwargs
    assert agent.stack_size == 1 and agent.loss_type == "huber" and agent.min_replay_history == 5000
    assert agent.target_epsilon == 0.05
    assert agent.replay.capacity == 100_000


def test_user_gin_files_find_their_neighbours_from_any_directory(user_project, tmp_path, monkeypatch):
    """`include 'my_agent.gin'` resolves next to the including file, not in the working directory.

    (The module import from another directory is checked in a fresh process by the CLI test's resume.)
    """
    (user_project / "sweep.gin").write_text("include 'my_agent.gin'\nExpectedSarsaAgent.target_epsilon = 0.1\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(sys, "path", list(sys.path))
    train.parse_config([str(user_project / "sweep.gin")], [])
    agent = create_agent(num_actions=6, observation_shape=(10, 10, 4), observation_dtype=np.uint8)
    assert type(agent).__name__ == "ExpectedSarsaAgent" and agent.target_epsilon == 0.1


def test_bad_target_epsilon_is_refused():
    with pytest.raises(ValueError, match="target_epsilon"):
        my_agent.ExpectedSarsaAgent(3, (4,), np.float32, target_epsilon=1.5)


# ----- the CLI, from the user's folder ----------------------------------------------------------
def _cli(args, cwd, module="accumbens.train"):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("PYTHONPATH", None)  # the user's folder must be found by train.py, not by the environment
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_example_runs_resumes_and_plots_from_outside_the_repository(user_project, tmp_path):
    # 1. From the user's folder, with relative paths, as the example's header says.
    first = _cli(["--base_dir", "runs/esarsa", "--gin_files", "my_agent.gin", "--gin_bindings", *TINY], cwd=user_project)
    assert first.returncode == 0, first.stdout + first.stderr
    run = user_project / "runs" / "esarsa"
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["iteration"] for r in rows] == ["0"]
    assert int(rows[0]["update_steps"]) > 0 and np.isfinite(float(rows[0]["loss"]))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0] and records[0]["train_steps"] >= 200
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tensorboard").iterdir())
    assert (run / "checkpoints" / "ckpt-000000" / "manifest.json").exists()
    config = (run / "config.gin").read_text()
    assert "create_agent.agent_fn = @ExpectedSarsaAgent" in config and "ExpectedSarsaAgent.target_epsilon = None" in config

    # 2. Resumed from another working directory, gin file and base_dir by absolute path, one more iteration.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    bindings = [b for b in TINY if not b.startswith("Runner.num_iterations")] + ["Runner.num_iterations = 2"]
    second = _cli(["--base_dir", str(run), "--gin_files", str(user_project / "my_agent.gin"), "--gin_bindings", *bindings], cwd=elsewhere)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming" in second.stdout
    resumed = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in resumed] == [0, 1]
    assert {k: resumed[0][k] for k in KEYS} == {k: records[0][k] for k in KEYS}
    assert resumed[1]["total_train_steps"] > resumed[0]["total_train_steps"]
    assert (run / "checkpoints" / "ckpt-000001" / "manifest.json").exists()

    # 3. The plot reads the same files.
    plotted = _cli([str(run), "-o", "curves.png"], cwd=user_project, module="accumbens.plot")
    assert plotted.returncode == 0, plotted.stdout + plotted.stderr
    assert (user_project / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_example_runs_under_the_compiled_runner(user_project):
    """The same files under `--runner compiled`, two seeds (pure, jittable agent); ~3 min on a loaded 2-core CPU."""
    result = _cli(
        ["--runner", "compiled", "--base_dir", "runs/compiled", "--gin_files", "my_agent.gin", "--gin_bindings", *TINY, "CompiledRunner.num_seeds = 2"],
        cwd=user_project,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for seed in (0, 1):
        records = [json.loads(line) for line in (user_project / "runs" / "compiled" / f"seed_{seed}" / "metrics.jsonl").read_text().splitlines()]
        assert [r["iteration"] for r in records] == [0] and np.isfinite(records[0]["loss"])


# ----- configuration errors: named, and nothing written -----------------------------------------
@pytest.mark.parametrize("runner", ["host", "compiled", "offline", "multi_seed"])
def test_misspelt_agent_name_is_named_and_creates_no_run_directory(tmp_path, capsys, runner):
    """Every runner builds the agent before it claims base_dir."""
    base_dir = tmp_path / "run"
    code = train.main(["--runner", runner, "--base_dir", str(base_dir), "--gin_files", "dqn/minatar", "--gin_bindings", "create_agent.agent_name = 'dqnn'"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown agent 'dqnn'" in err and "did you mean 'dqn'" in err and "'rainbow'" in err
    assert "create_agent.agent_fn = @MyAgent" in err and "docs/writing_an_agent.md" in err
    assert not base_dir.exists()


def test_misspelt_agent_reference_is_named_and_creates_no_run_directory(user_project, capsys):
    base_dir = user_project / "runs" / "typo"
    code = train.main(["--base_dir", str(base_dir), "--gin_files", str(user_project / "my_agent.gin"), "--gin_bindings", "create_agent.agent_fn = @ExpectedSarsaAgnt"])
    assert code == 2
    err = capsys.readouterr().err
    assert "ExpectedSarsaAgnt" in err and "--gin_modules" in err
    assert not (user_project / "runs").exists()


@pytest.mark.parametrize("how", ["gin_import", "cli_flag", "missing_dependency"])
def test_unimportable_module_is_named_and_creates_no_run_directory(user_project, capsys, how):
    gin_file = user_project / "my_agent.gin"
    args = ["--base_dir", str(user_project / "runs" / "x"), "--gin_files", str(gin_file)]
    if how == "gin_import":
        gin_file.write_text(gin_file.read_text().replace("import my_agent", "import my_agnt"))
        missing = "my_agnt"
    elif how == "cli_flag":
        args += ["--gin_modules", "my_agnt"]
        missing = "my_agnt"
    else:  # the user's module exists but needs a package that is not installed
        (user_project / "broken_agent.py").write_text("import not_installed_dependency_xyz  # noqa\n")
        gin_file.write_text(gin_file.read_text().replace("import my_agent", "import my_agent\nimport broken_agent"))
        missing = "not_installed_dependency_xyz"
    assert train.main(args) == 2
    err = capsys.readouterr().err
    assert f"cannot import module '{missing}'" in err
    assert not (user_project / "runs").exists()


def test_module_flag_imports_a_module_from_the_working_directory(user_project, monkeypatch):
    """`--gin_modules flag_agent` finds ./flag_agent.py; the agent is bound on the command line."""
    (user_project / "flag_agent.py").write_text(
        "import gin\nfrom my_agent import ExpectedSarsaAgent\n\n\n"
        "@gin.configurable\ndef sarsa_from_flag(**kwargs):\n    return ExpectedSarsaAgent(**kwargs)\n"
    )
    monkeypatch.chdir(user_project)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "flag_agent", raising=False)
    train.parse_config(["dqn/minatar"], ["create_agent.agent_fn = @sarsa_from_flag"], ["flag_agent"])
    assert Path(sys.modules["flag_agent"].__file__).resolve() == (user_project / "flag_agent.py").resolve()
    agent = create_agent(num_actions=6, observation_shape=(10, 10, 4), observation_dtype=np.uint8)
    assert type(agent).__name__ == "ExpectedSarsaAgent" and agent.stack_size == 1


# ----- documentation ----------------------------------------------------------------------------
def test_every_packaged_config_is_documented():
    """docs/configuration.md has a row for each gin file under accumbens/configs (add one with each new config)."""
    doc = (REPO / "docs" / "configuration.md").read_text()
    packaged = sorted(str(p.relative_to(train.CONFIG_ROOT).with_suffix("")) for p in Path(train.CONFIG_ROOT).rglob("*.gin"))
    assert packaged, "no packaged configs found"
    missing = [name for name in packaged if f"| `{name}` |" not in doc]
    assert not missing, f"packaged configs missing from docs/configuration.md: {missing}"
