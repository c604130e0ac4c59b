"""The CLI end to end: configs, bad input, refusal of a foreign base_dir, kill-and-resume, plots."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from accumbens import plot, train
from accumbens.runners.logging import read_records

TINY_CARTPOLE = [
    "Runner.num_iterations = 4",
    "Runner.training_steps = 300",
    "Runner.evaluation_steps = 200",
    "Runner.max_steps_per_episode = 200",
    "DQNAgent.min_replay_history = 100",
    "MLP.hidden_units = (32,)",
]
DETERMINISTIC_KEYS = ("train_episodes", "train_return_mean", "train_steps", "eval_return_mean", "eval_steps", "loss", "total_train_steps")


def _run_cli(base_dir, bindings, gin_file="dqn/cartpole"):
    cmd = [sys.executable, "-m", "accumbens.train", "--base_dir", str(base_dir), "--gin_files", gin_file, "--gin_bindings", *bindings]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_unknown_binding_is_a_clear_configuration_error(tmp_path, capsys):
    code = train.main(["--base_dir", str(tmp_path), "--gin_files", "dqn/cartpole", "--gin_bindings", "DQNAgent.learning_rat = 0.1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "configuration error" in err and "learning_rat" in err


def test_unknown_gin_file_lists_packaged_configs(tmp_path, capsys):
    assert train.main(["--base_dir", str(tmp_path), "--gin_files", "dqn/pong"]) == 2
    assert "dqn/atari" in capsys.readouterr().err


def test_unknown_game_lists_valid_games(tmp_path, capsys):
    code = train.main(["--base_dir", str(tmp_path), "--gin_files", "dqn/minatar", "--gin_bindings", "create_environment.name = 'minatar:pacman'"])
    assert code == 2
    assert "breakout" in capsys.readouterr().err


def test_a_different_config_is_refused_and_the_run_left_untouched(tmp_path, capsys):
    assert train.main(["--base_dir", str(tmp_path), "--gin_files", "dqn/cartpole", "--gin_bindings", *TINY_CARTPOLE[:1], "Runner.training_steps = 50", "Runner.evaluation_steps = 0", "MLP.hidden_units = (8,)", "Runner.num_iterations = 1"]) == 0
    before = (tmp_path / "config.gin").read_text()
    code = train.main(["--base_dir", str(tmp_path), "--gin_files", "dqn/cartpole", "--gin_bindings", "Runner.training_steps = 60", "Runner.evaluation_steps = 0", "MLP.hidden_units = (8,)", "Runner.num_iterations = 1"])
    assert code == 3
    assert "different configuration" in capsys.readouterr().err
    assert (tmp_path / "config.gin").read_text() == before


def test_killed_run_resumes_with_identical_numbers(tmp_path):
    reference = _run_cli(tmp_path / "reference", TINY_CARTPOLE)
    victim = _run_cli(tmp_path / "victim", TINY_CARTPOLE)
    checkpoint = tmp_path / "victim" / "checkpoints" / "ckpt-000001"
    deadline = time.time() + 240
    while not checkpoint.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert victim.poll() is None, "the run finished before it could be killed; make it longer"
    time.sleep(float(np.random.default_rng().uniform(0.0, 0.05)))  # early in iteration 2 (~0.1 s when quiet)
    assert victim.poll() is None, "the run finished before it could be killed; make it longer"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    resumed = _run_cli(tmp_path / "victim", TINY_CARTPOLE)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "resuming" in out
    ref_out, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, ref_out
    expected = read_records(str(tmp_path / "reference"))
    got = read_records(str(tmp_path / "victim"))
    assert [r["iteration"] for r in got] == [0, 1, 2, 3]
    for e, g in zip(expected, got):
        assert {k: e[k] for k in DETERMINISTIC_KEYS} == {k: g[k] for k in DETERMINISTIC_KEYS}

    # A corrupt newest checkpoint is reported and the previous one used; raising
    # num_iterations extends a finished run (the only binding allowed to change).
    with open(tmp_path / "reference" / "checkpoints" / "ckpt-000003" / "agent_state.msgpack", "r+b") as f:
        f.seek(100)
        f.write(b"\x00garbage\x00")
    extended = _run_cli(tmp_path / "reference", TINY_CARTPOLE[1:] + ["Runner.num_iterations = 5"])
    out, _ = extended.communicate(timeout=300)
    assert extended.returncode == 0, out
    assert "could not be restored" in out and "resuming" in out
    again = read_records(str(tmp_path / "reference"))
    assert [r["iteration"] for r in again] == [0, 1, 2, 3, 4]
    assert {k: again[3][k] for k in DETERMINISTIC_KEYS} == {k: expected[3][k] for k in DETERMINISTIC_KEYS}


def test_plot_draws_mean_and_band_over_seeds(tmp_path):
    for seed, offset in ((0, 0.0), (1, 2.0)):
        run = tmp_path / f"cartpole_seed{seed}"
        run.mkdir()
        with open(run / "metrics.jsonl", "w") as f:
            for i in range(3):
                f.write(json.dumps({"iteration": i, "total_train_steps": 100 * (i + 1), "eval_return_mean": i + offset}) + "\n")
    output = tmp_path / "curves.png"
    assert plot.main([str(tmp_path / "cartpole_seed0"), str(tmp_path / "cartpole_seed1"), "-o", str(output)]) == 0
    assert output.stat().st_size > 1000
    x, mean, low, high = plot.aggregate([plot.load_curve(str(tmp_path / f"cartpole_seed{s}"), "eval_return_mean") for s in (0, 1)])
    np.testing.assert_allclose(mean, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(high - low, [2.0, 2.0, 2.0])
    assert plot.group_name("runs/cartpole_seed1") == "cartpole"


def test_results_layout_names_host_per_seed_and_sweep_folders(tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    (host / "metrics.jsonl").write_text("")
    where, runs = train.results_layout(str(host))
    assert runs == str(host) and "metrics.jsonl" in where

    seeds = tmp_path / "compiled"
    for n in (0, 1):
        (seeds / f"seed_{n}").mkdir(parents=True)
        (seeds / f"seed_{n}" / "metrics.jsonl").write_text("")
    where, runs = train.results_layout(str(seeds))
    assert runs == str(seeds / "seed_*") and "per run seed_<n>/" in where

    sweep = tmp_path / "sweep"
    for lr in ("0.001", "0.003"):
        folder = sweep / f"create_optimizer.learning_rate={lr}" / "seed_0"
        folder.mkdir(parents=True)
        (folder / "metrics.jsonl").write_text("")
    where, runs = train.results_layout(str(sweep))
    assert runs == str(sweep / "*" / "seed_*") and "<binding>=<value>/seed_<n>/" in where
