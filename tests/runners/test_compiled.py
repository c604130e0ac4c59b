"""Compiled runner and device replay (CPU, small budgets).

- device replay vs the host `ReplayBuffer` on the same transition streams (n-step, stacks,
  termination vs truncation, wrap-around);
- compiled runner: shapes and files, one seed vs a vmapped multi-seed run, the sharded path on 4
  fake CPU devices (subprocess) vs unsharded, kill/resume determinism, DQN learning on CartPole.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from accumbens.replay import ReplayBuffer
from accumbens.replay.device import DeviceReplayBuffer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ----------------------------------------------------------------------------- device replay
def _stream(rng, steps, num_envs, obs_shape, p_term=0.08, p_trunc=0.05):
    """Random lock-step transitions for `num_envs` environments (obs distinct per step)."""
    obs = rng.integers(0, 255, size=(num_envs,) + obs_shape).astype(np.uint8)
    out = []
    for _ in range(steps):
        action = rng.integers(0, 5, size=num_envs).astype(np.int32)
        reward = rng.normal(size=num_envs).astype(np.float32)
        term = rng.random(num_envs) < p_term
        trunc = rng.random(num_envs) < p_trunc
        nxt = rng.integers(0, 255, size=(num_envs,) + obs_shape).astype(np.uint8)
        reset = rng.integers(0, 255, size=(num_envs,) + obs_shape).astype(np.uint8)
        out.append((obs, action, reward, term, trunc, nxt))
        obs = np.where((term | trunc)[:, None, None], reset, nxt)
    return out


@pytest.mark.parametrize(
    "num_envs,stack,horizon,capacity,steps",
    [(1, 1, 3, 400, 150), (2, 3, 3, 60, 150)],  # the second one wraps around
)
def test_device_replay_matches_host(num_envs, stack, horizon, capacity, steps):
    obs_shape = (3, 2)
    gamma = 0.9
    device = DeviceReplayBuffer(capacity, obs_shape, np.uint8, num_envs, stack, horizon, gamma)
    hosts = [ReplayBuffer(capacity // num_envs, obs_shape, np.uint8, stack, horizon, gamma) for _ in range(num_envs)]
    stream = _stream(np.random.default_rng(0), steps, num_envs, obs_shape)
    columns = tuple(np.stack(column) for column in zip(*stream))  # [T, E, ...] each
    add_all = jax.jit(lambda st, xs: jax.lax.scan(lambda s, x: (device.add(s, *x), None), st, xs)[0])
    state = add_all(device.init(), columns)
    host_slot = {}  # (t, env) -> host slot index
    for t, (obs, action, reward, term, trunc, nxt) in enumerate(stream):
        for e, host in enumerate(hosts):
            host_slot[(t, e)] = host.add_count % host.capacity
            ended = term[e] or trunc[e]
            host.add(obs[e], action[e], reward[e], term[e], trunc[e], final_observation=nxt[e] if ended else None)
    keys = sorted(host_slot)
    t_all = np.array([k[0] for k in keys], np.int32)
    e_all = np.array([k[1] for k in keys], np.int32)
    is_valid = jax.jit(device.is_valid)
    device_valid = np.asarray(is_valid(state, t_all, e_all))
    # A host slot may have been reused by a later step: only the newest owner of a slot counts.
    owner = {}
    for (t, e), slot in host_slot.items():
        owner[(e, slot)] = max(owner.get((e, slot), -1), t)
    host_valid = np.array(
        [owner[(e, host_slot[(t, e)])] == t and hosts[e].is_valid(np.array([host_slot[(t, e)]]))[0] for t, e in keys]
    )
    if capacity // num_envs >= steps + steps // 2:  # nothing evicted on either side
        # Same valid set, except that a row stores o_{t+1} itself, so the device form may sample
        # step t as soon as step t+n-1 is stored (the host waits for o_{t+n}'s own slot).
        assert not (host_valid & ~device_valid).any()
        assert (t_all[device_valid & ~host_valid] >= steps - horizon).all()
    both = device_valid & host_valid
    assert both.sum() > 20
    batch = jax.jit(device.gather)(state, t_all[both], e_all[both])
    for e, host in enumerate(hosts):
        sel = e_all[both] == e
        slots = np.array([host_slot[(t, e)] for t in t_all[both][sel]])
        expected = host._gather(slots, np.ones(len(slots), np.float32))
        for field in ("observation", "action", "next_observation"):
            np.testing.assert_array_equal(np.asarray(getattr(batch, field))[sel], getattr(expected, field), err_msg=field)
        for field in ("reward", "discount"):
            np.testing.assert_allclose(np.asarray(getattr(batch, field))[sel], getattr(expected, field), rtol=1e-5, err_msg=field)
    # Sampling only ever returns valid starts, with the batch shapes of the host form.
    t, env = jax.jit(device.sample_indices, static_argnums=2)(state, jax.random.PRNGKey(1), 256)
    assert np.asarray(is_valid(state, t, env)).all()
    sample = jax.jit(device.sample, static_argnums=2)(state, jax.random.PRNGKey(2), 8)
    assert sample.observation.shape == (8,) + obs_shape + (stack,)
    assert sample.next_observation.shape == (8,) + obs_shape + (stack,)
    assert sample.reward.shape == sample.discount.shape == sample.action.shape == (8,)


# ----------------------------------------------------------------------------- compiled runner
# DQN on gymnax CartPole, small enough for CPU: every test shares these bindings (and so the
# compiled programs, through JAX's persistent compilation cache).
_BINDINGS = [
    "MLP.hidden_units = (64, 64)",
    "DQNAgent.batch_size = 32",
    "DQNAgent.min_replay_history = 200",
    "DQNAgent.epsilon_decay_period = 1000",
    "DQNAgent.target_update_period = 100",
    "ReplayBuffer.capacity = 5000",
]
_RUN = dict(num_iterations=2, training_steps=2500, evaluation_steps=1000, num_eval_envs=4, tensorboard=False)
_COMPARED = ("train_episodes", "train_return_mean", "train_return_median", "loss", "update_steps",
             "eval_episodes", "eval_return_mean", "total_train_steps")


def _configure(extra=()):
    from accumbens import train

    train.parse_config(["dqn/cartpole"], _BINDINGS + list(extra))


def _runner(base_dir, **kwargs):
    from accumbens.runners.compiled import CompiledRunner

    _configure()
    return CompiledRunner(str(base_dir), **{**_RUN, **kwargs})


def _records(base_dir, seed):
    from accumbens.runners.logging import read_records

    return read_records(os.path.join(str(base_dir), f"seed_{seed}"))


def _assert_same(a, b, rtol=0.0):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        for key in _COMPARED:
            va, vb = ra[key], rb[key]
            if va is None or vb is None:
                assert va is None and vb is None, key
            else:
                np.testing.assert_allclose(va, vb, rtol=rtol, err_msg=f"iteration {ra['iteration']} {key}")


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    previous = {k: getattr(jax.config, k) for k in ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")}
    path = str(tmp_path_factory.mktemp("jax_cache"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield path
    for key, value in previous.items():
        jax.config.update(key, value)


@pytest.fixture(scope="module")
def four_seeds(tmp_path_factory, compile_cache):
    """A 4-seed, 2-iteration run (seeds 0..3); its records per seed, and its directory."""
    base = tmp_path_factory.mktemp("four_seeds")
    runner = _runner(base, num_seeds=4)
    runner.run_experiment()
    return base, {seed: _records(base, seed) for seed in range(4)}


def test_outputs_shapes_and_learning(four_seeds):
    base, records = four_seeds
    assert os.path.isfile(os.path.join(base, "config.gin"))
    for seed in range(4):
        for name in ("metrics.csv", "metrics.jsonl"):
            assert os.path.isfile(os.path.join(base, f"seed_{seed}", name))
        assert [r["iteration"] for r in records[seed]] == [0, 1]
        assert records[seed][1]["total_train_steps"] == 5000
        assert records[seed][0]["update_steps"] == (2500 - 200) // 4
    checkpoint = os.path.join(base, "checkpoints", "ckpt-000001")
    assert sorted(os.listdir(checkpoint)) == ["compiled_runner.json", "manifest.json"] + [f"seed_{s}.msgpack" for s in range(4)]
    # Different seeds, different numbers.
    assert len({r[1]["loss"] for r in records.values()}) == 4
    # DQN learns CartPole in 5000 steps: better than random (about 22 per episode) in greedy
    # evaluation and in training, on average over the seeds.
    evals = [records[s][1]["eval_return_mean"] or 500.0 for s in range(4)]  # None: no episode ended in 250 steps
    assert np.mean(evals) > 45, evals
    assert np.mean([records[s][1]["train_return_mean"] for s in range(4)]) > 35


def test_single_seed_equals_vmapped_seed(four_seeds, tmp_path):
    base, records = four_seeds
    _runner(tmp_path, num_seeds=1, seed=2).run_experiment()
    _assert_same(_records(tmp_path, 2), records[2], rtol=1e-5)


def test_resume_reproduces_uninterrupted_run(four_seeds, tmp_path):
    from accumbens.runners.runner import ConfigMismatchError

    base, records = four_seeds
    _runner(tmp_path, num_seeds=4, num_iterations=1).run_experiment()
    # A run killed after iteration 0's checkpoint: resuming with more iterations continues it.
    with open(os.path.join(tmp_path, "seed_3", "metrics.jsonl"), "a") as f:
        f.write(json.dumps({**records[3][1], "train_return_mean": -1.0}) + "\n")  # row not covered by a checkpoint
    _runner(tmp_path, num_seeds=4, num_iterations=2).run_experiment()
    for seed in range(4):
        _assert_same(_records(tmp_path, seed), records[seed])
    with pytest.raises(ConfigMismatchError):
        _configure(["DQNAgent.gamma = 0.9"])
        from accumbens.runners.compiled import CompiledRunner

        CompiledRunner(str(tmp_path), num_seeds=4, **_RUN)


def test_sharded_over_four_devices_equals_unsharded(tmp_path):
    """4 seeds sharded over 4 fake CPU devices vs the same 4 seeds on one device (one subprocess).

    CartPole's float dynamics are compiled slightly differently once partitioned (last-bit
    differences in observations), so a short phase is compared with a tolerance: same episodes,
    returns and losses to 1e-4. (On MinAtar, whose dynamics are integer, returns agree exactly.)
    """
    script = textwrap.dedent(
        f"""
        import json, sys
        import jax, numpy as np
        assert len(jax.devices()) == 4, jax.devices()
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        import test_compiled as t
        out = {{}}
        for use_all in (False, True):
            runner = t._runner({str(tmp_path)!r} + f"/{{use_all}}", num_seeds=4, use_all_devices=use_all,
                               num_iterations=1, training_steps=400, evaluation_steps=0)
            assert runner.mesh.devices.size == (4 if use_all else 1)
            states = runner.init_states()
            assert len(states.rng.sharding.device_set) == (4 if use_all else 1)
            out[str(use_all)] = runner.run_experiment()[0]
        print("RESULT" + json.dumps(out))
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    out = json.loads(result.stdout.split("RESULT", 1)[1])
    unsharded, sharded = out["False"], out["True"]
    assert [r["update_steps"] for r in sharded] == [(400 - 200) // 4] * 4
    for a, b in zip(unsharded, sharded):
        for key in ("train_episodes", "train_return_mean", "loss", "total_train_steps"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-4, err_msg=key)
