"""The reproduction scripts (benchmarks/reproduce/): tiny end-to-end runs, their statistics against
hand-computed values, the reference files, and the README table against the committed results.

The MinAtar scripts run end to end on CPU at a tiny budget (a few hundred agent steps, 2 seeds);
the Atari scripts need ale-py and a Nature CNN, too slow on shared CPU cores for the default run,
so their end-to-end runs are marked slow and the fast tests cover their pure parts (chunk merging,
Dopamine comparison, score normalisation, the evaluation of a trained run is covered by the slow test).
"""
from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import pytest
from scipy import stats

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPRODUCE = os.path.join(REPO, "benchmarks", "reproduce")
sys.path.insert(0, REPRODUCE)

import repro_common  # noqa: E402

TINY_MINATAR = ["--seeds", "2", "--iterations", "2", "--training_steps", "150", "--quiet",
                "--extra_bindings", "DQNAgent.min_replay_history = 50", "ReplayBuffer.capacity = 500"]


@pytest.fixture(scope="module")
def minatar_runs(tmp_path_factory):
    """One tiny compiled piece (Breakout, DQN with the MinAtar paper's settings, 2 seeds x 2
    iterations) and the host cross-check of the same setting; returns their results files."""
    import minatar_compiled
    import minatar_host

    root = tmp_path_factory.mktemp("reproduce")
    compiled = str(root / "reproduce_minatar.json")
    host = str(root / "reproduce_minatar_host.json")
    assert minatar_compiled.main(["--games", "breakout", "--agents", "dqn_minatar_paper", "--evaluation_steps", "40",
                                  "--eval_envs", "2", "--runs_dir", str(root / "compiled"), "--results", compiled] + TINY_MINATAR) == 0
    assert minatar_host.main(["--game", "breakout", "--runs_dir", str(root / "host"), "--results", host,
                              "--compiled_results", compiled] + TINY_MINATAR) == 0
    return root, compiled, host


def test_minatar_compiled_end_to_end(minatar_runs):
    root, compiled, _ = minatar_runs
    results = json.load(open(compiled))
    piece = results["pieces"]["breakout/dqn_minatar_paper"]
    assert piece["status"] == "complete" and piece["iterations_done"] == 2 and piece["seeds"] == [0, 1]
    assert piece["total_train_steps"] == [150, 300]
    # The curves are exactly what the runner logged per seed.
    for seed, curve in zip(piece["seeds"], piece["train_return"]):
        logged = [json.loads(line) for line in open(root / "compiled" / "dqn_minatar_paper" / "breakout" / f"seed_{seed}" / "metrics.jsonl")]
        assert curve == [r["train_return_mean"] for r in logged]
    assert all(len(c) == 2 for c in piece["eval_return"])
    # Re-running the same command finds the piece complete and changes nothing in its curves.
    import minatar_compiled

    before = piece["train_return"]
    minatar_compiled.main(["--games", "breakout", "--agents", "dqn_minatar_paper", "--evaluation_steps", "40", "--eval_envs", "2",
                           "--runs_dir", str(root / "compiled"), "--results", compiled] + TINY_MINATAR)
    assert json.load(open(compiled))["pieces"]["breakout/dqn_minatar_paper"]["train_return"] == before


def test_minatar_host_cross_check(minatar_runs):
    _, compiled, host = minatar_runs
    results = json.load(open(host))
    piece = results["pieces"]["breakout/dqn_minatar_paper"]
    assert piece["status"] == "complete" and piece["runner"] == "multi_seed" and len(piece["train_return"]) == 2
    comparison = results["comparison"]["breakout/dqn_minatar_paper"]
    assert comparison["iterations_compared"] == 2
    # The overall difference is the difference of the per-seed means over iterations, recomputed here.
    host_means = np.nanmean(np.array(piece["train_return"], float), axis=1)
    compiled_piece = json.load(open(compiled))["pieces"]["breakout/dqn_minatar_paper"]
    compiled_means = np.nanmean(np.array(compiled_piece["train_return"], float), axis=1)
    overall = comparison["overall"]
    assert overall["difference"] == pytest.approx(host_means.mean() - compiled_means.mean())
    assert overall["welch_p"] == pytest.approx(stats.ttest_ind(host_means, compiled_means, equal_var=False).pvalue)
    assert overall["ci"][0] <= overall["difference"] <= overall["ci"][1]
    assert comparison["verdict"].startswith(("agree", "differ"))


def test_rainbow_is_reported_not_run_without_compiled_prioritized_replay(tmp_path, monkeypatch):
    import minatar_compiled

    monkeypatch.setattr(minatar_compiled, "compiled_supports_prioritized", lambda: (False, "needs prioritized replay"))
    path = str(tmp_path / "r.json")
    minatar_compiled.main(["--games", "asterix", "--agents", "rainbow_revisiting", "--runs_dir", str(tmp_path), "--results", path, "--quiet"])
    piece = json.load(open(path))["pieces"]["asterix/rainbow_revisiting"]
    assert piece["status"] == "unsupported" and "prioritized" in piece["note"] and piece["train_return"] == []
    assert not (tmp_path / "rainbow_revisiting").exists()  # nothing was trained, in particular not with uniform replay


def test_deadline_records_pieces_not_run(tmp_path):
    import minatar_compiled

    path = str(tmp_path / "r.json")
    minatar_compiled.main(["--games", "asterix,freeway", "--agents", "dqn_minatar_paper", "--deadline_s", "0",
                           "--runs_dir", str(tmp_path), "--results", path, "--quiet"])
    pieces = json.load(open(path))["pieces"]
    assert {k: p["status"] for k, p in pieces.items()} == {"asterix/dqn_minatar_paper": "not_run", "freeway/dqn_minatar_paper": "not_run"}


def test_unknown_game_is_refused():
    import minatar_compiled

    with pytest.raises(SystemExit, match="unknown game"):
        minatar_compiled.main(["--games", "pacman"])


# ----- Pong DQN: chunks merged into Dopamine iterations, comparison with Dopamine's seeds ----------
def test_merge_chunks_weights_by_episodes():
    from pong_dqn import merge_chunks

    # Two chunks per iteration: (-21 over 3 episodes, -19 over 1) -> -20.5; None where no episode ended.
    assert merge_chunks([-21.0, -19.0, None, -10.0, -5.0], [3, 1, 0, 2, 1], 2) == [-20.5, -10.0]
    assert merge_chunks([None, None], [0, 0], 2) == [None]


def test_pong_comparison_with_dopamine_spread(tmp_path):
    from pong_dqn import compare, dopamine_curve

    records = [{"Iteration": i, "Value": v, "Agent": "DQN"} for i, values in enumerate([[-21, -20, -19], [-15, -12, -10]]) for v in values]
    path = tmp_path / "curve.json"
    path.write_text(json.dumps(records))
    curve = dopamine_curve(str(path))
    rows = compare([[-20.0, -9.0], [-19.5, -16.0]], curve)
    assert rows[0]["ours_mean"] == pytest.approx(-19.75) and rows[0]["mean_within_spread"] and rows[0]["seeds_within_spread"] == 2
    # Iteration 1: our mean -12.5 lies in Dopamine's -15..-10, neither seed (-9, -16) does.
    assert rows[1]["dopamine_mean"] == pytest.approx(-37 / 3) and rows[1]["mean_within_spread"]
    assert rows[1]["ours_mean"] == pytest.approx(-12.5) and rows[1]["seeds_within_spread"] == 0


def test_dopamine_reference_copy_matches_published_numbers():
    """benchmarks/reference/dopamine_pong.json: DQN's mean over seeds at iteration 4 is -11.2 and
    crosses 0 at iteration 8 (the issue's reference points)."""
    from pong_dqn import DOPAMINE_CURVES, dopamine_curve

    curve = dopamine_curve(DOPAMINE_CURVES)
    assert all(len(curve[i]) == 5 for i in range(30))
    assert np.mean(curve[4]) == pytest.approx(-11.2, abs=0.05)
    assert np.mean(curve[7]) < 0 < np.mean(curve[8])


@pytest.mark.slow
def test_pong_dqn_end_to_end(tmp_path):
    import pong_dqn

    path = str(tmp_path / "p.json")
    assert pong_dqn.main(["--iterations", "1", "--chunk_steps", "100", "--iteration_steps", "200", "--seeds", "2", "--quiet",
                          "--runs_dir", str(tmp_path), "--results", path, "--extra_bindings", "DQNAgent.min_replay_history = 50",
                          "ReplayBuffer.capacity = 1000", "Runner.max_steps_per_episode = 150"]) == 0
    results = json.load(open(path))
    piece = results["pieces"]["Pong/dqn"]
    assert piece["status"] == "complete" and len(piece["dopamine_iteration_return"]) == 2
    assert results["comparison"]["Pong/dqn"][0]["iteration"] == 0


# ----- Atari 100k: normalisation, IQM, end to end (slow) ------------------------------------------
def test_atari_reference_has_every_game_with_sources():
    reference = repro_common.load_reference("atari100k")
    games = ("Pong", "Breakout", "Boxing", "Seaquest", "Kangaroo")
    assert all(g in reference["random"] and g in reference["human"] for g in games)
    der = reference["published"]["DER"]
    assert der["source"]["url"] and der["source"]["where"]
    for g in games:
        assert der["scores"][g] is not None or g in der.get("missing", {})


def test_minatar_reference_numbers_have_sources_or_reasons():
    reference = repro_common.load_reference("minatar")
    for agent, entry in reference["published"].items():
        assert entry["source"]["url"], agent
        for game, value in entry["scores"].items():
            assert value is not None or game in entry["missing"], (agent, game)


def test_minatar_published_value_follows_the_papers_curve_for_shorter_runs():
    """A run shorter than the paper's 5M frames is compared with the digitised curve at its own frame
    count (linear interpolation), and normalised by the MinAtar paper's DQN there."""
    from accumbens.plot import normalised_scores, published_score

    reference = repro_common.load_reference("minatar")
    curve = reference["published"]["dqn_minatar_paper"]["curve"]["breakout"]
    i = curve["frames"].index(500_000)
    assert curve["frames"][i + 1] == 750_000
    midpoint = (curve["return"][i] + curve["return"][i + 1]) / 2
    assert published_score(reference, "dqn_minatar_paper", "breakout", 625_000)["value"] == pytest.approx(midpoint)
    assert published_score(reference, "dqn_minatar_paper", "breakout", 100_000) is None  # before the curve's first point
    full = published_score(reference, "dqn_minatar_paper", "breakout", 5_000_000)
    assert full["value"] == reference["published"]["dqn_minatar_paper"]["scores"]["breakout"] and not full["from_curve"]
    piece = {"game": "breakout", "agent": "rainbow_revisiting", "total_train_steps": [625_000], "frames_per_step": 1}
    random = reference["random"]["breakout"]
    got = normalised_scores({"study": "minatar_compiled"}, reference, piece, np.array([midpoint, random]))
    assert got == pytest.approx([1.0, 0.0])


def test_human_normalised_iqm_with_stratified_bootstrap(tmp_path):
    """accumbens.plot reproduce on a synthetic Atari 100k results file: human-normalised scores and
    their IQM equal a direct computation (scipy's trim_mean), the table holds the bootstrap means."""
    from accumbens.plot import aggregate_iqm, plot_reproduction, reproduction_table

    reference = repro_common.load_reference("atari100k")
    scores = {"Pong": [-20.0, -18.0, -19.0], "Breakout": [2.0, 4.0, 3.0], "Boxing": [1.0, 2.0, 3.0], "Seaquest": [300.0, 400.0, 250.0]}
    results = {"study": "atari100k_der", "pieces": {}}
    for game, values in scores.items():
        results["pieces"][f"{game}/der"] = {"game": game, "agent": "der", "status": "complete", "seeds": [0, 1, 2], "iterations_done": 10,
                                             "iterations_planned": 10, "steps_per_iteration": 10000, "frames_per_step": 4,
                                             "total_train_steps": [10000 * (i + 1) for i in range(10)],
                                             "train_return": [[0.0] * 10] * 3, "eval_scores": values}
    (tmp_path / "results").mkdir()
    path = tmp_path / "results" / "reproduce_atari100k.json"
    path.write_text(json.dumps(results))
    normalised = np.concatenate([(np.array(v) - reference["random"][g]) / (reference["human"][g] - reference["random"][g]) for g, v in scores.items()])
    stats_ = aggregate_iqm(results, reference)["der"]
    assert stats_["iqm"] == pytest.approx(stats.trim_mean(normalised, 0.25))
    assert stats_["low"] <= stats_["iqm"] <= stats_["high"] and stats_["runs"] == 12
    rows = {r["game"]: r for r in reproduction_table(results, reference)}
    assert rows["Boxing"]["ours"] == pytest.approx(2.0) and rows["Boxing"]["published"] == pytest.approx(0.2)
    # Every bootstrap mean of (1, 2, 3) is at least 1, above DER's 0.2: the game is flagged for investigation.
    from accumbens.plot import format_table

    assert rows["Boxing"]["low"] >= 1.0
    assert "| Boxing | der | 3 |" in format_table(list(rows.values())) and "no, ours higher" in format_table([rows["Boxing"]])
    written = plot_reproduction(str(path), str(tmp_path / "figures"), reference=os.path.join(REPO, "benchmarks", "reference", "atari100k.json"))
    assert {os.path.basename(w) for w in written} == {"reproduce_atari100k_der_curves.png", "reproduce_atari100k_der_iqm.png",
                                                       "reproduce_atari100k_der_table.md"}


def test_bootstrap_band_is_the_mean_with_an_interval_per_iteration():
    from accumbens.plot import bootstrap_band

    values = np.array([[1.0, 2.0, np.nan], [3.0, 4.0, np.nan], [5.0, np.nan, np.nan]])
    mean, low, high = bootstrap_band(values)
    assert mean[:2] == pytest.approx([3.0, 3.0]) and math.isnan(mean[2])
    assert low[0] < 3.0 < high[0] and 1.0 <= low[0] and high[0] <= 5.0


class _LivesGame:
    """A fake Atari game in life-loss mode: reward 1 per step, a life lost every 3 steps (terminated,
    the game goes on), game over after 3 lives; observations count steps since the game started."""

    def __init__(self, cap: int = 1000):
        self.cap, self.t, self.lives, self.resets = cap, 0, 3, []

    @property
    def game_over(self):
        return self.lives == 0

    def reset(self, seed=None, options=None):
        full = seed is not None or bool(options and options.get("full_reset")) or self.game_over
        self.resets.append("full" if full else "continue")
        if full:
            self.t, self.lives = 0, 3
        return np.full((2, 2), self.t, np.uint8), {}

    def step(self, action):
        self.t += 1
        life_lost = self.t % 3 == 0
        self.lives -= life_lost
        truncated = not life_lost and self.t >= self.cap
        return np.full((2, 2), self.t, np.uint8), 1.0, life_lost, truncated, {}


def test_full_game_evaluation_sums_lives_and_restarts_the_stack():
    """Dopamine's evaluation: a game's score sums all its lives; a lost life restarts the agent's
    frame stack but not the game; each environment plays its share of the episodes."""
    from atari100k_der import play_full_games

    envs = [[_LivesGame(), _LivesGame()]]
    seen = []

    def act(stacks):
        seen.append(stacks[0, 0].copy())
        return np.zeros(stacks.shape[:2], np.int64)

    returns, complete = play_full_games(envs, act, episodes=3, stacked_shape=(2, 2, 4), dtype=np.uint8, reset_seeds=[[1, 2]])
    assert complete and returns == [[9.0, 9.0, 9.0]]  # 3 lives x 3 steps, env 0 plays 2 games, env 1 one
    assert envs[0][0].resets == ["full", "continue", "continue", "full", "continue", "continue"]
    # After the first lost life (step 3) the stack holds only the current screen; before it, frames accumulate.
    assert [int(x) for x in seen[2][0, 0]] == [0, 0, 1, 2] and [int(x) for x in seen[3][0, 0]] == [0, 0, 0, 3]
    # A cap (truncation) ends the game with the rewards so far.
    capped, _ = play_full_games([[_LivesGame(cap=4)]], act, episodes=1, stacked_shape=(2, 2, 4), dtype=np.uint8, reset_seeds=[[0]])
    assert capped == [[4.0]]


@pytest.mark.slow
def test_atari100k_der_end_to_end(tmp_path):
    import atari100k_der

    path = str(tmp_path / "a.json")
    argv = ["--games", "Pong", "--seeds", "2", "--iterations", "1", "--training_steps", "100", "--eval_episodes", "2",
            "--eval_envs", "2", "--eval_max_steps", "300", "--quiet", "--runs_dir", str(tmp_path), "--results", path, "--extra_bindings",
            "RainbowAgent.min_replay_history = 50", "PrioritizedReplayBuffer.capacity = 1000", "Runner.max_steps_per_episode = 150"]
    assert atari100k_der.main(argv) == 0
    piece = json.load(open(path))["pieces"]["Pong/der"]
    assert piece["status"] == "complete" and piece["eval_episodes"] == [2, 2] and piece["iterations_done"] == 1
    assert all(-21 <= s <= 21 for s in piece["eval_scores"])  # Pong scores lie between -21 and 21
    # Run again: training is not restarted and the finished evaluation is kept.
    assert atari100k_der.main(argv) == 0
    again = json.load(open(path))["pieces"]["Pong/der"]
    assert again["eval_game_returns"] == piece["eval_game_returns"] and again["wall_seconds"] == piece["wall_seconds"]


# ----- committed results and the README -------------------------------------------------------------
def committed_results():
    results_dir = os.path.join(REPO, "benchmarks", "results")
    paths = [os.path.join(results_dir, f) for f in sorted(os.listdir(results_dir)) if f.startswith("reproduce_") and f.endswith(".json")]
    return [p for p in paths if "study" in json.load(open(p))]  # not reproduce_rliable_check.json (tested below)


@pytest.mark.parametrize("path", committed_results() or [None])
def test_committed_results_files_parse(path):
    if path is None:
        pytest.skip("no reproduction results committed yet (the README table then says 'not yet run', checked below)")
    results = json.load(open(path))
    assert results["study"] and isinstance(results["pieces"], dict)
    for key, piece in results["pieces"].items():
        assert key == f"{piece['game']}/{piece['agent']}"
        assert piece["status"] in repro_common.STATUSES
        curves = piece.get("train_return") or []
        assert len(curves) in (0, len(piece["seeds"]))
        assert all(len(c) == piece["iterations_done"] for c in curves)
        if piece["status"] == "complete":
            assert piece["iterations_done"] == piece["iterations_planned"]


def test_readme_table_is_generated_from_committed_results():
    """README.md shows exactly the table benchmarks/reproduce/readme_table.py derives from the
    committed results files: 'not yet run' where there are none, and only numbers that exist."""
    import readme_table

    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    assert "## Reproduced baselines" in readme
    assert readme_table.table() in readme, "run: python benchmarks/reproduce/readme_table.py and paste it into README.md"


def test_iqm_and_stratified_interval_agree_with_rliable():
    """benchmarks/results/reproduce_rliable_check.json (benchmarks/reproduce/rliable_check.py, run with
    rliable 1.2 in its own environment): rliable's IQM equals ours exactly and its 95% stratified
    bootstrap endpoints are within Monte-Carlo error of ours; our side is recomputed here."""
    from rliable_check import CASES, accumbens_estimate, score_matrix

    check = json.load(open(os.path.join(REPO, "benchmarks", "results", "reproduce_rliable_check.json")))
    assert [row["case"] for row in check["rows"]] == list(CASES)
    for i, row in enumerate(check["rows"]):
        runs, games, kind = CASES[row["case"]]
        ours = accumbens_estimate(score_matrix(runs, games, kind, seed=i), check["reps"])
        assert ours == pytest.approx(row["accumbens"])
        assert row["rliable"]["iqm"] == pytest.approx(ours["iqm"], abs=1e-12)
        assert abs(row["rliable"]["low"] - ours["low"]) < 0.05 * row["rliable_ci_width"]
        assert abs(row["rliable"]["high"] - ours["high"]) < 0.05 * row["rliable_ci_width"]
