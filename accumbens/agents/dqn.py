"""DQN (Mnih et al., 2015) as pure functions over explicit state, plus its thin host shell.

The pure core (`make_dqn`) is what every later agent composes: Rainbow swaps the head and the
loss, the research agents add heads or targets. The host shell (`DQNAgent`) only wires the core
to replay, frame stacking and the runner's Dopamine-style verbs.

One update step, for a batch from replay (n-step return and `gamma^m` already folded in):
    target = reward + discount * max_a Q_target(s', a)      (double DQN: a from the online net)
    loss   = mean_i weight_i * L(target_i - Q_online(s_i, a_i))    L = Huber or squared error
The target network is copied from the online one once per `target_update_period` agent steps.
"""
from __future__ import annotations

from typing import Callable, Sequence

import chex
import flax.linen as nn
import flax.struct
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

from accumbens.agents import losses, networks
from accumbens.agents.base import Agent, Batch, PRNGKey
from accumbens.agents.host_agent import HostAgent


@flax.struct.dataclass
class DQNState:
    """Everything a DQN learner carries between steps (a pytree; checkpointed as a whole)."""

    params: chex.ArrayTree
    target_params: chex.ArrayTree
    opt_state: optax.OptState
    env_steps: jnp.ndarray  # agent steps taken in training mode; drives epsilon and target syncs
    update_steps: jnp.ndarray  # gradient steps taken


@gin.configurable
def create_optimizer(
    name: str = "adam",
    learning_rate: float = 6.25e-5,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1.5e-4,
    centered: bool = False,
) -> optax.GradientTransformation:
    """An optax optimizer by name, with Dopamine's conventions.

    'adam': Adam(lr, b1=beta1, b2=beta2, eps). 'rmsprop': RMSProp(lr, decay=beta2, eps, centered),
    so the MinAtar paper's RMSProp (squared-gradient momentum 0.95, min squared gradient 0.01) is
    `name='rmsprop', beta2=0.95, eps=0.01, centered=True`. 'sgd': plain SGD.

    `learning_rate` and `eps` are injected (`optax.inject_hyperparams`): they live in the optimizer
    state (`opt_state.hyperparams`), so the compiled runner can give every vmapped member its own
    value. The updates are bitwise those of the plain optax optimizers (tested); beta1/beta2 stay
    constants because injecting them changes the last bits of Adam's bias correction.
    """
    if name == "adam":
        factory = optax.inject_hyperparams(optax.adam, static_args=("b1", "b2", "eps_root"))
        return factory(learning_rate, b1=beta1, b2=beta2, eps=eps)
    if name == "rmsprop":
        factory = optax.inject_hyperparams(optax.rmsprop, static_args=("decay", "initial_scale"))
        return factory(learning_rate, decay=beta2, eps=eps, centered=centered)
    if name == "sgd":
        return optax.inject_hyperparams(optax.sgd)(learning_rate)
    raise ValueError(f"unknown optimizer {name!r}; valid optimizers: ['adam', 'rmsprop', 'sgd']")


def epsilon_greedy(rng: PRNGKey, q_values: jnp.ndarray, epsilon: jnp.ndarray) -> jnp.ndarray:
    """Greedy action of `q_values` ([..., A]), replaced by a uniform one with probability epsilon.

    One uniform draw u decides both: explore iff u < epsilon, and then u / epsilon is itself
    uniform on [0, 1), so floor(A * u / epsilon) is a uniform action. One draw instead of two
    (and no key split) makes acting markedly cheaper on CPU, where it runs every agent step.
    """
    num_actions = q_values.shape[-1]
    u = jax.random.uniform(rng, q_values.shape[:-1])
    scaled = u / jnp.maximum(epsilon, jnp.finfo(jnp.float32).tiny)
    random_action = jnp.minimum((scaled * num_actions).astype(jnp.int32), num_actions - 1)
    return jnp.where(u < epsilon, random_action, jnp.argmax(q_values, axis=-1)).astype(jnp.int32)


def epsilon_greedy_probabilities(q_values: jnp.ndarray, epsilon: jnp.ndarray) -> jnp.ndarray:
    """The probabilities [..., A] with which `epsilon_greedy` picks each action: eps / A + (1 - eps) on the argmax."""
    num_actions = q_values.shape[-1]
    greedy = jax.nn.one_hot(jnp.argmax(q_values, axis=-1), num_actions, dtype=jnp.float32)
    return epsilon / num_actions + (1.0 - epsilon) * greedy


def initial_state(params: chex.ArrayTree, optimizer: optax.GradientTransformation) -> DQNState:
    """A fresh `DQNState`: target = online parameters, optimizer initialised, counters at 0."""
    return DQNState(
        params=params,
        target_params=params,
        opt_state=optimizer.init(params),
        env_steps=jnp.zeros((), jnp.int32),
        update_steps=jnp.zeros((), jnp.int32),
    )


def apply_gradients(
    state: DQNState,
    grads: chex.ArrayTree,
    optimizer: optax.GradientTransformation,
    target_update_period: int,
    update_period: int,
) -> DQNState:
    """One optimizer step on `state.params`, then the periodic target sync; counts the update.

    The target copies the new online parameters on the update that falls in the first
    `update_period` agent steps of each `target_update_period` window (Dopamine's "every
    target_update_period agent steps" whenever the period divides evenly).
    """
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    sync = (state.env_steps % target_update_period) < update_period
    target_params = jax.tree.map(lambda new, old: jnp.where(sync, new, old), params, state.target_params)
    return state.replace(
        params=params,
        target_params=target_params,
        opt_state=opt_state,
        update_steps=state.update_steps + 1,
    )


def make_dqn(
    network: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    double_dqn: bool = False,
    loss_type: str = "mse",
    epsilon_train: float = 0.01,
    epsilon_eval: float = 0.001,
    epsilon_decay_period: int = 250_000,
    epsilon_warmup_steps: int = 20_000,
    target_update_period: int = 8_000,
    update_period: int = 4,
) -> Agent:
    """Builds DQN's pure `init`, `act` and `update` for a network mapping observations to Q-values.

    `act` accepts one observation `[*obs_shape, stack]` (returns a scalar action) or a batch
    (returns `[B]`). The target network syncs inside `update` on the update that falls in the
    first `update_period` agent steps of each `target_update_period` window, which is Dopamine's
    "every target_update_period agent steps" whenever the period divides evenly.
    """
    elementwise_loss = losses.regression_loss(loss_type)

    def init(rng: PRNGKey, observation_shape: Sequence[int], num_actions: int) -> DQNState:
        del num_actions  # fixed by the network
        params = network.init(rng, jnp.zeros(tuple(observation_shape), jnp.float32))
        return initial_state(params, optimizer)

    def epsilon(state: DQNState, training: bool) -> jnp.ndarray:
        if training:
            return losses.linearly_decaying_epsilon(state.env_steps, epsilon_decay_period, epsilon_warmup_steps, epsilon_train)
        return jnp.asarray(epsilon_eval, jnp.float32)

    def act(state: DQNState, observation: jnp.ndarray, rng: PRNGKey, training: bool) -> jnp.ndarray:
        return epsilon_greedy(rng, network.apply(state.params, observation), epsilon(state, training))

    def policy(state: DQNState, observation: jnp.ndarray, training: bool) -> jnp.ndarray:
        """The action probabilities `act` samples from (recorded datasets store mu(a|s) from it)."""
        return epsilon_greedy_probabilities(network.apply(state.params, observation), epsilon(state, training))

    def loss_fn(params, target_params, batch: Batch):
        q_values = network.apply(params, batch.observation)
        chosen_q = jnp.take_along_axis(q_values, batch.action[:, None].astype(jnp.int32), axis=-1)[:, 0]
        next_q_target = network.apply(target_params, batch.next_observation)
        next_q_online = network.apply(params, batch.next_observation) if double_dqn else None
        target = losses.q_learning_target(batch.reward, batch.discount, next_q_target, next_q_online)
        per_sample = elementwise_loss(target, chosen_q)
        return jnp.mean(batch.weight * per_sample), (per_sample, chosen_q)

    def update(state: DQNState, batch: Batch, rng: PRNGKey) -> tuple[DQNState, dict]:
        del rng  # DQN's update is deterministic
        (loss, (per_sample, chosen_q)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.target_params, batch
        )
        new_state = apply_gradients(state, grads, optimizer, target_update_period, update_period)
        metrics = {"loss": loss, "q_mean": jnp.mean(chosen_q), "priorities": jnp.sqrt(per_sample + 1e-10)}
        return new_state, metrics

    return Agent(init=init, act=act, update=update, policy=policy)


@gin.configurable
class DQNAgent(HostAgent):
    """The host-runner DQN: gin-configurable hyperparameters with Dopamine JAX DQN's defaults."""

    def __init__(
        self,
        num_actions: int,
        observation_shape: Sequence[int],
        observation_dtype: np.dtype = np.uint8,
        *,
        stack_size: int = 4,
        torso: Callable[[], nn.Module] = networks.create_torso,
        gamma: float = 0.99,
        update_horizon: int = 1,
        min_replay_history: int = 20_000,
        update_period: int = 4,
        target_update_period: int = 8_000,
        epsilon_train: float = 0.01,
        epsilon_eval: float = 0.001,
        epsilon_decay_period: int = 250_000,
        double_dqn: bool = False,
        loss_type: str = "mse",
        optimizer: Callable[[], optax.GradientTransformation] = create_optimizer,
        batch_size: int = 32,
        replay_scheme: str = "uniform",
        seed: int = 0,
    ):
        self.double_dqn = double_dqn
        self.loss_type = loss_type
        pure = self._build_agent(
            torso=torso(),
            num_actions=num_actions,
            optimizer=optimizer(),
            epsilon_kwargs=dict(
                epsilon_train=epsilon_train,
                epsilon_eval=epsilon_eval,
                epsilon_decay_period=epsilon_decay_period,
                epsilon_warmup_steps=min_replay_history,
            ),
            target_update_period=target_update_period,
            update_period=update_period,
        )
        super().__init__(
            pure,
            num_actions=num_actions,
            observation_shape=observation_shape,
            observation_dtype=observation_dtype,
            stack_size=stack_size,
            gamma=gamma,
            update_horizon=update_horizon,
            min_replay_history=min_replay_history,
            update_period=update_period,
            batch_size=batch_size,
            replay_scheme=replay_scheme,
            seed=seed,
        )

    def _build_agent(self, *, torso, num_actions, optimizer, epsilon_kwargs, target_update_period, update_period) -> Agent:
        """The pure DQN core; subclasses (Rainbow) override this to change head and loss."""
        return make_dqn(
            networks.QNetwork(torso=torso, num_actions=num_actions),
            optimizer,
            double_dqn=self.double_dqn,
            loss_type=self.loss_type,
            target_update_period=target_update_period,
            update_period=update_period,
            **epsilon_kwargs,
        )
