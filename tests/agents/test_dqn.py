"""DQN's pure core: one update against a float64 NumPy computation, target syncs, acting."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from accumbens.agents import dqn, networks
from accumbens.replay.batch import Batch


class LinearQ(nn.Module):
    """Q(s) = s W + b: simple enough to recompute by hand in NumPy."""

    num_actions: int = 3

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.num_actions)(x.reshape(x.shape[:-2] + (-1,)))


def _batch(rng, n=16, obs_dim=4):
    return Batch(
        observation=rng.normal(size=(n, obs_dim, 1)).astype(np.float32),
        action=rng.integers(0, 3, size=n).astype(np.int32),
        reward=rng.normal(size=n).astype(np.float32),
        next_observation=rng.normal(size=(n, obs_dim, 1)).astype(np.float32),
        discount=rng.choice([0.0, 0.99], size=n).astype(np.float32),
        weight=rng.uniform(0.5, 1.0, size=n).astype(np.float32),
        index=np.arange(n),
    )


def _numpy_loss(params, target_params, batch, double, loss_type):
    def q(p, x):
        k = np.asarray(p["params"]["Dense_0"]["kernel"], np.float64)
        b = np.asarray(p["params"]["Dense_0"]["bias"], np.float64)
        return x.reshape(len(x), -1).astype(np.float64) @ k + b

    q_now = q(params, batch.observation)[np.arange(len(batch.action)), batch.action]
    q_next_target = q(target_params, batch.next_observation)
    if double:
        best = q(params, batch.next_observation).argmax(axis=1)
    else:
        best = q_next_target.argmax(axis=1)
    target = batch.reward + batch.discount * q_next_target[np.arange(len(best)), best]
    err = target - q_now
    per = 0.5 * err**2 if loss_type == "mse" else np.where(np.abs(err) <= 1, 0.5 * err**2, np.abs(err) - 0.5)
    return np.mean(batch.weight * per)


@pytest.mark.parametrize("double", [False, True])
@pytest.mark.parametrize("loss_type", ["mse", "huber"])
def test_update_loss_matches_numpy_and_sgd_step(double, loss_type):
    rng = np.random.default_rng(1)
    agent = dqn.make_dqn(LinearQ(), optax.sgd(0.1), double_dqn=double, loss_type=loss_type, target_update_period=1000, update_period=1)
    state = agent.init(jax.random.PRNGKey(0), (4, 1), 3)
    # Make target and online differ so that double DQN matters.
    state = state.replace(target_params=jax.tree.map(lambda p: p * 0.5 + 0.1, state.params), env_steps=jnp.int32(500))
    batch = _batch(rng)
    expected = _numpy_loss(state.params, state.target_params, batch, double, loss_type)
    new_state, metrics = agent.update(state, batch, jax.random.PRNGKey(1))
    assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-4)
    # SGD on the same batch lowers the loss; target params untouched (500 % 1000 >= 1).
    after = _numpy_loss(new_state.params, new_state.target_params, batch, double, loss_type)
    assert after < expected
    chex_equal = jax.tree.map(lambda a, b: np.array_equal(a, b), new_state.target_params, state.target_params)
    assert all(jax.tree.leaves(chex_equal))
    assert int(new_state.update_steps) == 1


def test_target_syncs_once_per_period():
    agent = dqn.make_dqn(LinearQ(), optax.sgd(0.1), target_update_period=8, update_period=4)
    state = agent.init(jax.random.PRNGKey(0), (4, 1), 3)
    batch = _batch(np.random.default_rng(2))
    synced = []
    for env_steps in range(0, 32, 4):  # an update every 4 agent steps
        state = state.replace(env_steps=jnp.int32(env_steps))
        state, _ = agent.update(state, batch, jax.random.PRNGKey(0))
        same = jax.tree.map(lambda a, b: np.array_equal(a, b), state.params, state.target_params)
        synced.append(all(jax.tree.leaves(same)))
    assert synced == [True, False, True, False, True, False, True, False]


def test_act_is_greedy_at_zero_epsilon_and_random_at_one():
    agent = dqn.make_dqn(LinearQ(), optax.sgd(0.1), epsilon_eval=0.0, epsilon_train=1.0, epsilon_decay_period=10, epsilon_warmup_steps=0)
    state = agent.init(jax.random.PRNGKey(0), (4, 1), 3)
    obs = jnp.asarray(np.random.default_rng(3).normal(size=(64, 4, 1)), jnp.float32)
    greedy = agent.act(state, obs, jax.random.PRNGKey(1), False)
    np.testing.assert_array_equal(greedy, np.argmax(LinearQ().apply(state.params, obs), axis=-1))
    random_actions = agent.act(state, obs, jax.random.PRNGKey(1), True)  # epsilon 1 at step 0
    assert len(np.unique(np.asarray(random_actions))) == 3
    single = agent.act(state, obs[0], jax.random.PRNGKey(1), False)
    assert single.shape == ()


@pytest.mark.parametrize(
    "torso,shape",
    [("nature", (84, 84, 4)), ("minatar", (10, 10, 4, 1)), ("mlp", (4, 1))],
)
def test_networks_give_q_values_for_single_and_batched_inputs(torso, shape):
    net = networks.QNetwork(torso=networks.TORSOS[torso](), num_actions=6)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros(shape))
    assert net.apply(params, jnp.zeros(shape)).shape == (6,)
    assert net.apply(params, jnp.zeros((5,) + shape)).shape == (5, 6)


def test_unknown_optimizer_and_torso_are_refused():
    with pytest.raises(ValueError, match="adam"):
        dqn.create_optimizer(name="adagrad")
    with pytest.raises(ValueError, match="minatar"):
        networks.create_torso(name="resnet")


def test_epsilon_greedy_action_frequencies():
    """P(greedy) = 1 - eps + eps/A and P(other) = eps/A, from the single-draw construction."""
    q = jnp.tile(jnp.array([0.0, 0.0, 5.0, 0.0, 0.0, 0.0]), (200_000, 1))
    actions = np.asarray(dqn.epsilon_greedy(jax.random.PRNGKey(7), q, 0.3))
    freq = np.bincount(actions, minlength=6) / len(actions)
    expected = np.full(6, 0.3 / 6)
    expected[2] += 0.7
    # 5 standard errors of a binomial proportion at n = 200k is below 0.005.
    np.testing.assert_allclose(freq, expected, atol=0.005)
    assert np.all(np.asarray(dqn.epsilon_greedy(jax.random.PRNGKey(0), q[:1000], 0.0)) == 2)
    assert len(np.unique(np.asarray(dqn.epsilon_greedy(jax.random.PRNGKey(0), q[:1000], 1.0)))) == 6


def test_policy_gives_the_probabilities_act_samples_from():
    """mu(a|s) for recorded datasets: eps/A + (1 - eps) on the greedy action, eps from the schedule."""
    agent = dqn.make_dqn(LinearQ(), optax.sgd(0.1), epsilon_eval=0.05, epsilon_train=0.1, epsilon_decay_period=100, epsilon_warmup_steps=0)
    state = agent.init(jax.random.PRNGKey(0), (4, 1), 3).replace(env_steps=jnp.int32(50))  # eps = 0.55 mid-decay
    obs = jnp.asarray(np.random.default_rng(3).normal(size=(4, 1)), jnp.float32)
    greedy = int(np.argmax(LinearQ().apply(state.params, obs)))
    for training, eps in ((True, 0.55), (False, 0.05)):
        probabilities = np.asarray(agent.policy(state, obs, training))
        expected = np.full(3, eps / 3)
        expected[greedy] += 1 - eps
        np.testing.assert_allclose(probabilities, expected, atol=1e-6)
        keys = jax.random.split(jax.random.PRNGKey(5), 60_000)
        actions = np.asarray(jax.vmap(lambda k: agent.act(state, obs, k, training))(keys))
        np.testing.assert_allclose(np.bincount(actions, minlength=3) / actions.size, expected, atol=0.01)
