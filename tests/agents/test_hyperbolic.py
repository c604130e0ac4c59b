"""Hyperbolic / multi-horizon C51: the gamma grid and Riemann weights against closed forms, the
per-head targets against a float64 NumPy reference, one head against C51's update, acting,
errors, configs, and learning on Pathworld (the Riemann sum of learned heads vs r / (1 + k d))."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from accumbens import train
from accumbens.agents import hyperbolic, networks, rainbow
from accumbens.agents.dqn import create_optimizer
from accumbens.environments import pathworld
from accumbens.replay.batch import Batch


# ----- grid and weights ---------------------------------------------------------------------------
def test_grid_matches_the_papers_formula_for_its_settings():
    """N = 10, k = 0.01, gamma_max = 0.99: b = (1 - 0.99^100)^(1/10), x_i = 1 - b^i, gamma_i = x_i^k."""
    b = (1.0 - 0.99**100) ** 0.1
    points = hyperbolic.integration_points(0.99, 10, 0.01)
    np.testing.assert_allclose(points, [1.0 - b**i for i in range(10)], rtol=1e-12)
    assert points[0] == 0.0
    gammas = hyperbolic.head_gammas(0.99, 10, 0.01)
    np.testing.assert_allclose(gammas, points**0.01, rtol=1e-12)
    assert gammas[0] == 0.0 and np.all(np.diff(gammas) > 0) and gammas[-1] < 0.99
    assert (1.0 - b**10) ** 0.01 == pytest.approx(0.99, abs=1e-12)  # the grid's top is gamma_max
    weights = hyperbolic.riemann_weights(points, "lower")
    np.testing.assert_allclose(weights, np.diff(np.append(points, 1.0)), rtol=1e-12)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    upper = hyperbolic.riemann_weights(points, "upper")
    np.testing.assert_allclose(upper, np.concatenate([[0.0], np.diff(points)]), rtol=1e-12)


def test_paper_grid_underestimates_long_horizons():
    """The truncation the issue warns of: at t = 100 the 10-head lower sum is 0.273, not 0.5."""
    got = hyperbolic.riemann_discount(np.array([100.0]), 0.99, 10, 0.01)[0]
    points = hyperbolic.integration_points(0.99, 10, 0.01)
    expected = float(np.sum(np.diff(np.append(points, 1.0)) * points))  # x^(kt) = x at kt = 1
    assert got == pytest.approx(expected, rel=1e-12)
    assert got == pytest.approx(0.2735, abs=5e-4)


@pytest.mark.parametrize("k,gamma_max,num_gammas", [(0.01, 0.99, 10), (0.1, 0.999, 20), (1.0, 0.999, 100)])
@pytest.mark.parametrize("t", [0.0, 1.0, 3.0, 10.0, 40.0, 100.0])
def test_lower_sum_brackets_the_hyperbolic_discount(k, gamma_max, num_gammas, t):
    """sum_i w_i x_i^(kt) is a lower Riemann sum of integral_0^1 x^(kt) dx = 1/(1+kt): the integral
    lies between it and the upper sum over the same partition (x_N = 1), which bounds the error."""
    lower = hyperbolic.riemann_discount(np.array(t), gamma_max, num_gammas, k)
    points = np.append(hyperbolic.integration_points(gamma_max, num_gammas, k), 1.0)
    upper = float(np.sum(np.diff(points) * points[1:] ** (k * t)))
    exact = 1.0 / (1.0 + k * t)
    assert lower <= exact + 1e-12 <= upper + 2e-12
    if t == 0.0:
        assert lower == pytest.approx(1.0, abs=1e-12)


def test_riemann_sum_converges_as_heads_grow_and_gamma_max_approaches_one():
    t = np.array([1.0, 2.0, 5.0, 10.0, 20.0])
    exact = 1.0 / (1.0 + 0.1 * t)
    errors = [np.max(np.abs(hyperbolic.riemann_discount(t, g, n, 0.1) - exact)) for g, n in [(0.99, 10), (0.999, 50), (0.9999, 1000)]]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01


def test_one_head_is_the_exponential_agent():
    assert hyperbolic.head_gammas(0.97, 1, 0.01)[0] == pytest.approx(0.97, rel=1e-12)
    np.testing.assert_array_equal(hyperbolic.riemann_weights(hyperbolic.integration_points(0.97, 1, 0.01)), [1.0])


def test_bad_grid_arguments_are_refused():
    with pytest.raises(ValueError, match="gamma_max"):
        hyperbolic.integration_points(1.0, 10, 0.01)
    with pytest.raises(ValueError, match="num_gammas"):
        hyperbolic.integration_points(0.99, 0, 0.01)
    with pytest.raises(ValueError, match="exponent"):
        hyperbolic.integration_points(0.99, 10, 0.0)
    with pytest.raises(ValueError, match="integral_estimate"):
        hyperbolic.riemann_weights(np.array([0.0, 0.5]), "middle")


# ----- per-head targets ---------------------------------------------------------------------------
OBS = 6  # one-hot states
ACTIONS = 3


def _tabular_network(num_actions, num_atoms=11, vmax=5.0, vmin=-5.0):
    """C51's network on one-hot observations with no hidden layer: a table of logits."""
    torso = networks.MLP(hidden_units=(), observation_ndim=1)
    return networks.RainbowNetwork(torso=torso, num_actions=num_actions, num_atoms=num_atoms, vmax=vmax, vmin=vmin)


def _batch(rng, size, discount_value=0.99, horizon_discount=None):
    s = rng.integers(0, OBS, size)
    s2 = rng.integers(0, OBS, size)
    eye = np.eye(OBS, dtype=np.float32)
    terminated = rng.random(size) < 0.3
    d = discount_value if horizon_discount is None else horizon_discount
    return Batch(
        observation=jnp.asarray(eye[s][..., None]),
        action=jnp.asarray(rng.integers(0, ACTIONS, size), jnp.int32),
        reward=jnp.asarray(rng.normal(size=size) * 2, jnp.float32),
        next_observation=jnp.asarray(eye[s2][..., None]),
        discount=jnp.asarray(np.where(terminated, 0.0, d), jnp.float32),
        weight=jnp.asarray(rng.uniform(0.5, 1.5, size), jnp.float32),
        index=jnp.arange(size),
    )


def _numpy_projection(atoms, probabilities, support):
    """Bellemare et al. (2017) Algorithm 1 in float64 for one distribution."""
    vmin, vmax, n = support[0], support[-1], len(support)
    dz = (vmax - vmin) / (n - 1)
    out = np.zeros(n)
    for tz, p in zip(atoms, probabilities):
        b = (min(max(tz, vmin), vmax) - vmin) / dz
        lo, hi = int(np.floor(b)), int(np.ceil(b))
        if lo == hi:
            out[lo] += p
        else:
            out[lo] += p * (hi - b)
            out[hi] += p * (b - lo)
    return out


def _random_params(network, key):
    params = network.init(key, jnp.zeros((OBS, 1)))
    return jax.tree.map(lambda p: jax.random.normal(jax.random.fold_in(key, p.size), p.shape), params)


def test_each_head_targets_its_own_discount_and_argmax():
    """The update's loss equals a float64 NumPy loss built head by head: target atoms
    r + gamma_h (1 - terminal) z, next action argmax of head h's target Q, projected, cross-entropy
    with head h's online logits, averaged over heads, weighted mean over the batch."""
    gammas = hyperbolic.head_gammas(0.99, 4, 0.5)
    weights = hyperbolic.riemann_weights(hyperbolic.integration_points(0.99, 4, 0.5))
    network = _tabular_network(4 * ACTIONS)
    agent = hyperbolic.make_hyperbolic(network, create_optimizer("sgd", 0.1), gammas=gammas, weights=weights,
                                       target_update_period=1000, update_period=1, epsilon_warmup_steps=0)
    state = agent.init(jax.random.PRNGKey(0), (OBS, 1), ACTIONS)
    state = state.replace(params=_random_params(network, jax.random.PRNGKey(1)),
                          target_params=_random_params(network, jax.random.PRNGKey(2)))
    batch = _batch(np.random.default_rng(0), 16)
    _, metrics = jax.jit(agent.update)(state, batch, jax.random.PRNGKey(3))

    support = np.asarray(network.support(), np.float64)

    def head_output(params, obs):
        out = network.apply(params, jnp.asarray(obs, jnp.float32))
        logits = np.asarray(out.logits, np.float64).reshape(len(obs), 4, ACTIONS, -1)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        return logits, p, (p * support).sum(-1)

    obs = np.asarray(batch.observation)
    next_obs = np.asarray(batch.next_observation)
    logits, _, _ = head_output(state.params, obs)
    _, next_p, next_q = head_output(state.target_params, next_obs)
    reward, discount, action = (np.asarray(x, np.float64) for x in (batch.reward, batch.discount, batch.action))
    per_sample = np.zeros(len(reward))
    for i in range(len(reward)):
        for h, gamma in enumerate(gammas):
            best = int(np.argmax(next_q[i, h]))
            atoms = reward[i] + gamma * (discount[i] > 0) * support
            target = _numpy_projection(atoms, next_p[i, h, best], support)
            chosen = logits[i, h, int(action[i])]
            log_softmax = chosen - chosen.max() - np.log(np.exp(chosen - chosen.max()).sum())
            per_sample[i] += -(target * log_softmax).sum() / len(gammas)
    expected = np.mean(np.asarray(batch.weight) * per_sample)
    np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=2e-5)
    np.testing.assert_allclose(np.asarray(metrics["priorities"]), per_sample + 1e-10, rtol=2e-5)


def test_head_rewards_and_discounts():
    batch = _batch(np.random.default_rng(1), 8)
    gammas = jnp.asarray([0.0, 0.5, 0.9])
    rewards, discounts = hyperbolic.head_rewards_and_discounts(batch, gammas)
    alive = np.asarray(batch.discount) > 0
    np.testing.assert_array_equal(np.asarray(rewards), np.broadcast_to(np.asarray(batch.reward), (3, 8)))
    np.testing.assert_allclose(np.asarray(discounts), np.asarray(gammas)[:, None] * alive[None, :])
    one_r, one_d = hyperbolic.head_rewards_and_discounts(batch, jnp.asarray([0.99]))  # as replay wrote them
    np.testing.assert_array_equal(np.asarray(one_d)[0], np.asarray(batch.discount))
    np.testing.assert_array_equal(np.asarray(one_r)[0], np.asarray(batch.reward))


# ----- one head is C51 ----------------------------------------------------------------------------
@pytest.mark.parametrize("double_dqn", [False, True])
def test_one_head_update_equals_c51(double_dqn):
    """num_gammas = 1 has C51's parameter tree and, on n-step batches (discount gamma^3 or 0),
    the same loss, priorities, parameters and actions as `rainbow.make_rainbow`, update after update."""
    network = _tabular_network(ACTIONS)
    kwargs = dict(double_dqn=double_dqn, target_update_period=2, update_period=1, epsilon_warmup_steps=0)
    optimizer = create_optimizer("adam", 1e-2)
    c51 = rainbow.make_rainbow(network, optimizer, **kwargs)
    hyp = hyperbolic.make_hyperbolic(network, optimizer, gammas=hyperbolic.head_gammas(0.99, 1, 0.01),
                                     weights=[1.0], **kwargs)
    s_c51 = c51.init(jax.random.PRNGKey(0), (OBS, 1), ACTIONS)
    s_hyp = hyp.init(jax.random.PRNGKey(0), (OBS, 1), ACTIONS)
    jax.tree.map(np.testing.assert_array_equal, s_c51.params, s_hyp.params)
    rng = np.random.default_rng(2)
    update_c51, update_hyp = jax.jit(c51.update), jax.jit(hyp.update)
    for step in range(5):
        batch = _batch(rng, 32, horizon_discount=0.99**3)
        key = jax.random.PRNGKey(10 + step)
        s_c51, m_c51 = update_c51(s_c51.replace(env_steps=jnp.int32(step)), batch, key)
        s_hyp, m_hyp = update_hyp(s_hyp.replace(env_steps=jnp.int32(step)), batch, key)
        np.testing.assert_allclose(float(m_hyp["loss"]), float(m_c51["loss"]), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(m_hyp["priorities"]), np.asarray(m_c51["priorities"]), rtol=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), s_c51.params, s_hyp.params)
    obs = jnp.asarray(np.eye(OBS, dtype=np.float32)[..., None])
    for training in (False, True):
        np.testing.assert_array_equal(c51.act(s_c51, obs, jax.random.PRNGKey(5), training),
                                      hyp.act(s_hyp, obs, jax.random.PRNGKey(5), training))


def test_one_head_host_agent_equals_rainbow_agent():
    train.parse_config([], ["ReplayBuffer.capacity = 1000"])
    common = dict(num_actions=ACTIONS, observation_shape=(OBS,), observation_dtype=np.float32, stack_size=1,
                  torso=lambda: networks.MLP(hidden_units=(8,)), min_replay_history=10, vmax=5.0,
                  update_horizon=3, replay_scheme="uniform", seed=3)
    c51 = rainbow.RainbowAgent(gamma=0.95, **common)
    hyp = hyperbolic.HyperbolicAgent(num_gammas=1, gamma_max=0.95, **common)
    assert hyp.replay.gamma == c51.replay.gamma and hyp.replay.update_horizon == 3
    batch = _batch(np.random.default_rng(4), 32, horizon_discount=0.95**3)
    s1, m1 = jax.jit(c51.agent.update)(c51.state, batch, jax.random.PRNGKey(0))
    s2, m2 = jax.jit(hyp.agent.update)(hyp.state, batch, jax.random.PRNGKey(0))
    np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), s1.params, s2.params)


# ----- acting ------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["hyperbolic", "largest_gamma"])
def test_greedy_action_uses_the_riemann_sum_or_the_largest_gamma(policy):
    gammas = hyperbolic.head_gammas(0.99, 5, 0.1)
    weights = hyperbolic.riemann_weights(hyperbolic.integration_points(0.99, 5, 0.1))
    network = _tabular_network(5 * ACTIONS)
    agent = hyperbolic.make_hyperbolic(network, create_optimizer(), gammas=gammas, weights=weights,
                                       acting_policy=policy, epsilon_eval=0.0)
    state = agent.init(jax.random.PRNGKey(0), (OBS, 1), ACTIONS)
    state = state.replace(params=_random_params(network, jax.random.PRNGKey(7)))
    obs = np.eye(OBS, dtype=np.float32)[..., None]
    q = np.asarray(network.apply(state.params, jnp.asarray(obs)).q_values, np.float64).reshape(OBS, 5, ACTIONS)
    values = q[:, -1] if policy == "largest_gamma" else np.einsum("h,sha->sa", weights, q)
    got = np.asarray(agent.act(state, jnp.asarray(obs), jax.random.PRNGKey(1), False))
    np.testing.assert_array_equal(got, values.argmax(-1))
    # the two policies disagree somewhere for these parameters, so the test can tell them apart
    assert (q[:, -1].argmax(-1) != np.einsum("h,sha->sa", weights, q).argmax(-1)).any()


# ----- host agent, errors and configs ----------------------------------------------------------------
def test_agent_refuses_multi_step_returns_with_several_heads_and_bad_policies():
    train.parse_config([], ["ReplayBuffer.capacity = 1000"])
    common = dict(num_actions=3, observation_shape=(OBS,), observation_dtype=np.float32, stack_size=1,
                  torso=lambda: networks.MLP(hidden_units=(8,)))
    with pytest.raises(ValueError, match="update_horizon=1"):
        hyperbolic.HyperbolicAgent(num_gammas=4, update_horizon=3, **common)
    with pytest.raises(ValueError, match="acting_policy"):
        hyperbolic.HyperbolicAgent(acting_policy="softmax", **common)
    with pytest.raises(ValueError, match="dueling"):
        hyperbolic.HyperbolicAgent(dueling=True, **common)
    agent = hyperbolic.HyperbolicAgent(num_gammas=4, gamma_max=0.9, hyperbolic_exponent=0.5, **common)
    assert agent.replay.gamma == pytest.approx(0.9) and agent.replay.update_horizon == 1
    np.testing.assert_allclose(agent.gammas, hyperbolic.head_gammas(0.9, 4, 0.5))


def test_minatar_configs_build_the_agent():
    from accumbens.agents.registry import create_agent

    for gin_file, policy in [("hyperbolic/minatar", "hyperbolic"), ("hyperbolic/minatar_multi_horizon", "largest_gamma")]:
        train.parse_config([gin_file], ["HyperbolicAgent.min_replay_history = 10", "ReplayBuffer.capacity = 1000"])
        agent = create_agent(num_actions=6, observation_shape=(10, 10, 4), observation_dtype=np.uint8)
        assert isinstance(agent, hyperbolic.HyperbolicAgent)
        assert agent.num_gammas == 10 and agent.acting_policy == policy and agent.replay.update_horizon == 1
        assert agent.hyperbolic_exponent == 0.01 and agent.gamma_max == 0.99
        assert not agent._prioritized  # so it runs under the compiled runner too


def test_atari_config_has_the_papers_settings():
    """Checked by its bindings (building the Nature CNN agent is slow on CPU)."""
    import gin

    train.parse_config(["hyperbolic/atari"], [])
    expected = {"num_gammas": 10, "gamma_max": 0.99, "hyperbolic_exponent": 0.01, "integral_estimate": "lower",
                "acting_policy": "hyperbolic", "num_atoms": 51, "vmax": 10.0, "update_horizon": 1,
                "replay_scheme": "uniform", "target_update_period": 8000}
    for name, value in expected.items():
        assert gin.query_parameter(f"HyperbolicAgent.{name}") == value, name
    assert gin.query_parameter("create_agent.agent_name") == "hyperbolic"
    assert gin.query_parameter("create_optimizer.learning_rate") == 0.00025


# ----- learning: Pathworld -------------------------------------------------------------------------
def test_riemann_sum_of_learned_heads_approaches_hyperbolic_values_on_pathworld():
    """Tabular C51 heads trained by the agent's own `update` on every hazard-free Pathworld
    transition: each head learns r gamma_h^d, and the Riemann sum of the learned start-state
    Q-values matches r / (1 + k d), the expected return under the exponential hazard prior, to
    within the grid's truncation error (closed form, stated below) plus 0.01 of learning error;
    an exponential agent with one gamma (the best gamma on a fine grid) misses by far more."""
    k, gamma_max, num_gammas = 0.5, 0.99, 50
    delays, rewards = (1, 2, 4, 8), (1.0, 1.6, 2.6, 4.0)
    env = pathworld.PathworldEnv(delays=delays, rewards=rewards, hazard_prior="none")
    truth = pathworld.hyperbolic_values(delays, rewards, k)  # 0.667, 0.8, 0.867, 0.8
    d = np.asarray(delays, np.float64)
    truncation = np.asarray(rewards) * (hyperbolic.riemann_discount(d, gamma_max, num_gammas, k) - 1.0 / (1.0 + k * d))
    # The grid's truncation error: -0.030, -0.032, -0.035, -0.034 (about 4% of the true values);
    # the best single exponential discount misses by 0.199.
    assert np.max(np.abs(truncation)) < 0.036

    gammas = hyperbolic.head_gammas(gamma_max, num_gammas, k)
    weights = hyperbolic.riemann_weights(hyperbolic.integration_points(gamma_max, num_gammas, k))
    num_actions = len(delays)
    torso = networks.MLP(hidden_units=(), observation_ndim=1)  # one-hot input, no hidden layer: a table
    network = networks.RainbowNetwork(torso=torso, num_actions=num_gammas * num_actions, num_atoms=21, vmax=4.5, vmin=0.0)
    agent = hyperbolic.make_hyperbolic(network, create_optimizer("adam", 0.05, eps=1e-8), gammas=gammas,
                                       weights=weights, target_update_period=5, update_period=1)
    batch = env.all_transitions(stack_size=1)
    state = agent.init(jax.random.PRNGKey(0), batch.observation.shape[1:], num_actions)

    def step(state, i):
        state, metrics = agent.update(state.replace(env_steps=i), batch, jax.random.PRNGKey(0))
        return state, metrics["loss"]

    state, _ = jax.jit(lambda s: jax.lax.scan(step, s, jnp.arange(600, dtype=jnp.int32)))(state)
    start = jnp.asarray(env.observation_of(0)[None, ..., None])
    q = np.asarray(network.apply(state.params, start).q_values, np.float64).reshape(num_gammas, num_actions)
    exact_heads = np.asarray(rewards) * gammas[:, None] ** d[None, :]
    assert np.max(np.abs(q - exact_heads)) < 0.03  # every head learned its own discounted value
    estimate = weights @ q
    assert np.max(np.abs(estimate - (truth + truncation))) < 0.01  # learning error of the sum
    assert np.max(np.abs(estimate - truth)) <= np.max(np.abs(truncation)) + 0.01
    best_single = min(np.max(np.abs(pathworld.exponential_values(delays, rewards, g) - truth)) for g in np.linspace(0.5, 1.0, 501))
    assert best_single > 0.19 and best_single > 4 * np.max(np.abs(estimate - truth))


# ----- both runners on MinAtar ----------------------------------------------------------------------
_TINY = ["Runner.num_iterations = 1", "Runner.training_steps = 300", "Runner.evaluation_steps = 100",
         "Runner.max_steps_per_episode = 500", "HyperbolicAgent.min_replay_history = 100", "ReplayBuffer.capacity = 5000"]


@pytest.mark.slow
@pytest.mark.parametrize("gin_file", ["hyperbolic/minatar", "hyperbolic/minatar_multi_horizon"])
def test_minatar_configs_run_on_the_host_and_compiled_runners(tmp_path, make_runner, gin_file):
    """One tiny iteration of each MinAtar config on the host runner and on the compiled runner
    (gymnax MinAtar, two seeds vmapped): updates happen and the loss is finite (minutes on CPU)."""
    from accumbens.runners.compiled import CompiledRunner

    record = make_runner(gin_file, _TINY).run_experiment()[0]
    assert record["update_steps"] > 0 and np.isfinite(record["loss"])
    train.parse_config([gin_file], _TINY)
    runner = CompiledRunner(str(tmp_path / "compiled"), num_seeds=2, tensorboard=False)
    records = runner.run_experiment()[0]
    assert len(records) == 2
    assert all(r["update_steps"] > 0 and np.isfinite(r["loss"]) for r in records)
