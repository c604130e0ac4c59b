"""Discounted COP-TD (Gelada & Bellemare, AAAI 2019) on DQN or C51: value updates reweighted by a learned covariate shift.

Gelada, C. and Bellemare, M. G. "Off-Policy Deep Reinforcement Learning by Bootstrapping the
Covariate Shift", AAAI 2019 (arXiv:1901.09455). Off-policy data comes from a behaviour policy mu
(here the agent's epsilon-greedy acting policy, or a dataset's); the agent evaluates and improves
a target policy pi (greedy, or epsilon-greedy with a small epsilon). Replay states are distributed
as d_mu, not d_pi; the covariate shift ratio c(s) = d_pi(s) / d_mu(s) reweights the value loss
so that it is, in expectation, taken under pi's state distribution.

The ratio is learned by bootstrapping *backwards* in time. For a replay transition (s, a, s'):

    target(s') = (1 - gamma_hat) + gamma_hat * (pi(a|s) / mu(a|s)) * c_bar(s)
    ratio loss = 1/2 (c(s') - target(s'))^2  +  normalization_weight * (E_mu[c] - 1)^2

c_bar(s) is the bootstrapped side: the target network's ratio at s, clipped to [0, ratio_clip]
and held fixed (stop-gradient). For gamma_hat < 1 this has a unique fixed point (the tabular one is
computed exactly in `tabular_cop_td.py`: x = (1 - g)(I - g P_pi^T)^{-1} d_mu, c = x / d_mu),
which tends to d_pi / d_mu as gamma_hat -> 1. E_mu[c] is estimated by the batch mean of c(s');
the fixed point already satisfies E_mu[c] = 1, so the soft normalisation penalty does not bias it.

Value loss. The agent's usual per-transition loss L_i (C51 cross-entropy, or DQN's Huber/squared
TD error) is weighted by the learned ratio at the updated state, clipped and held fixed:

    L = mean_i w_i * min(max(c(s_i), 0), ratio_clip) * L_i  +  ratio_loss_weight * ratio loss

(w_i: replay importance weights.) With `ratio_weighting=False` the ratio is still learned but the
value loss is unweighted: the same agent without the correction, for comparisons.

Network. One torso, two heads: the agent's value head (DQN's Q-values or C51's distributions,
`networks.QNetwork` / `networks.RainbowNetwork` applied to the torso's features) and a ratio head
(optional dense layers, then a scalar through softplus so that c >= 0; its output layer starts
with zero weights and bias softplus^-1(1), so c = 1, the on-policy ratio, at initialisation). Both losses train the torso.

pi(a|s) and mu(a|s) for the sampled action:
  pi  epsilon-greedy (`target_epsilon`; default the evaluation epsilon) w.r.t. the online network's
      Q-values at s.
  mu  the batch's `behaviour_probability` when it carries one (fixed datasets record it per
      transition, `replay.dataset`); otherwise (online replay, which does not record it) the agent's
      epsilon-greedy acting policy *as it is now*: epsilon from the training schedule at the current
      step, greedy action of the current online network. This is an approximation: the transition
      was taken earlier, with an older network and a possibly larger epsilon. mu is floored at
      `MIN_BEHAVIOUR_PROBABILITY`.

Replay must give one-step transitions (`update_horizon = 1`): an n-step transition would need the
product of n policy ratios, which the batch does not carry. The first state of an episode never
appears as s' in replay, so its ratio is learned only through generalisation.

Defaults and their sources. The paper's agent is C51 (value_head='c51'). The experimental section
of the paper could not be retrieved from this workplace's reference store, so the numbers below
are not checked against it: gamma_hat = 0.99 follows the discounted COP-TD implementation written
with Gelada as advisor (github.com/gbg141/dopamine, covariate_shift.gin, "Hyperparameters follow
the settings from Gelada et al.": ratio_discount_factor = 0.99); normalization_weight = 0 because
the paper's Atari evaluation is of discounted COP-TD, which it found better behaved than the soft
normalisation penalty (abstract); ratio_clip = 5 is that implementation's default upper end of the
ratio (ratio_cmax = 5.); ratio_loss_weight = 1 weighs the squared ratio error like the value loss
(that implementation's 0.02 multiplies a different, categorical ratio loss).
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence

import chex
import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

from accumbens.agents import losses, networks
from accumbens.agents.base import Agent, Batch, PRNGKey
from accumbens.agents.dqn import DQNState, apply_gradients, create_optimizer, make_dqn
from accumbens.agents.rainbow import PRIORITY_EPSILON, RainbowAgent, categorical_target, cross_entropy, make_rainbow

MIN_BEHAVIOUR_PROBABILITY = 1e-3
_SOFTPLUS_INVERSE_OF_ONE = math.log(math.e - 1.0)
VALUE_HEADS = ("c51", "dqn")


class Identity(nn.Module):
    """Returns its input: the 'torso' of a value head that is applied to features."""

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return x


class COPTDOutput(NamedTuple):
    """value: the value head's output (Q-values [..., A], or a `RainbowOutput`); ratio: c(s) [...] >= 0."""

    value: Any
    ratio: jnp.ndarray


class COPTDNetwork(nn.Module):
    """`torso -> (value head, ratio head)`. x: [..., *obs_shape, stack] -> COPTDOutput.

    `value_head` is a `QNetwork` or `RainbowNetwork` whose own torso is `Identity()`, so it reads
    the shared features. The ratio head: `ratio_hidden_units` ReLU layers, then softplus(dense(1)).
    """

    torso: nn.Module
    value_head: nn.Module
    ratio_hidden_units: Sequence[int] = ()

    @nn.compact
    def __call__(self, x: jnp.ndarray, deterministic: bool = False) -> COPTDOutput:
        features = self.torso(x)
        if isinstance(self.value_head, networks.RainbowNetwork):
            value = self.value_head(features, deterministic)
        else:
            value = self.value_head(features)
        h = features
        init = nn.initializers.xavier_uniform()
        for i, units in enumerate(self.ratio_hidden_units):
            h = nn.relu(nn.Dense(units, kernel_init=init, name=f"ratio_hidden_{i}")(h))
        raw = nn.Dense(
            1, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.constant(_SOFTPLUS_INVERSE_OF_ONE), name="ratio"
        )(h)
        return COPTDOutput(value=value, ratio=nn.softplus(raw[..., 0]))

    # What make_rainbow reads from a C51 network (valid when value_head is a RainbowNetwork).
    def support(self) -> jnp.ndarray:
        return self.value_head.support()

    @property
    def noisy(self) -> bool:
        return bool(getattr(self.value_head, "noisy", False))


class ValueView(COPTDNetwork):
    """The same network (same parameters) returning only the value head's output.

    DQN's and Rainbow's pure `init` and `act` run unchanged on it: this is how COP-TD reuses them.
    """

    def __call__(self, x: jnp.ndarray, deterministic: bool = False):
        return super().__call__(x, deterministic).value


def epsilon_greedy_probability(greedy_action: jnp.ndarray, action: jnp.ndarray, epsilon, num_actions: int) -> jnp.ndarray:
    """Probability that epsilon-greedy (greedy action `greedy_action`) takes `action`: eps/A + (1-eps)[a = greedy]."""
    return epsilon / num_actions + (1.0 - epsilon) * (action == greedy_action).astype(jnp.float32)


def cop_td_target(policy_ratio: jnp.ndarray, bootstrap_ratio: jnp.ndarray, gamma_hat: float) -> jnp.ndarray:
    """The discounted COP-TD target (1 - gamma_hat) + gamma_hat * policy_ratio * bootstrap_ratio, gradient stopped."""
    return jax.lax.stop_gradient((1.0 - gamma_hat) + gamma_hat * policy_ratio * bootstrap_ratio)


def make_cop_td(
    network: COPTDNetwork,
    optimizer: optax.GradientTransformation,
    *,
    value_head: str = "c51",
    num_actions: int,
    gamma_hat: float = 0.99,
    ratio_loss_weight: float = 1.0,
    normalization_weight: float = 0.0,
    ratio_clip: float = 5.0,
    ratio_weighting: bool = True,
    target_epsilon: float = 0.001,
    double_dqn: bool = False,
    loss_type: str = "huber",
    noise_off_in_eval: bool = True,
    noisy_epsilon: float = 0.0,
    epsilon_train: float = 0.01,
    epsilon_eval: float = 0.001,
    epsilon_decay_period: int = 250_000,
    epsilon_warmup_steps: int = 20_000,
    target_update_period: int = 8_000,
    update_period: int = 4,
) -> Agent:
    """Builds discounted COP-TD's pure `init`, `act` and `update` around a `COPTDNetwork`.

    `init` and `act` are DQN's (value_head='dqn') or Rainbow's ('c51') run on the network's
    `ValueView`; the state is `DQNState` and the optimizer step and target syncs are DQN's
    `apply_gradients`. `policy` gives the acting probabilities (so recorded datasets carry mu).
    `update` is one gradient step on the combined loss (module docstring);
    metrics: loss, value_loss, ratio_loss, normalization (batch mean c(s') - 1), ratio_mean
    (mean weight c(s) before clipping), q_mean, priorities (as DQN's / Rainbow's).
    """
    if value_head not in VALUE_HEADS:
        raise ValueError(f"unknown value_head {value_head!r}; valid: {list(VALUE_HEADS)}")
    if not 0.0 <= gamma_hat < 1.0:
        raise ValueError(f"gamma_hat must be in [0, 1) (discounted COP-TD), got {gamma_hat}")
    if ratio_clip <= 0.0:
        raise ValueError(f"ratio_clip must be positive, got {ratio_clip}")
    if not 0.0 <= target_epsilon <= 1.0:
        raise ValueError(f"target_epsilon must be in [0, 1], got {target_epsilon}")
    view = ValueView(torso=network.torso, value_head=network.value_head, ratio_hidden_units=network.ratio_hidden_units)
    epsilon_kwargs = dict(
        epsilon_train=epsilon_train,
        epsilon_eval=epsilon_eval,
        epsilon_decay_period=epsilon_decay_period,
        epsilon_warmup_steps=epsilon_warmup_steps,
        target_update_period=target_update_period,
        update_period=update_period,
    )
    if value_head == "c51":
        base = make_rainbow(view, optimizer, double_dqn=double_dqn, noise_off_in_eval=noise_off_in_eval, noisy_epsilon=noisy_epsilon, **epsilon_kwargs)
        support = network.support()
        noisy = network.noisy
    else:
        base = make_dqn(view, optimizer, double_dqn=double_dqn, loss_type=loss_type, **epsilon_kwargs)
        elementwise_loss = losses.regression_loss(loss_type)
        noisy = False

    def apply(params, observation, key: PRNGKey) -> COPTDOutput:
        if noisy:
            return network.apply(params, observation, rngs={"noise": key})
        return network.apply(params, observation)

    def q_values(value) -> jnp.ndarray:
        return value.q_values if value_head == "c51" else value

    def behaviour_probability(state: DQNState, batch: Batch, greedy_action: jnp.ndarray) -> jnp.ndarray:
        """mu(a|s): the batch's record where it has one, else the current acting policy's."""
        if value_head == "c51" and noisy:
            epsilon = jnp.asarray(noisy_epsilon, jnp.float32)
        else:
            epsilon = losses.linearly_decaying_epsilon(state.env_steps, epsilon_decay_period, epsilon_warmup_steps, epsilon_train)
        mu = epsilon_greedy_probability(greedy_action, batch.action, epsilon, num_actions)
        recorded = getattr(batch, "behaviour_probability", None)
        if recorded is not None:
            recorded = jnp.asarray(recorded, jnp.float32)
            mu = jnp.where(jnp.isfinite(recorded), recorded, mu)
        return jnp.maximum(mu, MIN_BEHAVIOUR_PROBABILITY)

    def loss_fn(params, state: DQNState, batch: Batch, target_next, target_ratio_s, keys):
        online_key, select_key = keys
        batch_size = batch.action.shape[0]
        both = jnp.concatenate([batch.observation, batch.next_observation], axis=0)
        out = apply(params, both, online_key)
        value_s = jax.tree.map(lambda x: x[:batch_size], out.value)
        value_next = jax.tree.map(lambda x: x[batch_size:], out.value)
        ratio_s, ratio_next = out.ratio[:batch_size], out.ratio[batch_size:]
        action = batch.action.astype(jnp.int32)

        # Per-transition value loss: C51's or DQN's, exactly as those agents compute it.
        reward = batch.reward.astype(jnp.float32)
        discount = batch.discount.astype(jnp.float32)
        if value_head == "c51":
            if double_dqn:
                selector = q_values(apply(params, batch.next_observation, select_key).value) if noisy else value_next.q_values
            else:
                selector = target_next.q_values
            target = categorical_target(reward, discount, target_next.probabilities, jax.lax.stop_gradient(selector), support)
            chosen_logits = jnp.take_along_axis(value_s.logits, action[:, None, None], axis=1)[:, 0]
            per_sample = cross_entropy(target, chosen_logits)
        else:
            next_online = jax.lax.stop_gradient(value_next) if double_dqn else None
            target = losses.q_learning_target(reward, discount, target_next, next_online)
            chosen = jnp.take_along_axis(value_s, action[:, None], axis=-1)[:, 0]
            per_sample = elementwise_loss(target, chosen)
        q_s = jax.lax.stop_gradient(q_values(value_s))
        chosen_q = jnp.take_along_axis(q_s, action[:, None], axis=-1)[:, 0]

        # Discounted COP-TD: pi / mu for the sampled action, the backward bootstrap, the penalty.
        greedy = jnp.argmax(q_s, axis=-1)
        pi = epsilon_greedy_probability(greedy, action, target_epsilon, num_actions)
        policy_ratio = pi / behaviour_probability(state, batch, greedy)
        bootstrap = jnp.clip(target_ratio_s, 0.0, ratio_clip)
        ratio_target = cop_td_target(policy_ratio, bootstrap, gamma_hat)
        ratio_td = 0.5 * jnp.mean(batch.weight * (ratio_next - ratio_target) ** 2)
        normalization = jnp.mean(ratio_next) - 1.0
        ratio_loss = ratio_td + normalization_weight * normalization**2

        if ratio_weighting:
            correction = jax.lax.stop_gradient(jnp.clip(ratio_s, 0.0, ratio_clip))
        else:
            correction = jnp.ones_like(ratio_s)
        value_loss = jnp.mean(batch.weight * correction * per_sample)
        loss = value_loss + ratio_loss_weight * ratio_loss
        aux = dict(
            value_loss=value_loss,
            ratio_loss=ratio_loss,
            normalization=normalization,
            ratio_mean=jnp.mean(ratio_s),
            policy_ratio_mean=jnp.mean(policy_ratio),
            q_mean=jnp.mean(chosen_q),
            per_sample=per_sample,
        )
        return loss, aux

    def update(state: DQNState, batch: Batch, rng: PRNGKey) -> tuple[DQNState, dict]:
        chex.assert_rank([batch.action, batch.reward, batch.discount, batch.weight], 1)
        chex.assert_equal_shape([batch.action, batch.reward, batch.discount, batch.weight])
        online_key, target_key, select_key = jax.random.split(rng, 3)
        batch_size = batch.action.shape[0]
        both = jnp.concatenate([batch.observation, batch.next_observation], axis=0)
        target_out = apply(state.target_params, both, target_key)
        target_ratio_s = jax.lax.stop_gradient(target_out.ratio[:batch_size])
        target_next = jax.tree.map(lambda x: jax.lax.stop_gradient(x[batch_size:]), target_out.value)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state, batch, target_next, target_ratio_s, (online_key, select_key)
        )
        new_state = apply_gradients(state, grads, optimizer, target_update_period, update_period)
        per_sample = jax.lax.stop_gradient(aux.pop("per_sample"))
        if value_head == "c51":
            priorities = per_sample + PRIORITY_EPSILON
        else:
            priorities = jnp.sqrt(per_sample + 1e-10)
        metrics = {"loss": loss, "priorities": priorities, **aux}
        return new_state, metrics

    # Acting and its probabilities are the base agent's (epsilon-greedy on the value head).
    return Agent(init=base.init, act=base.act, update=update, policy=base.policy)


@gin.configurable
class COPTDAgent(RainbowAgent):
    """The host-runner discounted COP-TD agent: Rainbow/DQN's shell with the COP-TD core.

    COP-TD arguments (module docstring for the update and the sources of the defaults):
      value_head: 'c51' (the paper's agent; Rainbow's head and loss with the switches below) or
        'dqn' (Q-values with `loss_type`).
      gamma_hat: the ratio's discount, in [0, 1).
      ratio_loss_weight: weight of the ratio loss against the value loss.
      normalization_weight: weight of the soft normalisation penalty (E_mu[c] - 1)^2.
      ratio_clip: c is clipped to [0, ratio_clip] where it is used (bootstrap and loss weight).
      ratio_weighting: weight the value loss by c (False: the uncorrected agent, for comparisons).
      target_epsilon: epsilon of the target policy pi; None means `epsilon_eval`.
      ratio_hidden_units: dense layers of the ratio head before its output.
      loss_type: 'huber' or 'mse', for value_head='dqn'.
    Requires `update_horizon = 1`. The rest are `RainbowAgent`'s; defaults are the C51 settings
    (1-step, uniform replay, no double/dueling/noisy).
    """

    def __init__(
        self,
        num_actions: int,
        observation_shape: Sequence[int],
        observation_dtype: np.dtype = np.uint8,
        *,
        value_head: str = "c51",
        gamma_hat: float = 0.99,
        ratio_loss_weight: float = 1.0,
        normalization_weight: float = 0.0,
        ratio_clip: float = 5.0,
        ratio_weighting: bool = True,
        target_epsilon: Optional[float] = None,
        ratio_hidden_units: Sequence[int] = (),
        loss_type: str = "huber",
        num_atoms: int = 51,
        vmax: float = 10.0,
        vmin: Optional[float] = None,
        double_dqn: bool = False,
        dueling: bool = False,
        noisy: bool = False,
        hidden_units: Sequence[int] = (),
        noisy_sigma_zero: float = 0.5,
        noise_off_in_eval: bool = True,
        noisy_epsilon: float = 0.0,
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
        optimizer: Callable[[], optax.GradientTransformation] = create_optimizer,
        batch_size: int = 32,
        replay_scheme: str = "uniform",
        seed: int = 0,
    ):
        if update_horizon != 1:
            raise ValueError(
                f"COP-TD needs one-step transitions (update_horizon = 1), got {update_horizon}: an n-step "
                "transition's ratio would need the product of n policy ratios."
            )
        if value_head not in VALUE_HEADS:
            raise ValueError(f"unknown value_head {value_head!r}; valid: {list(VALUE_HEADS)}")
        self.value_head = value_head
        self.cop_td_kwargs = dict(
            gamma_hat=float(gamma_hat),
            ratio_loss_weight=float(ratio_loss_weight),
            normalization_weight=float(normalization_weight),
            ratio_clip=float(ratio_clip),
            ratio_weighting=bool(ratio_weighting),
            target_epsilon=float(epsilon_eval if target_epsilon is None else target_epsilon),
        )
        self.ratio_hidden_units = tuple(int(u) for u in ratio_hidden_units)
        self.value_loss_type = loss_type
        super().__init__(
            num_actions,
            observation_shape,
            observation_dtype,
            num_atoms=num_atoms,
            vmax=vmax,
            vmin=vmin,
            double_dqn=double_dqn,
            dueling=dueling,
            noisy=noisy,
            hidden_units=hidden_units,
            noisy_sigma_zero=noisy_sigma_zero,
            noise_off_in_eval=noise_off_in_eval,
            noisy_epsilon=noisy_epsilon,
            stack_size=stack_size,
            torso=torso,
            gamma=gamma,
            update_horizon=update_horizon,
            min_replay_history=min_replay_history,
            update_period=update_period,
            target_update_period=target_update_period,
            epsilon_train=epsilon_train,
            epsilon_eval=epsilon_eval,
            epsilon_decay_period=epsilon_decay_period,
            optimizer=optimizer,
            batch_size=batch_size,
            replay_scheme=replay_scheme,
            seed=seed,
        )

    def _build_agent(self, *, torso, num_actions, optimizer, epsilon_kwargs, target_update_period, update_period) -> Agent:
        if self.value_head == "c51":
            head = networks.RainbowNetwork(
                torso=Identity(),
                num_actions=num_actions,
                num_atoms=self.num_atoms,
                vmax=self.vmax,
                vmin=self.vmin,
                hidden_units=self.hidden_units,
                dueling=self.dueling,
                noisy=self.noisy,
                noisy_sigma_zero=self.noisy_sigma_zero,
            )
        else:
            head = networks.QNetwork(torso=Identity(), num_actions=num_actions)
        network = COPTDNetwork(torso=torso, value_head=head, ratio_hidden_units=self.ratio_hidden_units)
        return make_cop_td(
            network,
            optimizer,
            value_head=self.value_head,
            num_actions=num_actions,
            double_dqn=self.double_dqn,
            loss_type=self.value_loss_type,
            noise_off_in_eval=self.noise_off_in_eval,
            noisy_epsilon=self.noisy_epsilon,
            target_update_period=target_update_period,
            update_period=update_period,
            **self.cop_td_kwargs,
            **epsilon_kwargs,
        )
