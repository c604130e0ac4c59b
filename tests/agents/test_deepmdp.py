"""DeepMDP: losses on hand-computed cases, the gradient penalty's value and gradients in closed form
and by finite differences, flag off == C51 / DQN bitwise, the models' shapes, configs on both runners."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from accumbens.agents import deepmdp, dqn, networks, rainbow
from accumbens.replay.batch import Batch


# ----- losses on hand-computed cases -----------------------------------------------------------
def test_reward_loss_hand_computed():
    predicted = jnp.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]])
    action = jnp.array([2, 1])
    reward = jnp.array([1.0, 1.0])
    # chosen: 3 and -1 -> errors 2 and -2 -> mean of squares 4
    np.testing.assert_allclose(deepmdp.reward_loss(predicted, action, reward), 4.0, rtol=1e-6)


def test_transition_loss_hand_computed():
    predicted = jnp.array(
        [
            [[0.0, 0.0], [3.0, 4.0]],  # sample 0, actions 0 and 1
            [[1.0, 1.0], [9.0, 9.0]],  # sample 1
        ]
    )
    action = jnp.array([1, 0])
    next_latent = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    # sample 0: ||(3, 4)|| = 5; sample 1: exact prediction, 0
    np.testing.assert_allclose(deepmdp.transition_loss(predicted, action, next_latent, "l2"), 2.5, rtol=1e-6)
    np.testing.assert_allclose(deepmdp.transition_loss(predicted, action, next_latent, "squared_l2"), 12.5, rtol=1e-6)
    # The Euclidean form has a finite gradient where a prediction is exact.
    grad = jax.grad(lambda p: deepmdp.transition_loss(p, action, next_latent, "l2"))(predicted)
    assert np.isfinite(np.asarray(grad)).all()
    np.testing.assert_allclose(grad[0, 1], np.array([3.0, 4.0]) / 5.0 / 2.0, rtol=1e-6)
    np.testing.assert_allclose(grad[1], 0.0)
    with pytest.raises(ValueError, match="transition distance"):
        deepmdp.transition_loss(predicted, action, next_latent, "l1")


# ----- gradient penalty ------------------------------------------------------------------------
def _linear_case(seed=0, batch=5, d=4, m=3, scale=1.0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, m)) * scale
    b = rng.normal(size=m)
    x = rng.normal(size=(batch, d))
    v = rng.normal(size=(batch, m))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return w, b, x, v


@pytest.mark.parametrize("penalty_type", ["one_sided", "two_sided"])
@pytest.mark.parametrize("scale", [0.2, 1.5])
def test_gradient_penalty_of_a_linear_model_matches_closed_form(penalty_type, scale):
    """f(x) = x W + b: d/dx <f(x_i), v_i> = W v_i, so the penalty is mean_i h(||W v_i||) and its
    gradient in W is mean_i h'(n_i) x (W v_i / n_i) v_i^T, with h' = 2 (n - 1) (clipped at 0 if one-sided)."""
    w, b, x, v = _linear_case(scale=scale)
    g = w @ v.T  # [d, B]: per-sample gradients as columns
    n = np.linalg.norm(g, axis=0)
    excess = n - 1.0
    if penalty_type == "one_sided":
        excess = np.maximum(excess, 0.0)
    want_value = np.mean(excess**2)
    want_grad = np.zeros_like(w)
    for i in range(x.shape[0]):
        want_grad += 2.0 * excess[i] * np.outer(g[:, i] / n[i], v[i]) / x.shape[0]

    def penalty(w_):
        return deepmdp.gradient_penalty(lambda z: z @ w_ + b, jnp.asarray(x, jnp.float32), jnp.asarray(v, jnp.float32), penalty_type)

    value, grad = jax.value_and_grad(penalty)(jnp.asarray(w, jnp.float32))
    np.testing.assert_allclose(value, want_value, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-6)
    if penalty_type == "one_sided" and scale < 0.5:
        assert want_value == 0.0  # a contraction pays nothing one-sided


def test_gradient_penalty_gradients_match_finite_differences_for_an_mlp():
    """A ReLU-free (tanh) two-layer model: the double-backprop gradient in the parameters agrees
    with central differences in float64."""
    jax.config.update("jax_enable_x64", True)
    try:
        rng = np.random.default_rng(3)
        w1, w2 = rng.normal(size=(4, 6)), rng.normal(size=(6, 3)) * 0.8
        x, v = rng.normal(size=(7, 4)), rng.normal(size=(7, 3))

        def penalty(params):
            a, c = params
            return deepmdp.gradient_penalty(lambda z: jnp.tanh(z @ a) @ c, jnp.asarray(x), jnp.asarray(v), "two_sided")

        params = (jnp.asarray(w1), jnp.asarray(w2))
        grads = jax.grad(penalty)(params)
        eps = 1e-6
        for k, p in enumerate(params):
            for idx in [(0, 0), (1, 2), (3, 1)]:
                plus = [q for q in params]
                minus = [q for q in params]
                plus[k] = p.at[idx].add(eps)
                minus[k] = p.at[idx].add(-eps)
                numeric = (penalty(tuple(plus)) - penalty(tuple(minus))) / (2 * eps)
                np.testing.assert_allclose(grads[k][idx], numeric, rtol=1e-5, atol=1e-8)
    finally:
        jax.config.update("jax_enable_x64", False)


# ----- models ---------------------------------------------------------------------------------
def test_conv_transition_model_predicts_per_action_grids_in_the_torsos_flattening():
    """Output [B, A, H*W*C]; action a's prediction is the a-th C-channel group of the last conv,
    flattened row major as the torso flattens its grid."""
    model = deepmdp.TransitionModel(num_actions=3, kind="conv", hidden_units=(), latent_shape=(4, 5, 2))
    latent = jax.random.normal(jax.random.PRNGKey(0), (6, 40))
    params = model.init(jax.random.PRNGKey(1), latent)
    out = model.apply(params, latent)
    assert out.shape == (6, 3, 40)
    conv = nn.Conv(6, (3, 3), padding="SAME")
    grid = conv.apply({"params": params["params"]["Conv_0"]}, latent.reshape(6, 4, 5, 2))  # [6, 4, 5, 2*3]
    for a in range(3):
        want = grid.reshape(6, 4, 5, 2, 3)[..., a].reshape(6, 40)
        np.testing.assert_allclose(out[:, a], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="latent_shape"):
        deepmdp.TransitionModel(num_actions=3, kind="conv", latent_shape=(4, 4, 2)).init(jax.random.PRNGKey(0), latent)
    dense = deepmdp.TransitionModel(num_actions=3, kind="dense", hidden_units=(8,))
    assert dense.apply(dense.init(jax.random.PRNGKey(0), latent), latent).shape == (6, 3, 40)


# ----- the auxiliary flag off is exactly the base agent ---------------------------------------
OBS = (6, 6, 2, 1)  # MinAtar-like frames, stack 1
NUM_ACTIONS = 3


def _batch(seed=0, size=8):
    rng = np.random.default_rng(seed)
    return Batch(
        observation=rng.integers(0, 2, (size,) + OBS).astype(np.uint8),
        action=rng.integers(0, NUM_ACTIONS, size).astype(np.int32),
        reward=rng.normal(size=size).astype(np.float32),
        next_observation=rng.integers(0, 2, (size,) + OBS).astype(np.uint8),
        discount=(0.99 * (rng.random(size) > 0.2)).astype(np.float32),
        weight=np.ones(size, np.float32),
        index=np.arange(size),
    )


def _torso():
    return networks.MinAtarCNN(features=4, hidden_units=(), padding="SAME")


def _c51_pieces(noisy=False, double_dqn=False, sgd=False):
    network = networks.RainbowNetwork(torso=_torso(), num_actions=NUM_ACTIONS, num_atoms=11, vmax=5.0, noisy=noisy, dueling=noisy)
    optimizer = dqn.create_optimizer("sgd" if sgd else "adam", learning_rate=1e-2 if sgd else 1e-3)
    kwargs = dict(target_update_period=4, update_period=1, epsilon_warmup_steps=0)
    base = rainbow.make_rainbow(network, optimizer, double_dqn=double_dqn, **kwargs)
    return network, optimizer, base, deepmdp.c51_value_loss(network, double_dqn)


def _run_updates(agent, state, steps=3):
    update = jax.jit(agent.update)
    metrics = []
    for i in range(steps):
        state = state.replace(env_steps=jnp.asarray(i, jnp.int32))
        state, m = update(state, _batch(i), jax.random.PRNGKey(100 + i))
        metrics.append(m)
    return state, metrics


@pytest.mark.parametrize("noisy,double_dqn", [(False, False), (True, True)])
def test_flag_off_is_c51_bitwise(noisy, double_dqn):
    network, optimizer, base, value = _c51_pieces(noisy, double_dqn)
    agent = deepmdp.make_deepmdp(
        network, base, value, optimizer, num_actions=NUM_ACTIONS, auxiliary_losses=False, target_update_period=4, update_period=1
    )
    key = jax.random.PRNGKey(7)
    ours, theirs = agent.init(key, OBS, NUM_ACTIONS), base.init(key, OBS, NUM_ACTIONS)
    assert set(ours.params) == {"network"}
    ours, our_metrics = _run_updates(agent, ours)
    theirs, their_metrics = _run_updates(base, theirs)
    for a, b in zip(jax.tree.leaves(ours.params["network"]), jax.tree.leaves(theirs.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(ours.target_params["network"]), jax.tree.leaves(theirs.target_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for m1, m2 in zip(our_metrics, their_metrics):
        for key_ in ("loss", "q_mean", "priorities"):
            np.testing.assert_array_equal(np.asarray(m1[key_]), np.asarray(m2[key_]))
    obs = _batch(9).observation
    for training in (True, False):
        np.testing.assert_array_equal(
            agent.act(ours, obs, jax.random.PRNGKey(1), training), base.act(theirs, obs, jax.random.PRNGKey(1), training)
        )


def test_flag_off_is_dqn_bitwise():
    network = networks.QNetwork(torso=_torso(), num_actions=NUM_ACTIONS)
    optimizer = dqn.create_optimizer("adam", learning_rate=1e-3)
    base = dqn.make_dqn(network, optimizer, double_dqn=True, loss_type="huber", target_update_period=4, update_period=1)
    value = deepmdp.dqn_value_loss(network, True, "huber")
    agent = deepmdp.make_deepmdp(network, base, value, optimizer, num_actions=NUM_ACTIONS, auxiliary_losses=False, target_update_period=4, update_period=1)
    key = jax.random.PRNGKey(3)
    ours, our_metrics = _run_updates(agent, agent.init(key, OBS, NUM_ACTIONS))
    theirs, their_metrics = _run_updates(base, base.init(key, OBS, NUM_ACTIONS))
    for a, b in zip(jax.tree.leaves(ours.params["network"]), jax.tree.leaves(theirs.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for m1, m2 in zip(our_metrics, their_metrics):
        np.testing.assert_array_equal(np.asarray(m1["loss"]), np.asarray(m2["loss"]))
        np.testing.assert_array_equal(np.asarray(m1["priorities"]), np.asarray(m2["priorities"]))


# ----- the losses with the flag on ---------------------------------------------------------------
def _deepmdp_agent(sgd=False, **kwargs):
    network, optimizer, base, value = _c51_pieces(sgd=sgd)
    models = dict(
        reward_model=deepmdp.RewardModel(NUM_ACTIONS),
        transition_model=deepmdp.TransitionModel(NUM_ACTIONS, kind="conv", hidden_units=(4,), latent_shape=(6, 6, 4)),
    )
    return deepmdp.make_deepmdp(
        network, base, value, optimizer, num_actions=NUM_ACTIONS, target_update_period=4, update_period=1, **models, **kwargs
    ), base


def test_flag_on_total_is_the_weighted_sum_and_reports_each_term():
    agent, _ = _deepmdp_agent(reward_loss_weight=0.5, transition_loss_weight=2.0, gradient_penalty_weight=3.0)
    state = agent.init(jax.random.PRNGKey(0), OBS, NUM_ACTIONS)
    assert set(state.params) == {"network", "reward_model", "transition_model"}
    _, m = jax.jit(agent.update)(state, _batch(), jax.random.PRNGKey(1))
    want = m["value_loss"] + 0.5 * m["reward_loss"] + 2.0 * m["transition_loss"] + 3.0 * m["gradient_penalty"]
    np.testing.assert_allclose(m["loss"], want, rtol=1e-5)
    assert all(np.isfinite(float(m[k])) for k in ("reward_loss", "transition_loss", "gradient_penalty"))


def test_auxiliary_losses_alone_train_the_torso_and_models_but_not_the_value_head():
    agent, _ = _deepmdp_agent(value_loss_weight=0.0)
    state = agent.init(jax.random.PRNGKey(0), OBS, NUM_ACTIONS)
    new, _ = jax.jit(agent.update)(state, _batch(), jax.random.PRNGKey(1))
    head_before = state.params["network"]["params"]["logits"]
    head_after = new.params["network"]["params"]["logits"]
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), head_before, head_after)
    changed = lambda a, b: not np.array_equal(np.asarray(a), np.asarray(b))  # noqa: E731
    for name in ("reward_model", "transition_model"):
        assert any(jax.tree.leaves(jax.tree.map(changed, state.params[name], new.params[name])))
    assert any(jax.tree.leaves(jax.tree.map(changed, state.params["network"]["params"]["torso"], new.params["network"]["params"]["torso"])))


def test_stop_gradient_target_removes_only_the_gradient_through_phi_s_prime():
    """Transition loss alone, one SGD step: 'online' and 'online_stop_gradient' give the same
    loss and the same transition-model step, but different torso steps (the gradient through
    phi(s'))."""
    steps = {}
    for target in ("online", "online_stop_gradient"):
        agent, _ = _deepmdp_agent(
            transition_target=target, reward_loss_weight=0.0, gradient_penalty_weight=0.0, value_loss_weight=0.0, sgd=True
        )
        state = agent.init(jax.random.PRNGKey(0), OBS, NUM_ACTIONS)
        new, m = jax.jit(agent.update)(state, _batch(), jax.random.PRNGKey(1))
        delta = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), new.params, state.params)
        steps[target] = (float(m["transition_loss"]), delta)
    (loss_a, da), (loss_b, db) = steps["online"], steps["online_stop_gradient"]
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    for a, b in zip(jax.tree.leaves(da["transition_model"]), jax.tree.leaves(db["transition_model"])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
    torso_a = np.concatenate([x.ravel() for x in jax.tree.leaves(da["network"]["params"]["torso"])])
    torso_b = np.concatenate([x.ravel() for x in jax.tree.leaves(db["network"]["params"]["torso"])])
    assert np.abs(torso_a).max() > 0 and np.abs(torso_b).max() > 0
    assert np.abs(torso_a - torso_b).max() > 1e-3 * np.abs(torso_b).max()


def test_host_agent_refuses_n_step_returns_with_the_losses(tmp_path):
    from accumbens import train

    train.parse_config(["deepmdp/minatar"], ["ReplayBuffer.capacity = 1000"])
    with pytest.raises(ValueError, match="update_horizon"):
        deepmdp.DeepMDPAgent(NUM_ACTIONS, (10, 10, 4), np.uint8, update_horizon=3)
    with pytest.raises(ValueError, match="base_agent"):
        deepmdp.DeepMDPAgent(NUM_ACTIONS, (10, 10, 4), np.uint8, base_agent="ppo")


# ----- the packaged configs run on both runners -------------------------------------------------
_TINY = [
    "Runner.num_iterations = 1",
    "Runner.training_steps = 200",
    "Runner.evaluation_steps = 50",
    "DeepMDPAgent.min_replay_history = 100",
    "ReplayBuffer.capacity = 1000",
]


@pytest.mark.slow  # ~100 s each under this machine's load (compilation)
@pytest.mark.parametrize("auxiliary", [True, False])
def test_minatar_config_runs_on_the_host_runner(make_runner, auxiliary):
    runner = make_runner("deepmdp/minatar", _TINY + [f"DeepMDPAgent.auxiliary_losses = {auxiliary}"])
    record = runner.run_experiment()[0]
    assert record["update_steps"] > 0 and np.isfinite(record["loss"])


@pytest.mark.slow  # ~340 s under this machine's load (compilation of the whole loop)
def test_minatar_config_runs_on_the_compiled_runner(tmp_path):
    from accumbens import train
    from accumbens.runners.compiled import CompiledRunner

    train.parse_config(["deepmdp/minatar"], _TINY)
    runner = CompiledRunner(str(tmp_path), num_seeds=2, tensorboard=False)
    records = runner.run_experiment()[0]
    assert all(r["update_steps"] > 0 for r in records)
    assert all(np.isfinite(r["loss"]) for r in records)


def test_atari_config_builds_the_paper_latent():
    from accumbens import train
    from accumbens.agents.registry import create_agent

    train.parse_config(["deepmdp/atari"], ["ReplayBuffer.capacity = 100"])
    agent = create_agent(num_actions=4, observation_shape=(84, 84), observation_dtype=np.uint8)
    model = agent.state.params["transition_model"]["params"]
    assert model["Conv_1"]["kernel"].shape == (3, 3, 64, 64 * 4)  # per-action 11x11x64 grids
