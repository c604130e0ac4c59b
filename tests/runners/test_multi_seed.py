"""The several-seeds runner against its reference: N separate host `Runner` runs with those seeds.

Reference numbers come from `accumbens.runners.runner.Runner`, the single-seed host loop; every
per-seed quantity (returns, episode counts, steps, losses, update counts, final parameters) must
match. DQN on MinAtar Breakout with tiny budgets keeps each run to seconds on CPU while still
crossing `min_replay_history`, so updates, target syncs and epsilon decay all happen.
"""
import json
import os
from unittest import mock

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


# ----- device frames (`DeviceFrames`): the replay's frames mirrored on the device ---------------
def _assert_store_matches_replay(runner):
    """Every live replay frame sits in its device row; the padding row is zero."""
    frames = runner.agent.frames
    store = np.asarray(frames.store)
    for i, agent in enumerate(runner.agents):
        a, c = agent.replay.add_count, agent.replay.capacity
        logical = np.arange(max(0, a - c), a)
        np.testing.assert_array_equal(store[i, logical % frames.ring],
                                      agent.replay._slot_arrays()["observation"][logical % c])
    assert not store[:, frames.zero_row].any()


def test_device_frames_one_seed_is_exactly_the_host_runner(tmp_path, separate_runs):
    runner, history = _multi(tmp_path, [1], "frames1", device_frames=True)
    single, records = separate_runs[1]
    for got, want in zip(history, records):
        _assert_same_records(got[0], want)
    runner.agent.sync_to_agents()
    jax.tree.map(np.testing.assert_array_equal, runner.agents[0].state, single.agent.state)
    _assert_store_matches_replay(runner)


def test_device_frames_match_the_host_path_when_the_replay_wraps(tmp_path):
    """Lagged schedule, two seeds, a replay smaller than the run (its ring wraps and episodes end
    mid-run): device frames and host-gathered batches give identical numbers and parameters."""
    small = ["ReplayBuffer.capacity = 260"]
    host, want = _multi(tmp_path, [0, 3], "host", extra=small, act_before_update=True, device_frames=False)
    dev, got = _multi(tmp_path, [0, 3], "dev", extra=small, act_before_update=True, device_frames=True)
    assert dev.agents[0].replay.add_count > 260
    for a, b in zip(got, want):
        for x, y in zip(a, b):
            _assert_same_records(x, y)
    host.agent.sync_to_agents()
    dev.agent.sync_to_agents()
    for x, y in zip(dev.agents, host.agents):
        jax.tree.map(np.testing.assert_array_equal, x.state, y.state)
    _assert_store_matches_replay(dev)


def test_device_frames_are_rebuilt_after_restore(tmp_path):
    small = ["Runner.num_iterations = 1", "ReplayBuffer.capacity = 150"]  # wrapped by the end of iteration 0
    _, first = _multi(tmp_path, [0, 1], "resumed", extra=small, device_frames=True)
    runner = MultiSeedRunner(base_dir=str(tmp_path / "resumed"), seeds=[0, 1], tensorboard=False,
                             progress_bar=False, device_frames=True)
    assert runner._restore() == 1
    assert runner.agents[0].replay.add_count > 150
    _assert_store_matches_replay(runner)


@pytest.mark.parametrize("mode", ["map", pytest.param("unroll", marks=pytest.mark.slow)])
def test_seed_maps_give_each_seeds_separate_run(tmp_path, separate_runs, mode):
    """lax.map / unrolled seeds: each seed computes a single run's arithmetic."""
    runner, history = _multi(tmp_path, [0, 2], mode, update_map=mode, act_map=mode, device_frames=True)
    for i, seed in enumerate((0, 2)):
        single, records = separate_runs[seed]
        for got, want in zip(history, records):
            for key in ("train_episodes", "train_steps", "update_steps", "train_return_mean", "eval_return_mean"):
                assert got[i][key] == want[key], key
            np.testing.assert_allclose(got[i]["loss"], want["loss"], rtol=1e-5)


def test_map_over_seeds_modes_agree_with_a_loop():
    from accumbens.runners.multi_seed import map_over_seeds

    rng = np.random.default_rng(0)
    w, x, bias = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 2, 4)), rng.normal(size=5)
    fn = lambda w_, x_, b_: {"y": x_ @ w_ + b_}  # noqa: E731
    want = np.stack([x[i] @ w[i] + bias for i in range(3)])
    for mode in ("vmap", "map", "unroll"):
        got = jax.jit(map_over_seeds(fn, (0, 0, None), 3, mode))(w, x, bias)
        np.testing.assert_allclose(got["y"], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="seed mapping"):
        map_over_seeds(fn, (0, 0, None), 3, "pmap")


@pytest.mark.parametrize("scheme", ["uniform", "prioritized"])
def test_sample_slots_rows_hold_the_sampled_frames(scheme):
    """`sample_slots` draws what `sample` draws; its rows index the frames `sample` stacks."""
    from accumbens.replay import create_replay

    replay = create_replay(scheme, capacity=60, observation_shape=(3, 2), observation_dtype=np.uint8,
                           stack_size=4, update_horizon=3, gamma=0.9)
    rng = np.random.default_rng(1)
    for t in range(150):  # wraps; episodes of random length, some truncated
        end = rng.random() < 0.1
        truncated = end and rng.random() < 0.5
        replay.add(rng.integers(1, 255, (3, 2)), int(rng.integers(4)), float(rng.normal()), end and not truncated,
                   truncated, final_observation=rng.integers(1, 255, (3, 2)) if end else None)
    want = replay.sample(np.random.default_rng(7), 64)
    got = replay.sample_slots(np.random.default_rng(7), 64)
    storage = np.concatenate([replay._slot_arrays()["observation"], np.zeros((1, 3, 2), np.uint8)])
    np.testing.assert_array_equal(np.moveaxis(storage[got.observation], 1, -1), want.observation)
    np.testing.assert_array_equal(np.moveaxis(storage[got.next_observation], 1, -1), want.next_observation)
    for key in ("action", "reward", "discount", "weight", "index"):
        np.testing.assert_array_equal(getattr(got, key), getattr(want, key))
    assert (got.observation == replay.capacity).any()  # padding rows were exercised


def test_pipelined_groups_give_the_lagged_schedules_numbers(tmp_path):
    """`pipeline=True` (two groups of seeds taking turns, each acting while the other's
    environments step) changes when things happen, not what: training and evaluation records and
    parameters equal the lagged schedule's, seed by seed, with a wrapping replay."""
    small = ["ReplayBuffer.capacity = 260"]
    plain, want = _multi(tmp_path, [0, 1, 2], "plain", extra=small, act_before_update=True, device_frames=True)
    with mock.patch.object(MultiSeedRunner, "_pipelined_loop", autospec=True,
                           side_effect=MultiSeedRunner._pipelined_loop) as loop:
        piped, got = _multi(tmp_path, [0, 1, 2], "piped", extra=small, act_before_update=True, device_frames=True,
                            pipeline=True)
    assert loop.call_count == 4  # both iterations' training and evaluation phases ran pipelined
    for a, b in zip(got, want):
        for x, y in zip(a, b):
            _assert_same_records(x, y)
    plain.agent.sync_to_agents()
    piped.agent.sync_to_agents()
    for x, y in zip(piped.agents, plain.agents):
        jax.tree.map(np.testing.assert_array_equal, x.state, y.state)
    _assert_store_matches_replay(piped)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.bool_])
def test_device_frames_pack_and_write_round_trip(dtype):
    """A tick's frames, rows and flags survive `pack_frames` -> `write` for every storage dtype
    (Atari and MinAtar uint8, classic control float32); stacks push newest last, reset at episode
    starts and stay put for inactive seeds."""
    from accumbens.replay.circular import ReplayBuffer
    from accumbens.runners.multi_seed import DeviceFrames

    replays = [ReplayBuffer(20, (2, 3), dtype, stack_size=3) for _ in range(3)]
    frames = DeviceFrames(replays, (2, 3, 3), dtype)
    rng = np.random.default_rng(0)
    history = []
    store, stacks = frames.store, frames.stacks
    for tick in range(4):
        data = (rng.normal(size=(3, 2, 3)) * 100).astype(dtype)
        rows = np.array([tick, 5 + tick, frames.scratch_row])
        new_episode = np.array([tick == 0, tick in (0, 2), True])
        active = np.array([True, True, tick < 2])
        packed = frames.pack_frames(data, rows, new_episode, active)
        store, stacks, got_active = jax.jit(frames.write)(store, stacks, packed)
        np.testing.assert_array_equal(got_active, active)
        history.append((data, new_episode, active))
        for i in range(3):
            np.testing.assert_array_equal(np.asarray(store)[i, rows[i]], data[i])
    # Seed 0: one episode of 4 frames -> last three; seed 1: new episode at tick 2 -> frames 2, 3
    # after a zero; seed 2: active for ticks 0 and 1, each a new episode -> zeros, zeros, frame 1.
    want = np.zeros((3, 2, 3, 3), dtype)
    want[0] = np.stack([history[t][0][0] for t in (1, 2, 3)], axis=-1)
    want[1, ..., 1], want[1, ..., 2] = history[2][0][1], history[3][0][1]
    want[2, ..., 2] = history[1][0][2]
    np.testing.assert_array_equal(np.asarray(stacks), want)
    assert not np.asarray(store)[:, frames.zero_row].any()
