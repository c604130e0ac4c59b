"""accumbens.aggregate: finding runs (sweep and compiled layouts), the table, stratified bootstrap
against an exact enumeration, performance profiles by hand, and the CLI's files."""
from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest

from accumbens import aggregate
from accumbens.analysis import bootstrap_ci, iqm
from accumbens.plot import performance_profile


def _write_run(folder, returns, config=None, params=None):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
        for i, r in enumerate(returns):
            f.write(json.dumps({"iteration": i, "eval_return_mean": r, "train_return_mean": r / 2, "total_train_steps": 100 * (i + 1)}) + "\n")
    if config is not None:
        with open(os.path.join(folder, "config.gin"), "w") as f:
            f.write(config)
    if params is not None:
        with open(os.path.join(folder, "sweep_run.json"), "w") as f:
            json.dump({"params": params}, f)


HOST_CONFIG = "create_agent.agent_name = 'dqn'\ncreate_environment.name = 'gym:CartPole-v1'\nRunner.seed = 7\n"
COMPILED_CONFIG = (
    "create_agent.agent_name = 'rainbow'\ncreate_environment.name = 'minatar:breakout'\n"
    "CompiledRunner.resolved_environment_name = 'minatar:breakout'\nCompiledRunner.resolved_seed = 3\n"
)


@pytest.fixture
def root(tmp_path):
    """Two sweep runs of one game (one without sweep_run.json) and a compiled run of two seeds."""
    _write_run(tmp_path / "lr=0.1" / "seed=0", [1.0, 2.0], HOST_CONFIG, {"lr": 0.1, "seed": 0})
    _write_run(tmp_path / "lr=0.1" / "seed=1", [1.0, 4.0], HOST_CONFIG)  # params from the folder names
    compiled = tmp_path / "lr=0.2" / "seed=3"
    os.makedirs(compiled)
    (compiled / "config.gin").write_text(COMPILED_CONFIG)
    _write_run(compiled / "seed_3", [5.0, 6.0])
    _write_run(compiled / "seed_4", [5.0, 8.0])
    return tmp_path


def test_collect_reads_both_layouts(root):
    rows = aggregate.collect(str(root))
    assert [(r["run"], r["game"], r["agent"], r["lr"], r["seed"], r["final"], r["mean"]) for r in rows] == [
        ("lr=0.1/seed=0", "gym:CartPole-v1", "dqn", 0.1, 0, 2.0, 1.5),
        ("lr=0.1/seed=1", "gym:CartPole-v1", "dqn", 0.1, 1, 4.0, 2.5),
        ("lr=0.2/seed=3", "minatar:breakout", "rainbow", 0.2, 3, 6.0, 5.5),
        ("lr=0.2/seed=3", "minatar:breakout", "rainbow", 0.2, 4, 8.0, 6.5),
    ]
    assert all(r["iterations"] == 2 and r["total_train_steps"] == 200 for r in rows)
    assert aggregate.collect(str(root), "train_return_mean")[0]["final"] == 1.0


def test_summarize_groups_and_minmax(root):
    rows = aggregate.collect(str(root))
    summary = aggregate.summarize(rows, "minmax", resamples=200)
    groups = {g["agent"]: g for g in summary["groups"]}
    assert groups["dqn"]["seeds"] == 2 and groups["dqn"]["iqm"] == pytest.approx(iqm([2.0, 4.0]))
    point, low, high = bootstrap_ci(np.array([6.0, 8.0]), iqm, resamples=200)
    assert (groups["rainbow"]["iqm"], groups["rainbow"]["iqm_low"], groups["rainbow"]["iqm_high"]) == (point, low, high)
    configs = {c["agent"]: c for c in summary["configurations"]}
    assert configs["dqn"]["mean"] == pytest.approx(0.5)  # minmax per game: (2, 4) -> (0, 1)
    assert configs["rainbow"]["mean"] == pytest.approx(0.5)


def test_stratified_bootstrap_one_stratum_is_bootstrap_ci():
    values = np.random.default_rng(1).normal(size=9)
    assert aggregate.stratified_bootstrap_ci([values], iqm, resamples=300, seed=4) == bootstrap_ci(values, iqm, resamples=300, seed=4)


def test_stratified_bootstrap_matches_exact_enumeration():
    a, b = np.array([0.0, 1.0]), np.array([10.0, 30.0])
    # Exact distribution of the mean: each game's two seeds drawn with replacement (4 equally likely pairs each).
    outcomes = np.array([np.mean(p + q) for p in itertools.product(a, repeat=2) for q in itertools.product(b, repeat=2)])
    exact_low, exact_high = np.quantile(outcomes, [0.1, 0.9])
    point, low, high = aggregate.stratified_bootstrap_ci([a, b], np.mean, confidence=0.8, resamples=20000, seed=0)
    assert point == pytest.approx(10.25)
    assert low == pytest.approx(exact_low, abs=0.3) and high == pytest.approx(exact_high, abs=0.3)
    # Stratification: seeds of a game are never mixed with another game's, so constant games give no spread.
    assert aggregate.stratified_bootstrap_ci([np.ones(3), 5 * np.ones(4)], np.mean, resamples=100)[1:] == pytest.approx((23 / 7, 23 / 7))  # (3*1 + 4*5) / 7


def test_performance_profile_by_hand():
    scores = np.array([0.0, 0.5, 1.0, 2.0])
    assert performance_profile(scores, np.array([-1.0, 0.0, 0.75, 2.0])).tolist() == [1.0, 0.75, 0.5, 0.0]


def test_cli_writes_table_summary_and_plots(root, capsys):
    assert aggregate.main([str(root), "--resamples", "100"]) == 0
    out = root / "aggregate"
    assert sorted(os.listdir(out)) == ["curves.png", "groups.csv", "profiles.png", "runs.csv", "runs.json", "summary.json"]
    assert len(json.loads((out / "runs.json").read_text())) == 4
    assert "raw scores across games" in capsys.readouterr().out
    assert aggregate.main([str(root / "nothing")]) == 2


def test_compiled_hyperparameter_members(tmp_path):
    """The compiled runner's swept hyperparameters: base/<binding>=<value>/seed_<n>/, config.gin in base."""
    base = tmp_path / "lr_sweep"
    os.makedirs(base)
    (base / "config.gin").write_text(COMPILED_CONFIG)
    for value, returns in (("0.0001", [1.0, 3.0]), ("0.001", [2.0, 9.0])):
        for seed in (3, 4):
            _write_run(base / f"create_optimizer.learning_rate={value}" / f"seed_{seed}", [r + seed for r in returns])
    rows = aggregate.collect(str(tmp_path))
    assert [(r["run"], r["create_optimizer.learning_rate"], r["seed"], r["game"], r["final"]) for r in rows] == [
        ("lr_sweep/create_optimizer.learning_rate=0.0001", 0.0001, 3, "minatar:breakout", 6.0),
        ("lr_sweep/create_optimizer.learning_rate=0.0001", 0.0001, 4, "minatar:breakout", 7.0),
        ("lr_sweep/create_optimizer.learning_rate=0.001", 0.001, 3, "minatar:breakout", 12.0),
        ("lr_sweep/create_optimizer.learning_rate=0.001", 0.001, 4, "minatar:breakout", 13.0),
    ]
    groups = aggregate.summarize(rows, resamples=50)["groups"]
    assert [(g["create_optimizer.learning_rate"], g["seeds"], g["mean"]) for g in groups] == [(0.0001, 2, 6.5), (0.001, 2, 12.5)]
