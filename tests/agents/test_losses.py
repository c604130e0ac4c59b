"""TD math against hand-computed values and a float64 NumPy reference."""
import numpy as np
import jax.numpy as jnp
import pytest

from accumbens.agents import losses


def test_huber_matches_hand_computed_values():
    targets = jnp.array([0.0, 0.0, 0.0, 3.0])
    predictions = jnp.array([0.5, -2.0, 1.0, 0.0])
    # |e| <= 1: e^2/2; |e| > 1: |e| - 1/2
    expected = np.array([0.125, 1.5, 0.5, 2.5])
    np.testing.assert_allclose(losses.huber_loss(targets, predictions), expected, rtol=1e-6)


def test_mse_is_half_squared_error():
    np.testing.assert_allclose(losses.mse_loss(jnp.array([1.0, -2.0]), jnp.array([3.0, 2.0])), [2.0, 8.0])


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ValueError, match="huber"):
        losses.regression_loss("l1")


def test_q_learning_target_plain_and_double_against_numpy():
    rng = np.random.default_rng(0)
    reward = rng.normal(size=8)
    discount = rng.choice([0.0, 0.99, 0.99**3], size=8)
    q_target = rng.normal(size=(8, 5))
    q_online = rng.normal(size=(8, 5))
    plain = reward + discount * q_target.max(axis=1)
    double = reward + discount * q_target[np.arange(8), q_online.argmax(axis=1)]
    np.testing.assert_allclose(losses.q_learning_target(reward, discount, q_target), plain, rtol=1e-5)
    np.testing.assert_allclose(losses.q_learning_target(reward, discount, q_target, q_online), double, rtol=1e-5)


@pytest.mark.parametrize(
    "step,expected",
    [(0, 1.0), (100, 1.0), (150, 1.0 - 0.9 * 50 / 100), (200, 0.1), (10_000, 0.1)],
)
def test_linearly_decaying_epsilon(step, expected):
    value = losses.linearly_decaying_epsilon(jnp.asarray(step), decay_period=100, warmup_steps=100, final_epsilon=0.1)
    assert float(value) == pytest.approx(expected)
