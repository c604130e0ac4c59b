"""benchmarks/compiled_equivalence.py and benchmarks/compiled_sweep.py.

Fast: their statistics on run directories with known numbers (closed forms, NumPy references),
their deadline logic on stand-in runners, the plots and tables. Slow (`-m slow`): both scripts
end to end at a tiny size on CPU, including resuming.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from accumbens.analysis import bootstrap_ci
from accumbens.runners import deadline as deadline_module
from accumbens.runners.logging import StatisticsWriter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


equivalence = _load("compiled_equivalence")
sweep = _load("compiled_sweep")


def _write_run(run_dir, train, evaluation, steps_per_iteration=100, rate=50.0):
    writer = StatisticsWriter(str(run_dir), tensorboard=False)
    for i, (t, e) in enumerate(zip(train, evaluation)):
        writer.write({"iteration": i, "train_return_mean": t, "eval_return_mean": e, "train_steps_per_second": rate,
                      "total_train_steps": (i + 1) * steps_per_iteration})
    writer.close()


def _equivalence_args(tmp_path, seeds, **overrides):
    argv = ["--seeds", str(seeds), "--root", str(tmp_path), "--final_window", "2", *overrides.get("argv", [])]
    args = equivalence._parser().parse_args(argv)
    args.root = str(tmp_path)
    return args


# ----------------------------------------------------------------------------- equivalence statistics
def test_welch_and_bootstrap_difference_closed_form():
    host, compiled = np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0])
    t = equivalence._test(host, compiled)
    # Welch: (mean_b - mean_a) / sqrt(var_b / n_b + var_a / n_a) = 2 / sqrt(4/3 + 1/3)
    assert t["welch_t"] == pytest.approx(2 / math.sqrt(5 / 3))
    dof = (5 / 3) ** 2 / ((4 / 3) ** 2 / 2 + (1 / 3) ** 2 / 2)  # Welch-Satterthwaite
    from scipy.stats import t as student_t

    assert t["welch_p"] == pytest.approx(2 * student_t.sf(2 / math.sqrt(5 / 3), dof))
    assert t["bootstrap"]["difference"] == pytest.approx(2.0)
    # No spread within either group: every resample gives the same difference, so the interval is a point.
    d = equivalence._bootstrap_difference(np.full(5, 1.0), np.full(5, 1.5))
    assert (d["low"], d["high"], d["p"]) == (pytest.approx(0.5), pytest.approx(0.5), 0.0)


def test_analyse_same_distribution_and_a_shift(tmp_path):
    rng = np.random.default_rng(0)
    iterations, seeds = 4, 5
    curves = {arm: rng.normal(size=(seeds, iterations)) + np.arange(iterations) for arm in equivalence.ARMS}
    shift = {"host": 0.0, "compiled": 0.0}

    def write(root):
        for arm in equivalence.ARMS:
            for seed in range(seeds):
                train = curves[arm][seed] + shift[arm]
                length = iterations - 1 if (arm == "host" and seed == 3) else iterations  # one host seed behind
                evaluation = list(train + 1.0)
                evaluation[0] = float("nan") if seed == 0 else evaluation[0]  # no episode ended: NaN, dropped
                _write_run(root / arm / f"seed_{seed}", train[:length], evaluation[:length])

    write(tmp_path / "same")
    result = equivalence.analyse(_equivalence_args(tmp_path / "same", seeds))
    assert result["iterations_compared"] == iterations - 1
    assert result["iterations_done"]["host"] == [4, 4, 4, 3, 4]
    for row in result["per_iteration"]:
        i = row["iteration"]
        for arm in equivalence.ARMS:
            expected = bootstrap_ci(curves[arm][:, i])
            assert row[f"{arm}_train_return_mean"] == pytest.approx(list(expected))
            assert row[f"{arm}_steps"] == (i + 1) * 100
        if i == 0:
            assert row["host_eval_return_mean"][0] == pytest.approx(np.mean(curves["host"][1:, 0] + 1.0))
    final = result["tests"]["train_return_mean"]["final"]
    assert final["iterations"] == [1, 2]
    assert final["host_mean"] == pytest.approx(curves["host"][:, 1:3].mean())
    curve = result["tests"]["train_return_mean"]["curve"]
    assert curve["compiled_mean"] == pytest.approx(curves["compiled"][:, :3].mean())
    assert result["same_within_seed_noise"] and result["eval_same_within_seed_noise"]  # same distribution (this generator seed)

    shift["compiled"] = 10.0
    write(tmp_path / "shifted")
    shifted = equivalence.analyse(_equivalence_args(tmp_path / "shifted", seeds))
    t = shifted["tests"]["train_return_mean"]["final"]
    assert t["bootstrap"]["difference"] == pytest.approx(10.0 + curves["compiled"][:, 1:3].mean() - curves["host"][:, 1:3].mean())
    assert t["welch_p"] < 1e-4 and t["bootstrap"]["low"] > 0
    assert not shifted["same_within_seed_noise"] and not shifted["eval_same_within_seed_noise"]

    text = equivalence.table(shifted)
    assert "False" in text and "compiled - host" in text
    png = tmp_path / "eq.png"
    equivalence.plot(shifted, str(png), "test")
    assert png.stat().st_size > 10_000


def test_analyse_with_nothing_logged_yet(tmp_path):
    result = equivalence.analyse(_equivalence_args(tmp_path, 2))
    assert result["iterations_compared"] == 0 and result["tests"] == {} and not result["same_within_seed_noise"]


class _Clock:
    """A fake `time` module: the stand-in runners advance it by one second per iteration."""

    def __init__(self):
        self.now = 0.0

    def time(self):
        return self.now


CLOCK = _Clock()


class _FakeHost:
    """Stand-in for `Runner`: each iteration takes one (fake) second."""

    def __init__(self):
        self.ran = []

    def run_iteration(self, iteration):
        CLOCK.now += 1.0
        self.ran.append(iteration)
        return {"iteration": iteration}


class _FakeCompiled:
    """Stand-in for `CompiledRunner`: run_iteration(states, iteration), checkpoints via `_save`."""

    checkpoint_every = 4

    def __init__(self):
        self.ran, self.saved = [], []

    def run_iteration(self, states, iteration):
        CLOCK.now += 1.0
        self.ran.append(iteration)
        return states, []

    def _save(self, states, iteration):
        self.saved.append((states, iteration))


@pytest.mark.parametrize("deadline,expected_runs", [(5.5, 5), (8.0, 8), (0.5, 1), (-1.0, 0)])
def test_deadline_stops_before_an_iteration_that_would_not_finish(monkeypatch, deadline, expected_runs):
    monkeypatch.setattr(deadline_module, "time", CLOCK)
    CLOCK.now = 0.0
    runner = deadline_module.with_deadline(_FakeCompiled, deadline)()
    with pytest.raises(deadline_module.DeadlineReached):
        for iteration in range(100):
            runner.run_iteration("states", iteration)
    # Iteration i starts only if now + (the last iteration's 1 s) <= deadline; the first always
    # starts before the deadline (its duration is unknown).
    assert runner.ran == list(range(expected_runs))
    # The states handed to the refused iteration are checkpointed, unless that iteration was a
    # checkpoint one anyway (every 4th) or nothing ran.
    saved = [] if expected_runs % _FakeCompiled.checkpoint_every == 0 else [("states", expected_runs - 1)]
    assert runner.saved == saved

    CLOCK.now = 0.0
    host = deadline_module.with_deadline(_FakeHost, deadline)()
    with pytest.raises(deadline_module.DeadlineReached):
        for iteration in range(100):
            host.run_iteration(iteration)
    assert host.ran == list(range(expected_runs))


class _CompilingFirst(_FakeCompiled):
    """Iteration 0 takes 10 (fake) seconds, 9 of them compiling; later ones take 1 second."""

    def run_iteration(self, states, iteration):
        if iteration == 0:
            CLOCK.now += 9.0
            jax.monitoring.record_event_duration_secs("/jax/core/compile/backend_compile_duration", 9.0)
        return super().run_iteration(states, iteration)


def test_deadline_prediction_leaves_out_the_first_iterations_compilation(monkeypatch):
    monkeypatch.setattr(deadline_module, "time", CLOCK)
    CLOCK.now = 0.0
    runner = deadline_module.with_deadline(_CompilingFirst, 13.5)()
    with pytest.raises(deadline_module.DeadlineReached):
        for iteration in range(100):
            runner.run_iteration("states", iteration)
    # 10 s for iteration 0, then 1 s each: iterations 1-3 end by 13 s. Predicting 10 s from
    # iteration 0's wall time would have stopped after it.
    assert runner.ran == [0, 1, 2, 3]


def test_host_cores_are_disjoint_and_leave_core_zero(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    args = _equivalence_args("/tmp/unused", 5)
    cores = [equivalence._host_cpus(args, i) for i in range(5)]
    assert cores == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12], [13, 14, 15]]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert equivalence._host_cpus(args, 0) is None  # too few cores: no pinning


# ----------------------------------------------------------------------------- sweep statistics
def _sweep_args(tmp_path, argv=()):
    args = sweep._parser().parse_args(["--root", str(tmp_path), "--seeds", "3", *argv])
    args.root = str(tmp_path)
    return args


def test_sweep_summary_table_and_plot(tmp_path):
    rng = np.random.default_rng(1)
    values = {game: rng.normal(size=(3, 4)) + 3 for game in ("breakout", "freeway")}
    for game, v in values.items():
        for seed in range(3):
            length = 4 if (game == "breakout" or seed) else 2  # freeway seed 0 stopped early
            _write_run(tmp_path / game / f"seed_{seed}", v[seed, :length], v[seed, :length] - 1, steps_per_iteration=1000, rate=100.0)
    args = _sweep_args(tmp_path)
    summaries = [sweep.summarise(args, game) for game in ("breakout", "freeway", "asterix")]
    breakout, freeway, asterix = summaries
    assert breakout["iterations_done"] == 4 and freeway["iterations_done"] == 2 and asterix["iterations_done"] == 0
    assert breakout["steps"] == [1000, 2000, 3000, 4000]
    for i in range(4):
        assert breakout["train_return_mean"][i] == pytest.approx(list(bootstrap_ci(values["breakout"][:, i])))
        assert breakout["eval_return_mean"][i][0] == pytest.approx(values["breakout"][:, i].mean() - 1)
    assert breakout["train_steps_per_second_all_seeds"] == pytest.approx(300.0)  # 100 per seed x 3 seeds
    text = sweep.table(summaries, {"breakout": {"status": "complete", "seconds": 1.0}})
    assert "breakout" in text and "not run" in text
    png = tmp_path / "sweep.png"
    sweep.plot(summaries, str(png), "train_return_mean", "test")
    assert png.stat().st_size > 10_000


def test_sweep_games_flag():
    assert sweep._games("all") == list(sweep.GAMES)
    assert sweep._games("Breakout, space-invaders") == ["breakout", "space_invaders"]
    with pytest.raises(SystemExit, match="valid"):
        sweep._games("breakout,pong")


# ----------------------------------------------------------------------------- end to end (slow)
def _run(script, *argv, timeout=900):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", script), *argv], env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


TINY = ["--training_steps", "200", "--evaluation_steps", "100", "--capacity", "1000", "--min_replay_history", "100"]


@pytest.mark.slow
def test_sweep_end_to_end_and_resume(tmp_path):
    out = tmp_path / "sweep.json"
    common = ["--games", "breakout,asterix", "--seeds", "2", *TINY, "--root", str(tmp_path / "runs"), "--output", str(out)]
    _run("compiled_sweep.py", *common, "--iterations", "1")
    first = json.loads(out.read_text())
    assert [g["iterations_done"] for g in first["games"]] == [1, 1]
    assert (tmp_path / "sweep.png").exists()
    stdout = _run("compiled_sweep.py", *common, "--iterations", "2")
    assert "resuming" in stdout and "at iteration 1" in stdout
    second = json.loads(out.read_text())
    assert [g["iterations_done"] for g in second["games"]] == [2, 2]
    # the resumed first iteration is the one already written, untouched
    assert second["games"][0]["train_return_mean_per_seed"][0][0] == first["games"][0]["train_return_mean_per_seed"][0][0]


@pytest.mark.slow
def test_equivalence_end_to_end(tmp_path):
    out = tmp_path / "eq.json"
    stdout = _run("compiled_equivalence.py", "--seeds", "2", "--iterations", "2", *TINY, "--root", str(tmp_path / "runs"),
                  "--output", str(out), "--deadline_s", "600")
    payload = json.loads(out.read_text())
    assert payload["complete"] and payload["result"]["iterations_compared"] == 2
    assert payload["host_exit_codes"] == [0, 0]
    assert "train_return_mean" in payload["result"]["tests"] and "compiled - host" in stdout
    assert (tmp_path / "eq.png").exists()
