"""A user's own agent, outside the accumbens package: DQN with an expected-SARSA target.

Expected SARSA (van Seijen, van Hasselt, Whiteson & Wiering 2009, "A theoretical and empirical
analysis of Expected Sarsa", ADPRL) bootstraps from the *expected* value of the next state under
the policy being followed, instead of from its maximum (Q-learning, which DQN uses):

    DQN:             target = reward + discount * max_a Q_target(s', a)
    expected SARSA:  target = reward + discount * sum_a pi(a | s') Q_target(s', a)

with pi the epsilon-greedy policy on the next state's Q-values:
pi(a | s') = epsilon / A + (1 - epsilon) [a = argmax_b Q(s', b)]. With epsilon = 0 this is DQN's
target again; with epsilon = 1 it is the mean over actions.

Everything else is DQN's: this file composes `accumbens.agents.dqn`'s pure functions (`make_dqn`
for `init` and `act`, `apply_gradients` for the optimizer step and the target sync) and subclasses
its host shell (`DQNAgent`), overriding only `_build_agent`. Every `DQNAgent.*` gin binding (from
`include 'dqn/minatar.gin'`, say) therefore applies to this agent too; its one new
hyperparameter is `ExpectedSarsaAgent.target_epsilon`.

Used from `my_agent.gin` (`import my_agent`, then `create_agent.agent_fn = @ExpectedSarsaAgent`);
see docs/writing_an_agent.md in the accumbens repository.
"""
from __future__ import annotations

from typing import Optional, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

from accumbens.agents import losses, networks
from accumbens.agents.base import Agent, Batch, PRNGKey
from accumbens.agents.dqn import DQNAgent, DQNState, apply_gradients, make_dqn


def epsilon_greedy_probabilities(q_values: jnp.ndarray, epsilon: jnp.ndarray) -> jnp.ndarray:
    """pi(a | s) of the epsilon-greedy policy on `q_values` [..., A] -> [..., A].

    epsilon / A on every action plus 1 - epsilon on the greedy one; ties go to the first maximum,
    as in `accumbens.agents.dqn.epsilon_greedy` (jnp.argmax), so this is exactly the acting policy.
    """
    num_actions = q_values.shape[-1]
    greedy = jax.nn.one_hot(jnp.argmax(q_values, axis=-1), num_actions, dtype=q_values.dtype)
    epsilon = jnp.asarray(epsilon, q_values.dtype)
    return epsilon / num_actions + (1.0 - epsilon) * greedy


def expected_sarsa_target(
    reward: jnp.ndarray,
    discount: jnp.ndarray,
    next_q_target: jnp.ndarray,
    epsilon: jnp.ndarray,
    next_q_policy: Optional[jnp.ndarray] = None,
) -> jnp.ndarray:
    """`reward + discount * sum_a pi(a | s') Q_target(s', a)`, gradient stopped.

    reward, discount: [B] (n-step return and gamma^m, 0 on termination, as replay folds them);
    next_q_target: [B, A] the target network's Q-values at s';
    epsilon: scalar, the epsilon of the epsilon-greedy policy pi;
    next_q_policy: [B, A] the Q-values pi is greedy on (the online network's, as double DQN picks
      its action); default `next_q_target`.
    """
    policy_q = next_q_target if next_q_policy is None else next_q_policy
    probabilities = epsilon_greedy_probabilities(policy_q, epsilon)
    bootstrap = jnp.sum(probabilities * next_q_target, axis=-1)
    return jax.lax.stop_gradient(reward + discount * bootstrap)


def make_expected_sarsa(
    network: networks.QNetwork,
    optimizer: optax.GradientTransformation,
    *,
    target_epsilon: Optional[float] = None,
    double_dqn: bool = False,
    loss_type: str = "mse",
    epsilon_train: float = 0.01,
    epsilon_eval: float = 0.001,
    epsilon_decay_period: int = 250_000,
    epsilon_warmup_steps: int = 20_000,
    target_update_period: int = 8_000,
    update_period: int = 4,
) -> Agent:
    """DQN's pure `init` and `act`, and an `update` whose target is `expected_sarsa_target`.

    target_epsilon: epsilon of the policy the target averages over; None (the default, as in
      van Seijen et al.: the policy being followed) uses the agent's current training epsilon,
      DQN's linearly decaying schedule at `state.env_steps`.
    double_dqn: pi is greedy on the online network's Q-values at s' (else the target network's).
    The rest are `make_dqn`'s. `update` returns DQN's metrics (`loss`, `q_mean`, `priorities`).
    """
    dqn = make_dqn(
        network,
        optimizer,
        double_dqn=double_dqn,
        loss_type=loss_type,
        epsilon_train=epsilon_train,
        epsilon_eval=epsilon_eval,
        epsilon_decay_period=epsilon_decay_period,
        epsilon_warmup_steps=epsilon_warmup_steps,
        target_update_period=target_update_period,
        update_period=update_period,
    )
    elementwise_loss = losses.regression_loss(loss_type)

    def policy_epsilon(state: DQNState) -> jnp.ndarray:
        if target_epsilon is not None:
            return jnp.float32(target_epsilon)
        return losses.linearly_decaying_epsilon(state.env_steps, epsilon_decay_period, epsilon_warmup_steps, epsilon_train)

    def loss_fn(params, target_params, batch: Batch, epsilon: jnp.ndarray):
        q_values = network.apply(params, batch.observation)
        chosen_q = jnp.take_along_axis(q_values, batch.action[:, None].astype(jnp.int32), axis=-1)[:, 0]
        next_q_target = network.apply(target_params, batch.next_observation)
        next_q_policy = network.apply(params, batch.next_observation) if double_dqn else None
        target = expected_sarsa_target(batch.reward, batch.discount, next_q_target, epsilon, next_q_policy)
        per_sample = elementwise_loss(target, chosen_q)
        return jnp.mean(batch.weight * per_sample), (per_sample, chosen_q)

    def update(state: DQNState, batch: Batch, rng: PRNGKey) -> tuple[DQNState, dict]:
        del rng  # deterministic, as DQN's
        (loss, (per_sample, chosen_q)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.target_params, batch, policy_epsilon(state)
        )
        new_state = apply_gradients(state, grads, optimizer, target_update_period, update_period)
        metrics = {"loss": loss, "q_mean": jnp.mean(chosen_q), "priorities": jnp.sqrt(per_sample + 1e-10)}
        return new_state, metrics

    return dqn._replace(update=update)


@gin.configurable
class ExpectedSarsaAgent(DQNAgent):
    """`DQNAgent` with the expected-SARSA target; every other argument is `DQNAgent`'s.

    Only `target_epsilon` is new (see `make_expected_sarsa`). The other keyword arguments pass
    through to `DQNAgent.__init__` untouched, so the `DQNAgent.*` bindings of an included config
    configure this agent as well.
    """

    def __init__(
        self,
        num_actions: int,
        observation_shape: Sequence[int],
        observation_dtype: np.dtype = np.uint8,
        *,
        target_epsilon: Optional[float] = None,
        **dqn_kwargs,
    ):
        if target_epsilon is not None and not 0.0 <= target_epsilon <= 1.0:
            raise ValueError(f"ExpectedSarsaAgent.target_epsilon must be None or in [0, 1], got {target_epsilon}")
        self.target_epsilon = target_epsilon
        super().__init__(num_actions, observation_shape, observation_dtype, **dqn_kwargs)

    def _build_agent(self, *, torso, num_actions, optimizer, epsilon_kwargs, target_update_period, update_period) -> Agent:
        """Same arguments as `DQNAgent._build_agent`; only the pure core changes."""
        return make_expected_sarsa(
            networks.QNetwork(torso=torso, num_actions=num_actions),
            optimizer,
            target_epsilon=self.target_epsilon,
            double_dqn=self.double_dqn,
            loss_type=self.loss_type,
            target_update_period=target_update_period,
            update_period=update_period,
            **epsilon_kwargs,
        )
