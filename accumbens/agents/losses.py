"""Pure temporal-difference math shared by the agents: regression losses and Q-learning targets.

Replay already folds the n-step return and the discount `gamma^m` (0 on termination) into the
batch, so a target here is always `reward + discount * bootstrap`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def huber_loss(targets: jnp.ndarray, predictions: jnp.ndarray, delta: float = 1.0) -> jnp.ndarray:
    """Elementwise Huber loss: quadratic within `delta` of the target, linear outside."""
    error = jnp.abs(targets - predictions)
    quadratic = jnp.minimum(error, delta)
    return 0.5 * quadratic**2 + delta * (error - quadratic)


def mse_loss(targets: jnp.ndarray, predictions: jnp.ndarray) -> jnp.ndarray:
    """Elementwise half squared error (Dopamine's 'mse')."""
    return 0.5 * (targets - predictions) ** 2


LOSSES = {"huber": huber_loss, "mse": mse_loss}


def regression_loss(name: str):
    """Returns the elementwise loss called `name` ('huber' or 'mse')."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid losses: {sorted(LOSSES)}")
    return LOSSES[name]


def q_learning_target(
    reward: jnp.ndarray,
    discount: jnp.ndarray,
    next_q_target: jnp.ndarray,
    next_q_online: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Bootstrapped target `r + discount * Q_target(s', a*)`, gradient stopped.

    reward, discount: [B]; next_q_*: [B, A]. With `next_q_online` (double DQN, van Hasselt et al.
    2016) the online network picks `a*` and the target network evaluates it; otherwise `a*` is the
    target network's own argmax.
    """
    selector = next_q_target if next_q_online is None else next_q_online
    best_action = jnp.argmax(selector, axis=-1)
    bootstrap = jnp.take_along_axis(next_q_target, best_action[..., None], axis=-1)[..., 0]
    return jax.lax.stop_gradient(reward + discount * bootstrap)


def linearly_decaying_epsilon(
    step: jnp.ndarray, decay_period: int, warmup_steps: int, final_epsilon: float
) -> jnp.ndarray:
    """Nature-DQN schedule: 1 during `warmup_steps`, then linear to `final_epsilon` over `decay_period`."""
    steps_left = decay_period + warmup_steps - step
    bonus = (1.0 - final_epsilon) * steps_left / decay_period
    return final_epsilon + jnp.clip(bonus, 0.0, 1.0 - final_epsilon)
