"""vmap over hyperparameter values in the compiled runner (CPU, small budgets).

- `create_optimizer` injects learning_rate/eps into the optimizer state and still gives bitwise
  the plain optax optimizers' updates (the host runner's numbers do not change);
- a 2-value learning-rate sweep x 2 seeds in one program gives, per member, the numbers of two
  separate one-value runs; outputs under base_dir/<binding>=<value>/seed_<n>/; a sweep killed
  after one iteration resumes to the uninterrupted sweep's numbers;
- bindings that cannot be vmapped are refused with an error naming those that can; the sweep is
  gin-bindable (the CLI's --gin_bindings path);
- (slow) members shard over 4 forced CPU devices like seeds, with the unsharded run's numbers.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from accumbens.agents.dqn import create_optimizer


@pytest.mark.parametrize(
    "kwargs,reference",
    [
        (dict(name="adam", learning_rate=1e-3, eps=1.5e-4), lambda: optax.adam(1e-3, b1=0.9, b2=0.999, eps=1.5e-4)),
        (dict(name="rmsprop", learning_rate=2.5e-4, beta2=0.95, eps=0.01, centered=True),
         lambda: optax.rmsprop(2.5e-4, decay=0.95, eps=0.01, centered=True)),
        (dict(name="sgd", learning_rate=0.05), lambda: optax.sgd(0.05)),
    ],
)
def test_injected_optimizer_is_bitwise_the_plain_one(kwargs, reference):
    def run(optimizer):
        params = {"w": jax.random.normal(jax.random.PRNGKey(0), (7, 5)), "b": jnp.zeros(5)}
        state = optimizer.init(params)

        @jax.jit
        def step(params, state, i):
            grads = jax.tree.map(lambda p: jnp.sin(p * (i + 1.0)) + 0.1 * i, params)
            updates, state = optimizer.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        for i in range(30):
            params, state = step(params, state, i)
        return params, state

    injected, state = run(create_optimizer(**kwargs))
    plain, _ = run(reference())
    for a, b in zip(jax.tree.leaves(injected), jax.tree.leaves(plain)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(state.hyperparams["learning_rate"]) == np.float32(kwargs["learning_rate"])


# ----------------------------------------------------------------------------- sweeps
_BINDINGS = [
    "MLP.hidden_units = (32, 32)",
    "DQNAgent.batch_size = 16",
    "DQNAgent.min_replay_history = 100",
    "DQNAgent.epsilon_decay_period = 300",
    "DQNAgent.target_update_period = 50",
    "ReplayBuffer.capacity = 2000",
]
_RUN = dict(training_steps=300, evaluation_steps=100, num_eval_envs=2, tensorboard=False, num_seeds=2)
_RATES = (1e-3, 3e-3)
_LR = "create_optimizer.learning_rate"
_COMPARED = ("train_episodes", "train_return_mean", "loss", "update_steps", "eval_episodes", "eval_return_mean",
             "total_train_steps")


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    previous = {k: getattr(jax.config, k) for k in ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")}
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield
    for key, value in previous.items():
        jax.config.update(key, value)


def _runner(base_dir, extra=(), **kwargs):
    from accumbens import train
    from accumbens.runners.compiled import CompiledRunner

    train.parse_config(["dqn/cartpole"], _BINDINGS + list(extra))
    return CompiledRunner(str(base_dir), **{**_RUN, **kwargs})


def _records(path):
    from accumbens.runners.logging import read_records

    return read_records(str(path))


def _assert_same(a, b, rtol):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        for key in _COMPARED:
            if ra[key] is None or rb[key] is None:
                assert ra[key] is None and rb[key] is None, key
            else:
                np.testing.assert_allclose(ra[key], rb[key], rtol=rtol, err_msg=f"iteration {ra['iteration']} {key}")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, compile_cache):
    base = tmp_path_factory.mktemp("sweep")
    runner = _runner(base, num_iterations=2, hyperparameters={_LR: _RATES})
    runner.run_experiment()
    return base, runner


def test_sweep_layout_and_members(sweep):
    base, runner = sweep
    assert runner.num_members == 4
    expected = [f"{_LR}={rate!r}/seed_{seed}" for rate in _RATES for seed in (0, 1)]
    assert runner.member_names == expected
    for name in expected:
        assert [r["iteration"] for r in _records(base / name)] == [0, 1]
    checkpoint = os.listdir(base / "checkpoints" / "ckpt-000001")
    assert sum(name.endswith(".msgpack") for name in checkpoint) == 4
    # Members differ: the two rates give different losses for the same seed.
    losses = {name: _records(base / name)[1]["loss"] for name in expected}
    assert len(set(losses.values())) == 4


def test_sweep_members_equal_separate_runs(sweep, tmp_path):
    base, _ = sweep
    for rate in _RATES:
        _runner(tmp_path / str(rate), [f"{_LR} = {rate!r}"], num_iterations=2).run_experiment()
        for seed in (0, 1):
            _assert_same(_records(base / f"{_LR}={rate!r}" / f"seed_{seed}"),
                         _records(tmp_path / str(rate) / f"seed_{seed}"), rtol=1e-5)


def test_sweep_resume_reproduces_uninterrupted_sweep(sweep, tmp_path):
    base, runner = sweep
    _runner(tmp_path, num_iterations=1, hyperparameters={_LR: _RATES}).run_experiment()
    _runner(tmp_path, num_iterations=2, hyperparameters={_LR: _RATES}).run_experiment()
    for name in runner.member_names:
        _assert_same(_records(tmp_path / name), _records(base / name), rtol=0.0)


def test_unvmappable_bindings_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"cannot vmap over 'DQNAgent.gamma'.*create_optimizer.eps.*create_optimizer.learning_rate"):
        _runner(tmp_path / "a", num_iterations=1, hyperparameters={"DQNAgent.gamma": (0.9, 0.99)})
    with pytest.raises(ValueError, match="numbers"):
        _runner(tmp_path / "b", num_iterations=1, hyperparameters={_LR: ((1e-3, 1e-4), 1e-3)})
    with pytest.raises(ValueError, match="distinct"):
        _runner(tmp_path / "c", num_iterations=1, hyperparameters={_LR: (1e-3, 1e-3)})
    # SGD has no eps: only the learning rate can be swept.
    with pytest.raises(ValueError, match=r"can vmap over: \['create_optimizer.learning_rate'\]"):
        _runner(tmp_path / "d", ["create_optimizer.name = 'sgd'"], num_iterations=1,
                hyperparameters={"create_optimizer.eps": (1e-4, 1e-3)})


def test_sweep_is_gin_bindable(tmp_path):
    runner = _runner(tmp_path, [f"CompiledRunner.hyperparameters = {{'{_LR}': (1e-4, 3e-4, 1e-3)}}"], num_iterations=1)
    assert runner.num_members == 3 * 2 and runner.mesh.devices.size >= 1
    assert runner.member_names[-1] == f"{_LR}=0.001/seed_1"


@pytest.mark.slow  # a subprocess with 4 forced CPU devices, two compilations (~2 min on 2 busy cores)
def test_sweep_members_shard_like_seeds(tmp_path):
    """2 rates x 2 seeds = 4 members over 4 fake CPU devices vs on one device: the same numbers
    (to 1e-4: CartPole's float dynamics compile slightly differently once partitioned)."""
    import json
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import json, sys
        import jax
        assert len(jax.devices()) == 4, jax.devices()
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        import test_compiled_hyperparameters as t
        out = {{}}
        for use_all in (False, True):
            runner = t._runner({str(tmp_path)!r} + f"/{{use_all}}", num_iterations=1, use_all_devices=use_all,
                               hyperparameters={{t._LR: t._RATES}})
            assert runner.mesh.devices.size == (4 if use_all else 1)
            out[str(use_all)] = runner.run_experiment()[0]
        print("RESULT" + json.dumps(out))
        """
    )
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=repo, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    out = json.loads(result.stdout.split("RESULT", 1)[1])
    assert len(out["True"]) == 4
    for a, b in zip(out["False"], out["True"]):
        for key in ("train_episodes", "train_return_mean", "loss", "update_steps", "total_train_steps"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-4, err_msg=key)
