"""Deep fixed-dataset policy optimisation: naive, imitation, proximal and uncertainty-aware.

Buckman, Gelada & Bellemare (2020), "The Importance of Pessimism in Fixed-Dataset Policy
Optimization" (arXiv:2009.06799), Section 6 (MinAtar). Four algorithms, one per `algorithm`:

  'naive'        fitted Q-iteration on the dataset (DQN's loss with a target network):
                     y = r + discount * max_a Q_target(s', a)
  'imitation'    behaviour cloning: a policy network trained by cross-entropy on the dataset's
                 actions; acts by sampling its softmax (tiopifdpo FixedDataImitation).
  'proximal'     proximal pessimism, alpha = 0.25 (tiopifdpo PessimisticFixedDataNVI): a cloned
                 behaviour policy pihat (as 'imitation', trained alongside) and Q with target
                     pi(.|s') = proximal_policy(Q_target(s'), pihat(s'), alpha)
                     y = r + discount * [sum_a pi(a|s') Q_target(s', a) - alpha * sum_a (pi - pihat)_+]
                 where proximal_policy keeps pihat's mass on actions whose Q is within alpha of
                 the best and moves the rest to the argmax. Acts by sampling pi(.|s).
  'uncertainty'  beyond the paper (which has no deep uncertainty-aware variant): K Q-heads on one
                 torso, each initialised differently and all regressed on one pessimistic target
                     Qpen(s, a) = mean_k Q_k(s, a) - beta * std_k Q_k(s, a)
                     y = r + discount * max_a Qpen_target(s', a)
                 Where the data pin Q down the heads agree; off the data they keep the spread of
                 their random initialisations, so std_k is a (heuristic) epistemic uncertainty,
                 the deep analogue of the tabular alpha / sqrt(n(s, a)). Acts greedily on Qpen.

The paper's MinAtar settings (tiopifdpo deep/nvi/algorithms.py, NVI.set_defaults): Adam with
learning rate 3e-4, gamma 0.99, Huber loss with threshold 5, batch 1024, proximal alpha 0.25.
The paper refits Q from scratch on each Bellman iteration; here, as in DQN, a target network is
copied from the online one every `target_update_period` gradient steps (counted by
`update_steps`, not by environment steps, because an offline learner takes none).

The pure core (`make_pessimistic`) reuses DQN's state, optimizer and epsilon-greedy acting; the
host shell (`PessimisticAgent`) is `DQNAgent` with `_build_agent` overridden, so the online and
offline runners drive it unchanged.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

from accumbens.agents import losses, networks
from accumbens.agents.base import Agent, Batch, PRNGKey
from accumbens.agents.dqn import DQNAgent, DQNState, create_optimizer, epsilon_greedy, initial_state

ALGORITHMS = ("naive", "imitation", "proximal", "uncertainty")


class PessimisticOutput(NamedTuple):
    """q: [..., K, A] Q-values of K heads (K = 1 except for 'uncertainty');
    policy_logits: [..., A] the cloned behaviour policy's logits (zeros when the network has none)."""

    q: jnp.ndarray
    policy_logits: jnp.ndarray


class PessimisticNetwork(nn.Module):
    """Q-heads on one torso and, if `policy_torso` is given, a separate behaviour-cloning network.

    The policy network has its own torso (as in the paper, where pihat is a separate network), so
    cloning does not shape the Q features and 'naive' vs 'proximal' differ only in the target.
    """

    torso: nn.Module
    num_actions: int
    num_heads: int = 1
    policy_torso: nn.Module | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> PessimisticOutput:
        init = nn.initializers.xavier_uniform()
        features = self.torso(x)
        q = nn.Dense(self.num_heads * self.num_actions, kernel_init=init, name="q_heads")(features)
        q = q.reshape(q.shape[:-1] + (self.num_heads, self.num_actions))
        if self.policy_torso is None:
            logits = jnp.zeros(q.shape[:-2] + (self.num_actions,), q.dtype)
        else:
            logits = nn.Dense(self.num_actions, kernel_init=init, name="policy")(self.policy_torso(x))
        return PessimisticOutput(q=q, policy_logits=logits)


# ----- the pure targets (also used by the tests against NumPy references) ---------------------
def proximal_policy(q: jnp.ndarray, behaviour: jnp.ndarray, alpha: float) -> jnp.ndarray:
    """argmax_pi <pi, q> - alpha * sum_a (pi(a) - behaviour(a))_+ per row of q, behaviour [..., A]:
    behaviour's mass on actions with q > max q - alpha, the rest on argmax q."""
    keep = q > jnp.max(q, axis=-1, keepdims=True) - alpha
    policy = jnp.where(keep, behaviour, 0.0)
    best = jax.nn.one_hot(jnp.argmax(q, axis=-1), q.shape[-1], dtype=q.dtype)
    return jnp.clip(policy + (1.0 - policy.sum(-1, keepdims=True)) * best, 0.0, 1.0)


def proximal_value(q: jnp.ndarray, behaviour: jnp.ndarray, alpha: float) -> jnp.ndarray:
    """The penalised state value sum_a pi(a) q(a) - alpha * sum_a (pi(a) - behaviour(a))_+: [...]."""
    policy = proximal_policy(q, behaviour, alpha)
    return jnp.sum(policy * q, -1) - alpha * jnp.sum(jax.nn.relu(policy - behaviour), -1)


def penalised_q(q_heads: jnp.ndarray, beta: float) -> jnp.ndarray:
    """mean_k Q_k - beta * std_k Q_k over the head axis (-2) of [..., K, A]: [..., A]."""
    return jnp.mean(q_heads, axis=-2) - beta * jnp.std(q_heads, axis=-2)


def make_pessimistic(
    network: PessimisticNetwork,
    optimizer: optax.GradientTransformation,
    *,
    algorithm: str = "proximal",
    proximal_alpha: float = 0.25,
    uncertainty_beta: float = 1.0,
    loss_type: str = "huber",
    huber_delta: float = 5.0,
    epsilon_eval: float = 0.0,
    target_update_period: int = 1000,
    sample_policy: bool = True,
) -> Agent:
    """Builds the pure `init/act/update` for one FDPO `algorithm` (see the module docstring).

    `act` takes one observation `[*obs_shape, stack]` or a batch; `training` does not change how
    an offline learner acts. The target network syncs when `update_steps % target_update_period
    == 0` (before that update), so update 0 starts from target = online.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown FDPO algorithm {algorithm!r}; valid algorithms: {list(ALGORITHMS)}")
    if algorithm in ("proximal", "imitation") and network.policy_torso is None:
        raise ValueError(f"algorithm {algorithm!r} needs a PessimisticNetwork with a policy_torso")
    if algorithm == "uncertainty" and network.num_heads < 2:
        raise ValueError("algorithm 'uncertainty' needs num_heads >= 2 (the ensemble's spread is the penalty)")
    if target_update_period < 1:
        raise ValueError(f"target_update_period must be >= 1, got {target_update_period}")
    if loss_type == "huber":
        elementwise_loss = functools.partial(losses.huber_loss, delta=huber_delta)
    else:
        elementwise_loss = losses.regression_loss(loss_type)

    def init(rng: PRNGKey, observation_shape: Sequence[int], num_actions: int) -> DQNState:
        del num_actions  # fixed by the network
        params = network.init(rng, jnp.zeros(tuple(observation_shape), jnp.float32))
        return initial_state(params, optimizer)

    def greedy_values(output: PessimisticOutput) -> jnp.ndarray:
        """The Q-values the greedy choice uses: [..., A]."""
        if algorithm == "uncertainty":
            return penalised_q(output.q, uncertainty_beta)
        return output.q[..., 0, :]

    def act(state: DQNState, observation: jnp.ndarray, rng: PRNGKey, training: bool) -> jnp.ndarray:
        del training  # an offline learner acts the same way in both phases
        output = network.apply(state.params, observation)
        if algorithm in ("naive", "uncertainty"):
            return epsilon_greedy(rng, greedy_values(output), epsilon_eval)
        behaviour = jax.nn.softmax(output.policy_logits)
        policy = behaviour if algorithm == "imitation" else proximal_policy(output.q[..., 0, :], behaviour, proximal_alpha)
        if not sample_policy:
            return jnp.argmax(policy, axis=-1).astype(jnp.int32)
        return jax.random.categorical(rng, jnp.log(jnp.maximum(policy, 1e-30))).astype(jnp.int32)

    def loss_fn(params, target_params, batch: Batch):
        action = batch.action.astype(jnp.int32)
        online = network.apply(params, batch.observation)
        weight = batch.weight
        bc_loss = jnp.zeros_like(batch.reward)
        if algorithm in ("imitation", "proximal"):
            log_probs = jax.nn.log_softmax(online.policy_logits)
            bc_loss = -jnp.take_along_axis(log_probs, action[:, None], axis=-1)[:, 0]
        if algorithm == "imitation":
            return jnp.mean(weight * bc_loss), (bc_loss, jnp.zeros_like(bc_loss))

        next_target = network.apply(target_params, batch.next_observation)
        if algorithm == "proximal":
            next_online = network.apply(params, batch.next_observation)
            behaviour = jax.nn.softmax(next_online.policy_logits)
            bootstrap = proximal_value(next_target.q[..., 0, :], behaviour, proximal_alpha)
        else:
            bootstrap = jnp.max(greedy_values(next_target), axis=-1)
        target = jax.lax.stop_gradient(batch.reward + batch.discount * bootstrap)  # [B]
        chosen = jnp.take_along_axis(online.q, action[:, None, None], axis=-1)[..., 0]  # [B, K]
        td_loss = jnp.mean(elementwise_loss(target[:, None], chosen), axis=-1)  # mean over heads
        per_sample = td_loss + bc_loss
        return jnp.mean(weight * per_sample), (per_sample, jnp.mean(chosen, axis=-1))

    def update(state: DQNState, batch: Batch, rng: PRNGKey) -> tuple[DQNState, dict]:
        del rng  # deterministic
        # Sync first, so that the target is the online network of every target_update_period-th step.
        sync = state.update_steps % target_update_period == 0
        target_params = jax.tree.map(lambda new, old: jnp.where(sync, new, old), state.params, state.target_params)
        (loss, (per_sample, chosen_q)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, target_params, batch
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            params=optax.apply_updates(state.params, updates),
            target_params=target_params,
            opt_state=opt_state,
            update_steps=state.update_steps + 1,
        )
        metrics = {"loss": loss, "q_mean": jnp.mean(chosen_q), "priorities": jnp.sqrt(per_sample + 1e-10)}
        return new_state, metrics

    return Agent(init=init, act=act, update=update)


@gin.configurable
class PessimisticAgent(DQNAgent):
    """Host shell for the four FDPO algorithms; DQN's shell with the pessimistic core.

    Defaults are the paper's MinAtar settings where it has them (Buckman et al. 2020; tiopifdpo
    deep/nvi/algorithms.py): proximal alpha 0.25, Huber threshold 5, gamma 0.99; Adam with lr 3e-4
    and batch 1024 are set in the gin files (`create_optimizer`, `batch_size`). `num_heads = 5`
    and `uncertainty_beta = 1.0` for the ensemble variant are our choices (the paper has none).
    """

    def __init__(
        self,
        num_actions: int,
        observation_shape: Sequence[int],
        observation_dtype: np.dtype = np.uint8,
        *,
        algorithm: str = "proximal",
        proximal_alpha: float = 0.25,
        uncertainty_beta: float = 1.0,
        num_heads: int = 5,
        huber_delta: float = 5.0,
        sample_policy: bool = True,
        stack_size: int = 1,
        torso: Callable[[], nn.Module] = networks.create_torso,
        gamma: float = 0.99,
        update_horizon: int = 1,
        min_replay_history: int = 0,
        update_period: int = 1,
        target_update_period: int = 1000,
        epsilon_eval: float = 0.0,
        loss_type: str = "huber",
        optimizer: Callable[[], optax.GradientTransformation] = create_optimizer,
        batch_size: int = 1024,
        replay_scheme: str = "uniform",
        seed: int = 0,
    ):
        self.algorithm = algorithm
        self.proximal_alpha = proximal_alpha
        self.uncertainty_beta = uncertainty_beta
        self.num_heads = num_heads if algorithm == "uncertainty" else 1
        self.huber_delta = huber_delta
        self.sample_policy = sample_policy
        self._torso_fn = torso
        super().__init__(
            num_actions,
            observation_shape,
            observation_dtype,
            stack_size=stack_size,
            torso=torso,
            gamma=gamma,
            update_horizon=update_horizon,
            min_replay_history=min_replay_history,
            update_period=update_period,
            target_update_period=target_update_period,
            epsilon_eval=epsilon_eval,
            loss_type=loss_type,
            optimizer=optimizer,
            batch_size=batch_size,
            replay_scheme=replay_scheme,
            seed=seed,
        )

    def _build_agent(self, *, torso, num_actions, optimizer, epsilon_kwargs, target_update_period, update_period) -> Agent:
        del update_period
        needs_policy = self.algorithm in ("imitation", "proximal")
        network = PessimisticNetwork(
            torso=torso,
            num_actions=num_actions,
            num_heads=self.num_heads,
            policy_torso=self._torso_fn() if needs_policy else None,
        )
        return make_pessimistic(
            network,
            optimizer,
            algorithm=self.algorithm,
            proximal_alpha=self.proximal_alpha,
            uncertainty_beta=self.uncertainty_beta,
            loss_type=self.loss_type,
            huber_delta=self.huber_delta,
            epsilon_eval=epsilon_kwargs["epsilon_eval"],
            target_update_period=target_update_period,
            sample_policy=self.sample_policy,
        )


__all__ = [
    "ALGORITHMS",
    "PessimisticAgent",
    "PessimisticNetwork",
    "PessimisticOutput",
    "make_pessimistic",
    "penalised_q",
    "proximal_policy",
    "proximal_value",
]
