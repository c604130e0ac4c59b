"""Deep FDPO agents on synthetic batches: targets against NumPy references, losses against a
hand-assembled computation, and short offline learning on a fixed bandit-like dataset."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from accumbens.agents import networks, pessimistic, tabular_fdpo
from accumbens.agents.base import Batch


def test_proximal_policy_matches_tabular_reference():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(200, 5))
    behaviour = rng.dirichlet(np.ones(5), size=200)
    for alpha in (0.0, 0.25, 1.0, 100.0):
        ours = np.asarray(pessimistic.proximal_policy(jnp.asarray(q), jnp.asarray(behaviour), alpha))
        np.testing.assert_allclose(ours, tabular_fdpo.proximal_improvement(q, behaviour, alpha), atol=1e-6)
    np.testing.assert_allclose(ours, behaviour, atol=1e-6)  # alpha = 100: pure imitation


def test_proximal_value_and_penalised_q_match_numpy():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(50, 4)).astype(np.float32)
    behaviour = rng.dirichlet(np.ones(4), size=50).astype(np.float32)
    policy = tabular_fdpo.proximal_improvement(q.astype(np.float64), behaviour.astype(np.float64), 0.25)
    expected = (policy * q).sum(-1) - 0.25 * np.maximum(policy - behaviour, 0).sum(-1)
    np.testing.assert_allclose(pessimistic.proximal_value(q, behaviour, 0.25), expected, rtol=1e-5, atol=1e-6)
    heads = rng.normal(size=(50, 5, 4))
    np.testing.assert_allclose(
        pessimistic.penalised_q(jnp.asarray(heads), 1.5), heads.mean(1) - 1.5 * heads.std(1), rtol=1e-5, atol=1e-6
    )


NUM_ACTIONS = 3
OBS_SHAPE = (4, 1)  # [features, stack]


def make_agent(algorithm, learning_rate=1e-2, **kwargs):
    torso = lambda: networks.MLP(hidden_units=(32,), observation_ndim=1)  # noqa: E731
    network = pessimistic.PessimisticNetwork(
        torso=torso(),
        num_actions=NUM_ACTIONS,
        num_heads=5 if algorithm == "uncertainty" else 1,
        policy_torso=torso() if algorithm in ("imitation", "proximal") else None,
    )
    agent = pessimistic.make_pessimistic(network, optax.adam(learning_rate), algorithm=algorithm, **kwargs)
    return network, agent


def random_batch(rng, size=16):
    return Batch(
        observation=rng.normal(size=(size,) + OBS_SHAPE).astype(np.float32),
        action=rng.integers(0, NUM_ACTIONS, size).astype(np.int32),
        reward=rng.normal(size=size).astype(np.float32),
        next_observation=rng.normal(size=(size,) + OBS_SHAPE).astype(np.float32),
        discount=(0.99 * (rng.uniform(size=size) > 0.2)).astype(np.float32),
        weight=np.ones(size, np.float32),
        index=np.arange(size),
    )


def huber(x, delta):
    x = np.abs(x)
    return np.where(x <= delta, 0.5 * x**2, delta * (x - 0.5 * delta))


@pytest.mark.parametrize("algorithm", pessimistic.ALGORITHMS)
def test_first_update_loss_matches_numpy(algorithm):
    """The loss of update 0 (target = online) recomputed in float64 NumPy from the network outputs."""
    network, agent = make_agent(algorithm, proximal_alpha=0.25, uncertainty_beta=1.0, huber_delta=5.0)
    state = agent.init(jax.random.PRNGKey(0), OBS_SHAPE, NUM_ACTIONS)
    batch = random_batch(np.random.default_rng(2))
    out = jax.tree.map(lambda x: np.asarray(x, np.float64), network.apply(state.params, batch.observation))
    nxt = jax.tree.map(lambda x: np.asarray(x, np.float64), network.apply(state.params, batch.next_observation))
    log_pi = out.policy_logits - np.log(np.exp(out.policy_logits).sum(-1, keepdims=True))
    bc = -log_pi[np.arange(16), batch.action]
    if algorithm == "imitation":
        expected = bc.mean()
    else:
        if algorithm == "naive":
            bootstrap = nxt.q[:, 0].max(-1)
        elif algorithm == "uncertainty":
            bootstrap = (nxt.q.mean(1) - nxt.q.std(1)).max(-1)
        else:
            behaviour = np.exp(nxt.policy_logits) / np.exp(nxt.policy_logits).sum(-1, keepdims=True)
            pi = tabular_fdpo.proximal_improvement(nxt.q[:, 0], behaviour, 0.25)
            bootstrap = (pi * nxt.q[:, 0]).sum(-1) - 0.25 * np.maximum(pi - behaviour, 0).sum(-1)
        target = batch.reward + batch.discount * bootstrap
        chosen = out.q[np.arange(16), :, batch.action]  # [B, K]
        td = huber(target[:, None] - chosen, 5.0).mean(-1)
        expected = (td + (bc if algorithm == "proximal" else 0.0)).mean()
    new_state, metrics = jax.jit(agent.update)(state, batch, jax.random.PRNGKey(1))
    assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-4)
    assert int(new_state.update_steps) == 1


def test_target_syncs_every_period_of_updates():
    _, agent = make_agent("naive", target_update_period=3)
    state = agent.init(jax.random.PRNGKey(0), OBS_SHAPE, NUM_ACTIONS)
    batch = random_batch(np.random.default_rng(3))
    update = jax.jit(agent.update)
    leaf = lambda tree: np.asarray(jax.tree.leaves(tree)[0])  # noqa: E731
    params_before = []
    for _ in range(7):
        params_before.append(leaf(state.params))
        state, _ = update(state, batch, jax.random.PRNGKey(0))
    # Update 6 synced to the parameters it started from (those after update 5).
    np.testing.assert_array_equal(leaf(state.target_params), params_before[6])
    assert not np.array_equal(leaf(state.target_params), leaf(state.params))


def bandit_dataset(rng, size=256):
    """One-step episodes from 4 contexts; reward 1 for action (context % 2), 0 otherwise.

    The behaviour policy takes the rewarding action 70% of the time, action 2 never (20%/... rest
    on the other action), so action 2 is out of the data everywhere."""
    context = rng.integers(0, 4, size)
    observation = np.eye(4, dtype=np.float32)[context][..., None]
    good = context % 2
    action = np.where(rng.uniform(size=size) < 0.7, good, 1 - good).astype(np.int32)
    return Batch(
        observation=observation,
        action=action,
        reward=(action == good).astype(np.float32),
        next_observation=observation,
        discount=np.zeros(size, np.float32),
        weight=np.ones(size, np.float32),
        index=np.arange(size),
    )


def train(algorithm, steps=300, **kwargs):
    network, agent = make_agent(algorithm, target_update_period=50, **kwargs)
    state = agent.init(jax.random.PRNGKey(0), OBS_SHAPE, NUM_ACTIONS)
    batch = bandit_dataset(np.random.default_rng(4))

    @jax.jit
    def run(state):
        return jax.lax.fori_loop(0, steps, lambda i, s: agent.update(s, batch, jax.random.PRNGKey(i))[0], state)

    state = run(state)
    contexts = np.eye(4, dtype=np.float32)[:, :, None]
    return network, agent, state, contexts


def test_offline_learning_on_a_fixed_dataset():
    good = np.arange(4) % 2
    # Naive: Q of the two seen actions converges to their mean rewards.
    network, _, state, contexts = train("naive")
    q = np.asarray(network.apply(state.params, contexts).q[:, 0])
    np.testing.assert_allclose(q[np.arange(4), good], 1.0, atol=0.1)
    np.testing.assert_allclose(q[np.arange(4), 1 - good], 0.0, atol=0.1)
    # Imitation: the cloned policy matches the dataset's empirical policy (behaviour 0.7 / 0.3 / 0).
    data = bandit_dataset(np.random.default_rng(4))
    context = data.observation[:, :, 0].argmax(-1)
    empirical = [np.mean(data.action[context == c] == c % 2) for c in range(4)]
    network, agent, state, contexts = train("imitation")
    probs = np.asarray(jax.nn.softmax(network.apply(state.params, contexts).policy_logits))
    np.testing.assert_allclose(probs[np.arange(4), good], empirical, atol=0.03)
    assert probs[:, 2].max() < 0.05
    # Proximal: all mass moves to the rewarding action (gap 1 > alpha), none to the unseen one.
    network, agent, state, contexts = train("proximal")
    out = network.apply(state.params, contexts)
    policy = np.asarray(pessimistic.proximal_policy(out.q[:, 0], jax.nn.softmax(out.policy_logits), 0.25))
    np.testing.assert_allclose(policy[np.arange(4), good], 1.0, atol=0.02)
    actions = jax.vmap(lambda k: agent.act(state, contexts, k, False))(jax.random.split(jax.random.PRNGKey(0), 50))
    assert np.mean(np.asarray(actions) == good) > 0.95
    # Uncertainty: the ensemble disagrees more on the unseen action than on the seen ones.
    network, agent, state, contexts = train("uncertainty")
    heads = np.asarray(network.apply(state.params, contexts).q)  # [4, K, A]
    spread = heads.std(1)
    assert spread[:, 2].min() > 2 * spread[:, :2].max()
    np.testing.assert_array_equal(np.asarray(agent.act(state, contexts, jax.random.PRNGKey(0), False)), good)


def test_agents_vmap_over_seeds():
    """The compiled runner vmaps init/act/update over seeds: each must be traceable that way."""
    for algorithm in ("proximal", "uncertainty"):  # the two with extra networks or heads
        _, agent = make_agent(algorithm)
        keys = jax.random.split(jax.random.PRNGKey(0), 2)
        batch = random_batch(np.random.default_rng(5))

        @jax.jit
        def step(keys, batch):
            states = jax.vmap(lambda k: agent.init(k, OBS_SHAPE, NUM_ACTIONS))(keys)
            states, metrics = jax.vmap(agent.update, in_axes=(0, None, 0))(states, batch, keys)
            actions = jax.vmap(lambda s, k: agent.act(s, batch.observation[0], k, False))(states, keys)
            return actions, metrics["loss"]

        actions, loss = step(keys, batch)
        assert actions.shape == (2,) and loss.shape == (2,) and np.all(np.isfinite(loss))


def test_bad_configuration_raises():
    torso = networks.MLP(hidden_units=(8,))
    with pytest.raises(ValueError, match="unknown FDPO algorithm"):
        pessimistic.make_pessimistic(pessimistic.PessimisticNetwork(torso, 3), optax.adam(1e-3), algorithm="cql")
    with pytest.raises(ValueError, match="policy_torso"):
        pessimistic.make_pessimistic(pessimistic.PessimisticNetwork(torso, 3), optax.adam(1e-3), algorithm="proximal")
    with pytest.raises(ValueError, match="num_heads"):
        pessimistic.make_pessimistic(pessimistic.PessimisticNetwork(torso, 3), optax.adam(1e-3), algorithm="uncertainty")


def test_host_agent_builds_and_steps():
    import gin

    gin.clear_config()
    gin.bind_parameter("ReplayBuffer.capacity", 100)
    try:
        agent = pessimistic.PessimisticAgent(
            NUM_ACTIONS, (4,), np.float32, algorithm="proximal",
            torso=lambda: networks.MLP(hidden_units=(8,)), batch_size=4,
        )
    finally:
        gin.clear_config()
    action = agent.begin_episode(np.zeros(4, np.float32))
    assert 0 <= action < NUM_ACTIONS
    for _ in range(6):
        action = agent.step(1.0, np.ones(4, np.float32))
    assert agent.pop_training_metrics()["update_steps"] > 0


@pytest.fixture(scope="module")
def minatar_dataset(tmp_path_factory):
    """400 uniform-random steps of MinAtar Breakout as an accumbens dataset."""
    from accumbens.environments import create_environment
    from accumbens.replay.dataset import DatasetWriter

    directory = str(tmp_path_factory.mktemp("data") / "breakout_random")
    env = create_environment("minatar:breakout")
    rng = np.random.default_rng(0)
    observation, _ = env.reset(seed=0)
    num_actions = int(env.action_space.n)
    with DatasetWriter(directory, observation.shape, observation.dtype, num_actions) as writer:
        for step in range(400):
            action = int(rng.integers(num_actions))
            next_observation, reward, terminated, truncated, _ = env.step(action)
            truncated = (truncated or step == 399) and not terminated
            ended = terminated or truncated
            writer.add(observation, action, reward, terminated, truncated,
                       final_observation=next_observation if ended else None,
                       behaviour_probability=1 / num_actions, epsilon=1.0)
            observation = env.reset()[0] if ended else next_observation
    return directory


@pytest.mark.parametrize("algorithm", [
    "proximal",
    pytest.param("naive", marks=pytest.mark.slow),
    pytest.param("imitation", marks=pytest.mark.slow),
    pytest.param("uncertainty", marks=pytest.mark.slow),
])
def test_gin_config_runs_an_offline_iteration(tmp_path, minatar_dataset, algorithm):
    from accumbens import train
    from accumbens.runners.offline import OfflineRunner

    train.parse_config([f"pessimistic/{algorithm}_minatar"], [
        f"OfflineRunner.dataset_dir = '{minatar_dataset}'",
        "OfflineRunner.num_iterations = 1",
        "OfflineRunner.training_steps = 20",
        "OfflineRunner.evaluation_steps = 30",
        "PessimisticAgent.batch_size = 8",
        "MinAtarCNN.hidden_units = (16,)",
    ])
    runner = OfflineRunner(base_dir=str(tmp_path), tensorboard=False, progress_bar=False)
    assert runner.agent.algorithm == algorithm
    records = runner.run_experiment()
    assert records[0]["update_steps"] == 20 and np.isfinite(records[0]["loss"])
    assert records[0]["eval_steps"] >= 30
    assert int(runner.agent.state.update_steps) == 20
