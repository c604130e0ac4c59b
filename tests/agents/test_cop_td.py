"""Discounted COP-TD deep agent: one update against float64 NumPy, the tabular fixed point, configs."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from accumbens.agents import cop_td, networks, rainbow
from accumbens.agents import tabular_cop_td as tab
from accumbens.replay.batch import Batch
from accumbens.replay.dataset import DatasetBatch

A = 3
OBS = 5


class Flat(nn.Module):
    """A parameter-free torso: features = the flattened observation."""

    @nn.compact
    def __call__(self, x):
        return x.reshape(x.shape[:-2] + (-1,)).astype(jnp.float32)


def _softplus(z):
    return np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0.0)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _batch(rng, n=16, behaviour=None):
    fields = dict(
        observation=rng.normal(size=(n, OBS, 1)).astype(np.float32),
        action=rng.integers(0, A, size=n).astype(np.int32),
        reward=rng.normal(size=n).astype(np.float32),
        next_observation=rng.normal(size=(n, OBS, 1)).astype(np.float32),
        discount=rng.choice([0.0, 0.99], size=n).astype(np.float32),
        weight=rng.uniform(0.5, 1.0, size=n).astype(np.float32),
        index=np.arange(n),
    )
    if behaviour is None:
        return Batch(**fields)
    return DatasetBatch(**fields, behaviour_probability=behaviour.astype(np.float32), epsilon=np.full(n, np.nan, np.float32))


def _perturbed(tree, rng, scale):
    return jax.tree.map(lambda x: x + jnp.asarray(rng.normal(size=x.shape) * scale, x.dtype), tree)


def _dqn_setup(ratio_weighting=True, **kwargs):
    net = cop_td.COPTDNetwork(torso=Flat(), value_head=networks.QNetwork(torso=cop_td.Identity(), num_actions=A))
    settings = dict(
        value_head="dqn",
        num_actions=A,
        gamma_hat=0.9,
        ratio_loss_weight=0.7,
        normalization_weight=0.3,
        ratio_clip=1.2,
        ratio_weighting=ratio_weighting,
        target_epsilon=0.05,
        loss_type="mse",
        epsilon_train=0.1,
        epsilon_decay_period=100,
        epsilon_warmup_steps=50,
        target_update_period=1000,
        update_period=4,
    )
    settings.update(kwargs)
    agent = cop_td.make_cop_td(net, optax.sgd(1.0), **settings)
    rng = np.random.default_rng(0)
    state = agent.init(jax.random.PRNGKey(0), (OBS, 1), A)
    state = state.replace(
        params=_perturbed(state.params, rng, 0.4),
        target_params=_perturbed(state.params, rng, 0.4),
        env_steps=jnp.asarray(90, jnp.int32),  # 40 steps into the decay: epsilon = 1 - 0.9 * 0.4 = 0.64
    )
    return net, agent, state, settings


def _numpy_dqn_update(state, batch, s):
    """Float64 reference of one COP-TD step (DQN head, squared loss, SGD lr 1): losses and new head params."""
    p, tp = state.params["params"], state.target_params["params"]
    f = lambda x: np.asarray(x, np.float64).reshape(len(x), -1)
    W, b = np.asarray(p["value_head"]["Dense_0"]["kernel"], np.float64), np.asarray(p["value_head"]["Dense_0"]["bias"], np.float64)
    tW, tb = np.asarray(tp["value_head"]["Dense_0"]["kernel"], np.float64), np.asarray(tp["value_head"]["Dense_0"]["bias"], np.float64)
    R, r = np.asarray(p["ratio"]["kernel"], np.float64)[:, 0], float(p["ratio"]["bias"][0])
    tR, tr = np.asarray(tp["ratio"]["kernel"], np.float64)[:, 0], float(tp["ratio"]["bias"][0])
    x, xn = f(batch.observation), f(batch.next_observation)
    a, n = batch.action, len(batch.action)
    w = np.asarray(batch.weight, np.float64)

    q = x @ W + b
    target = batch.reward + batch.discount * (xn @ tW + tb).max(axis=1)
    per_sample = 0.5 * (target - q[np.arange(n), a]) ** 2
    c_s = _softplus(x @ R + r)
    correction = np.clip(c_s, 0.0, s["ratio_clip"]) if s["ratio_weighting"] else np.ones(n)
    value_loss = np.mean(w * correction * per_sample)

    greedy = q.argmax(axis=1)
    onehot = (a == greedy).astype(np.float64)
    pi = s["target_epsilon"] / A + (1 - s["target_epsilon"]) * onehot
    epsilon = 0.64
    mu = epsilon / A + (1 - epsilon) * onehot
    if hasattr(batch, "behaviour_probability"):
        recorded = np.asarray(batch.behaviour_probability, np.float64)
        mu = np.where(np.isfinite(recorded), recorded, mu)
    bootstrap = np.clip(_softplus(x @ tR + tr), 0.0, s["ratio_clip"])
    y = (1 - s["gamma_hat"]) + s["gamma_hat"] * (pi / mu) * bootstrap
    z_next = xn @ R + r
    c_next = _softplus(z_next)
    normalization = c_next.mean() - 1.0
    ratio_loss = 0.5 * np.mean(w * (c_next - y) ** 2) + s["normalization_weight"] * normalization**2
    loss = value_loss + s["ratio_loss_weight"] * ratio_loss

    # Gradients: only c(s') carries one in the ratio loss; the value loss's weight is held fixed.
    dq = np.zeros((n, A))
    dq[np.arange(n), a] = w * correction * (q[np.arange(n), a] - target) / n
    dc_next = s["ratio_loss_weight"] * (w * (c_next - y) / n + 2 * s["normalization_weight"] * normalization / n)
    dz = dc_next * _sigmoid(z_next)
    new = dict(W=W - x.T @ dq, b=b - dq.sum(0), R=R - xn.T @ dz, r=r - dz.sum())
    return dict(loss=loss, value_loss=value_loss, ratio_loss=ratio_loss, normalization=normalization, pi_over_mu=np.mean(pi / mu)), new


@pytest.mark.parametrize("ratio_weighting", [True, False])
@pytest.mark.parametrize("recorded", [False, True])
def test_dqn_head_update_matches_numpy_float64(ratio_weighting, recorded):
    net, agent, state, settings = _dqn_setup(ratio_weighting)
    rng = np.random.default_rng(1)
    behaviour = None
    if recorded:  # a dataset's recorded mu(a|s), unknown (NaN) for some transitions
        behaviour = rng.uniform(0.1, 1.0, size=16)
        behaviour[::3] = np.nan
    batch = _batch(rng, behaviour=behaviour)
    new_state, metrics = jax.jit(agent.update)(state, batch, jax.random.PRNGKey(3))
    want, new = _numpy_dqn_update(state, batch, settings)
    for key in ("loss", "value_loss", "ratio_loss", "normalization"):
        np.testing.assert_allclose(float(metrics[key]), want[key], rtol=2e-5, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(float(metrics["policy_ratio_mean"]), want["pi_over_mu"], rtol=2e-5)
    p = new_state.params["params"]
    np.testing.assert_allclose(p["value_head"]["Dense_0"]["kernel"], new["W"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p["value_head"]["Dense_0"]["bias"], new["b"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p["ratio"]["kernel"][:, 0], new["R"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p["ratio"]["bias"][0], new["r"], rtol=1e-4, atol=1e-5)
    # The clip is active for some states, so the weighting test is not vacuous.
    c = np.asarray(net.apply(state.params, batch.observation).ratio)
    assert (c > settings["ratio_clip"]).any() and (c < settings["ratio_clip"]).any()


def test_c51_head_value_loss_is_the_ratio_weighted_cross_entropy():
    head = networks.RainbowNetwork(torso=cop_td.Identity(), num_actions=A, num_atoms=11, vmax=5.0)
    net = cop_td.COPTDNetwork(torso=Flat(), value_head=head)
    agent = cop_td.make_cop_td(net, optax.sgd(0.0), value_head="c51", num_actions=A, ratio_clip=1.1, epsilon_warmup_steps=0)
    rng = np.random.default_rng(2)
    state = agent.init(jax.random.PRNGKey(0), (OBS, 1), A)
    state = state.replace(params=_perturbed(state.params, rng, 0.3), target_params=_perturbed(state.params, rng, 0.3))
    batch = _batch(rng)
    _, metrics = jax.jit(agent.update)(state, batch, jax.random.PRNGKey(0))

    out = net.apply(state.params, batch.observation)
    nxt = net.apply(state.target_params, batch.next_observation).value
    z = np.linspace(-5.0, 5.0, 11)
    probs = np.asarray(nxt.probabilities, np.float64)
    best = (probs * z).sum(-1).argmax(1)
    p_next = probs[np.arange(16), best]
    atoms = np.clip(batch.reward[:, None] + batch.discount[:, None] * z[None, :], -5.0, 5.0)
    weights = np.clip(1.0 - np.abs(atoms[:, None, :] - z[None, :, None]) / 1.0, 0.0, 1.0)  # [B, N, K]
    target = (weights * p_next[:, None, :]).sum(-1)
    logits = np.asarray(out.value.logits, np.float64)[np.arange(16), batch.action]
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    cross_entropy = -(target * log_p).sum(-1)
    correction = np.clip(np.asarray(out.ratio, np.float64), 0.0, 1.1)
    np.testing.assert_allclose(float(metrics["value_loss"]), np.mean(batch.weight * correction * cross_entropy), rtol=1e-5)
    np.testing.assert_allclose(metrics["priorities"], cross_entropy + rainbow.PRIORITY_EPSILON, rtol=1e-5)


def test_ratio_starts_at_one_and_act_is_the_value_heads_greedy_action():
    net, agent, state, _ = _dqn_setup(epsilon_eval=0.0)
    fresh = agent.init(jax.random.PRNGKey(5), (OBS, 1), A)
    obs = np.random.default_rng(4).normal(size=(32, OBS, 1)).astype(np.float32)
    np.testing.assert_allclose(net.apply(fresh.params, obs).ratio, 1.0, atol=1e-6)
    actions = agent.act(state, obs, jax.random.PRNGKey(0), False)
    greedy = np.argmax(net.apply(state.params, obs).value, axis=-1)
    np.testing.assert_array_equal(actions, greedy)
    # policy: the epsilon-greedy probabilities act samples from (training epsilon 0.64 at step 90).
    probabilities = np.asarray(agent.policy(state, obs, True))
    np.testing.assert_allclose(probabilities, 0.64 / A + 0.36 * np.eye(A)[greedy], rtol=1e-6)
    np.testing.assert_allclose(agent.policy(state, obs, False), np.eye(A)[greedy], atol=1e-7)


def test_ratio_head_learns_the_tabular_fixed_point():
    """The agent's own update, on one-hot states of a small MDP, converges to the closed form.

    pi is uniform (target_epsilon = 1, so it does not depend on the value head) and mu a skewed
    random policy recorded in the batch; transitions are drawn from d_mu, mu and P. With the soft
    normalisation penalty the ratio head reaches the exact fixed point (1 - g)(I - g P_pi^T)^-1 d_mu / d_mu.
    """
    S, g = 6, 0.9
    r0 = np.random.default_rng(0)
    transitions = r0.dirichlet(np.ones(S), size=(S, A))
    mu = 0.2 / A + 0.8 * r0.dirichlet(np.full(A, 0.5), size=S)
    problem = tab.make_problem(transitions, mu, np.full((S, A), 1.0 / A))
    exact = problem.fixed_point(g)
    assert np.max(np.abs(exact - 1.0)) > 0.2

    net = cop_td.COPTDNetwork(torso=Flat(), value_head=networks.QNetwork(torso=cop_td.Identity(), num_actions=A))
    agent = cop_td.make_cop_td(
        net, optax.sgd(optax.exponential_decay(2.0, 300, 0.5)), value_head="dqn", num_actions=A, gamma_hat=g,
        normalization_weight=1.0, target_epsilon=1.0, target_update_period=1, update_period=1,
    )
    state = agent.init(jax.random.PRNGKey(0), (S, 1), A)
    eye = np.eye(S, dtype=np.float32)
    rng = np.random.default_rng(1)
    steps, size = 1500, 1024
    s = rng.choice(S, size=(steps, size), p=problem.d_mu)
    a = (rng.random((steps, size))[..., None] > np.cumsum(mu[s], -1)).sum(-1).clip(0, A - 1)
    s2 = (rng.random((steps, size))[..., None] > np.cumsum(transitions[s, a], -1)).sum(-1).clip(0, S - 1)
    batches = DatasetBatch(
        observation=eye[s][..., None], action=a.astype(np.int32), reward=np.zeros((steps, size), np.float32),
        next_observation=eye[s2][..., None], discount=np.full((steps, size), 0.9, np.float32),
        weight=np.ones((steps, size), np.float32), index=np.zeros((steps, size), np.int64),
        behaviour_probability=mu[s, a].astype(np.float32), epsilon=np.full((steps, size), np.nan, np.float32),
    )

    def body(st, batch):
        return agent.update(st, batch, jax.random.PRNGKey(0))[0], None

    state, _ = jax.jit(lambda st, bs: jax.lax.scan(body, st, bs))(state, batches)
    learned = np.asarray(net.apply(state.params, eye[..., None]).ratio)
    assert np.max(np.abs(learned - exact)) < 2e-2, (learned, exact)


def test_bad_settings_are_reported():
    net = cop_td.COPTDNetwork(torso=Flat(), value_head=networks.QNetwork(torso=cop_td.Identity(), num_actions=A))
    with pytest.raises(ValueError, match="gamma_hat"):
        cop_td.make_cop_td(net, optax.sgd(1.0), value_head="dqn", num_actions=A, gamma_hat=1.0)
    with pytest.raises(ValueError, match="value_head"):
        cop_td.make_cop_td(net, optax.sgd(1.0), value_head="qr", num_actions=A)
    with pytest.raises(ValueError, match="ratio_clip"):
        cop_td.make_cop_td(net, optax.sgd(1.0), value_head="dqn", num_actions=A, ratio_clip=0.0)
    with pytest.raises(ValueError, match="update_horizon"):
        cop_td.COPTDAgent(num_actions=A, observation_shape=(OBS,), update_horizon=3)


TINY_MINATAR = ["Runner.num_iterations = 1", "Runner.training_steps = 300", "Runner.evaluation_steps = 100", "COPTDAgent.min_replay_history = 100", "ReplayBuffer.capacity = 1000"]


@pytest.mark.parametrize("extra", [[], ["COPTDAgent.value_head = 'dqn'", "COPTDAgent.normalization_weight = 1.0"]])
def test_minatar_config_runs_an_iteration(tmp_path, make_runner, extra):
    runner = make_runner("cop_td/minatar", TINY_MINATAR + extra)
    assert isinstance(runner.agent, cop_td.COPTDAgent)
    records = runner.run_experiment()
    assert records[0]["update_steps"] > 0 and np.isfinite(records[0]["loss"])
    assert (tmp_path / "checkpoints" / "ckpt-000000" / "manifest.json").exists()


def test_atari_config_bindings():
    import gin

    from accumbens import train

    train.parse_config(["cop_td/atari"], [])
    for name, value in dict(value_head="c51", gamma_hat=0.99, update_horizon=1, replay_scheme="uniform", vmax=10.0).items():
        assert gin.query_parameter(f"COPTDAgent.{name}") == value, name


@pytest.mark.slow
def test_runs_under_the_compiled_runner(tmp_path):
    """Pure and jittable: a 2-seed compiled run (a few minutes on a loaded 2-core CPU, mostly compilation)."""
    from accumbens import train
    from accumbens.runners.compiled import CompiledRunner
    from accumbens.runners.logging import read_records

    train.parse_config(["cop_td/minatar"], TINY_MINATAR[:1] + ["Runner.training_steps = 400", "Runner.evaluation_steps = 100", *TINY_MINATAR[3:]])
    CompiledRunner(str(tmp_path), num_seeds=2, tensorboard=False).run_experiment()
    for seed in (0, 1):
        (record,) = read_records(str(tmp_path / f"seed_{seed}"))
        assert record["update_steps"] > 0 and np.isfinite(record["loss"])
