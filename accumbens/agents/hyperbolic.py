"""Hyperbolic discounting and learning over multiple horizons (Fedus, Gelada, Bengio, Bellemare,
Larochelle 2019, "Hyperbolic Discounting and Learning over Multiple Horizons", arXiv:1902.06865),
as an extension of C51/Rainbow.

Idea. The hyperbolic discount 1 / (1 + k t) is an integral of exponential discounts:

    1 / (1 + k t) = integral_0^1 x^(k t) dx,

so the hyperbolically discounted value is the integral over x of the value learned with the
exponential discount gamma = x^k. One network with `num_gammas` C51 heads on a shared torso
learns Q_gamma_i for a grid of discounts by ordinary (distributional) TD learning, each head with
its own discount and its own argmax; a Riemann sum over the heads estimates the hyperbolic
Q-value.

The grid and the weights are those of the paper's public code (google-research,
`hyperbolic_discount/agent_utils.py`: `compute_eval_gamma_interval`, `integrate_q_values`; read
for the numbers, not copied):

    b    = exp(ln(1 - gamma_max^(1/k)) / N)          so that (1 - b^N)^k = gamma_max
    x_i  = 1 - b^i,           i = 0 .. N-1            integration points ("eval gammas")
    head i learns with discount gamma_i = x_i^k       (head 0: x_0 = 0, the immediate reward)
    lower sum: w_i = x_{i+1} - x_i with x_N = 1       (left Riemann sum of the increasing x^(kt))
    upper sum: w_0 = 0, w_i = x_i - x_{i-1}           (right sum over [0, x_{N-1}])

The paper's runs use N = 10, k = 0.01, gamma_max = 0.99 (`configs/hyperbolic_c51_agent.gin`).
With those values the grid covers only x <= gamma_max^(1/k) = 0.366 and the last weight,
1 - x_{N-1} = 0.66, multiplies the largest head, so long horizons are underestimated: at
t = 100 the lower sum is 0.27 where 1 / (1 + k t) = 0.5. `riemann_discount(t, ...)` gives the
sum's effective discount for any t, which is how the tests and the Pathworld benchmark state this
truncation error.

One update (batch of B transitions, per head h, all heads at once):
    a*_h     = argmax_a Q_h(s', a)          target net, or online net with double DQN
    target_h = Proj_z(r + gamma_h (1 - terminal) z, p_h,target(s', a*_h))
    loss     = mean_i w_i mean_h CE(target_h,i, p_h,online(s_i, a_i))
i.e. the mean of the heads' cross-entropies (the paper's code divides the heads' sum by N).
Priorities are `mean_h CE_h + 1e-10` (raised to alpha by the prioritized buffer); the paper's
code stores mean_h sqrt(CE_h + 1e-10) instead, the same with one head.

Acting (`acting_policy`): 'hyperbolic' acts greedily on sum_h w_h Q_h (the paper's default);
'largest_gamma' on the largest gamma's head, which makes the other heads an auxiliary task:
the paper's "multi-horizon" agent (`configs/hyperbolic/minatar_multi_horizon.gin`).

Limitation: the shared `Batch` carries one n-step return, discounted with the replay's gamma.
The per-head n-step returns sum_k gamma_h^k r_k need the individual rewards, which the batch does
not carry, so with more than one head `update_horizon` must be 1 (the paper's configs use 3); then
head h's target is exactly r + gamma_h (1 - terminal) z. With one head the agent is C51/Rainbow
with discount `gamma_max` and any `update_horizon`: it uses the batch's reward and discount as
they are (tested against `rainbow.make_rainbow`). The paper's code instead raises the single
head's gamma to the power k; here one head means the ordinary exponential agent.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import chex
import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

from accumbens.agents import losses, networks
from accumbens.agents.base import Agent, Batch, PRNGKey
from accumbens.agents.dqn import DQNState, apply_gradients, create_optimizer, epsilon_greedy, initial_state
from accumbens.agents.rainbow import PRIORITY_EPSILON, RainbowAgent, categorical_target, cross_entropy

INTEGRAL_ESTIMATES = ("lower", "upper")
ACTING_POLICIES = ("hyperbolic", "largest_gamma")


# ----- the grid of discounts and the Riemann-sum weights ------------------------------------------
def integration_points(gamma_max: float, num_gammas: int, hyperbolic_exponent: float) -> np.ndarray:
    """The points x_i = 1 - b^i, i = 0..N-1, with b = exp(ln(1 - gamma_max^(1/k)) / N) (float64 [N]).

    Fedus et al.'s grid (google-research `hyperbolic_discount/agent_utils.py`,
    `compute_eval_gamma_interval`): geometric in 1 - x, so that the N+1-th point
    x_N = 1 - b^N = gamma_max^(1/k) is where the largest learned discount would reach gamma_max.
    One head (N = 1) is the plain exponential agent: the single point is gamma_max^(1/k), so the
    head learns gamma_max.
    """
    _check_grid(gamma_max, num_gammas, hyperbolic_exponent)
    top = gamma_max ** (1.0 / hyperbolic_exponent)
    if num_gammas == 1:
        return np.array([top], np.float64)
    b = math.exp(math.log(1.0 - top) / num_gammas)
    return 1.0 - b ** np.arange(num_gammas, dtype=np.float64)


def head_gammas(gamma_max: float, num_gammas: int, hyperbolic_exponent: float) -> np.ndarray:
    """The discounts the heads learn, gamma_i = x_i^k (float64 [N], increasing; head 0 is 0)."""
    return integration_points(gamma_max, num_gammas, hyperbolic_exponent) ** hyperbolic_exponent


def riemann_weights(points: np.ndarray, integral_estimate: str = "lower") -> np.ndarray:
    """Weights w_i of the Riemann sum sum_i w_i Q_{x_i^k} that estimates integral_0^1 Q_{x^k} dx.

    'lower': w_i = x_{i+1} - x_i with x_N = 1 (each head's value held over [x_i, x_{i+1}]; the
      weights sum to 1 - x_0 = 1). 'upper': w_0 = 0, w_i = x_i - x_{i-1} (each head's value held
      over [x_{i-1}, x_i]; covers [0, x_{N-1}] only). As google-research's `integrate_q_values`.
      One point: weight 1 (the exponential agent).
    """
    points = np.asarray(points, np.float64)
    if integral_estimate not in INTEGRAL_ESTIMATES:
        raise ValueError(f"unknown integral_estimate {integral_estimate!r}; valid: {list(INTEGRAL_ESTIMATES)}")
    if points.ndim != 1 or len(points) == 0:
        raise ValueError(f"points must be a non-empty 1-D array, got shape {points.shape}")
    if len(points) == 1:
        return np.ones(1, np.float64)
    if integral_estimate == "lower":
        return np.diff(np.append(points, 1.0))
    return np.concatenate([[0.0], np.diff(points)])


def riemann_discount(
    t: np.ndarray,
    gamma_max: float,
    num_gammas: int,
    hyperbolic_exponent: float,
    integral_estimate: str = "lower",
) -> np.ndarray:
    """The effective discount of a reward `t` steps ahead under the Riemann sum: sum_i w_i gamma_i^t.

    With exact heads (Q_gamma_i of a reward r at delay t is r gamma_i^t) the estimate of r / (1 + k t)
    is r times this, so `riemann_discount(t) - 1 / (1 + k t)` is the grid's truncation error.
    t: any shape (float64 result of the same shape).
    """
    points = integration_points(gamma_max, num_gammas, hyperbolic_exponent)
    weights = riemann_weights(points, integral_estimate)
    gammas = points**hyperbolic_exponent
    t = np.asarray(t, np.float64)
    return np.sum(weights * gammas ** t[..., None], axis=-1)  # 0^0 = 1: head 0 counts at t = 0


def _check_grid(gamma_max: float, num_gammas: int, hyperbolic_exponent: float) -> None:
    if not 0.0 < gamma_max < 1.0:
        raise ValueError(f"gamma_max must be in (0, 1), got {gamma_max}")
    if int(num_gammas) != num_gammas or num_gammas < 1:
        raise ValueError(f"num_gammas must be a positive integer, got {num_gammas}")
    if not hyperbolic_exponent > 0.0:
        raise ValueError(f"the hyperbolic exponent k must be > 0, got {hyperbolic_exponent}")


# ----- the multi-head network -----------------------------------------------------------------------
def split_heads(out: networks.RainbowOutput, num_gammas: int) -> networks.RainbowOutput:
    """Views a `RainbowNetwork` output over num_gammas * A "actions" as [..., H, A(, N)] heads.

    The network is C51's `RainbowNetwork` with `num_actions = H * A`: its final dense layer is the
    H heads' layers side by side (head-major), sharing the torso and hidden layers, so one head is
    exactly C51's network with the same parameter tree.
    """
    *batch, wide, atoms = out.logits.shape
    actions = wide // num_gammas
    return networks.RainbowOutput(
        q_values=out.q_values.reshape(tuple(batch) + (num_gammas, actions)),
        logits=out.logits.reshape(tuple(batch) + (num_gammas, actions, atoms)),
        probabilities=out.probabilities.reshape(tuple(batch) + (num_gammas, actions, atoms)),
    )


def head_rewards_and_discounts(batch: Batch, gammas: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Per-head rewards and discounts [H, B] for 1-step batches; with one head, the batch's own.

    One head: (reward, discount) as replay wrote them (any n-step horizon; C51's target).
    Several heads: reward r and discount gamma_h where the transition did not terminate
    (batch.discount > 0), else 0. Exact only for `update_horizon = 1` (see the module docstring).
    """
    reward = batch.reward.astype(jnp.float32)
    discount = batch.discount.astype(jnp.float32)
    if gammas.shape[0] == 1:
        return reward[None], discount[None]
    alive = (discount > 0).astype(jnp.float32)
    return jnp.broadcast_to(reward, (gammas.shape[0],) + reward.shape), gammas[:, None] * alive[None, :]


def make_hyperbolic(
    network: networks.RainbowNetwork,
    optimizer: optax.GradientTransformation,
    *,
    gammas: Sequence[float],
    weights: Sequence[float],
    acting_policy: str = "hyperbolic",
    double_dqn: bool = False,
    noise_off_in_eval: bool = True,
    noisy_epsilon: float = 0.0,
    epsilon_train: float = 0.01,
    epsilon_eval: float = 0.001,
    epsilon_decay_period: int = 250_000,
    epsilon_warmup_steps: int = 20_000,
    target_update_period: int = 8_000,
    update_period: int = 4,
) -> Agent:
    """Builds the pure `init`, `act`, `update` of the multi-head (hyperbolic) C51 agent.

    network: a `RainbowNetwork` whose `num_actions` is `len(gammas) * A` (see `split_heads`);
    gammas: [H] the heads' discounts, increasing (the largest last); weights: [H] Riemann weights.
    The state, optimizer step and target syncs are DQN's; epsilon-greedy/noisy acting as Rainbow's,
    on the hyperbolic Q-values sum_h w_h Q_h or on the last (largest gamma) head.

    update: metrics `loss` (weighted mean over the batch of the heads' mean cross-entropy),
    `q_mean` (mean acting Q-value of the taken actions) and `priorities` ([B], mean cross-entropy
    + 1e-10).
    """
    if acting_policy not in ACTING_POLICIES:
        raise ValueError(f"unknown acting_policy {acting_policy!r}; valid: {list(ACTING_POLICIES)}")
    num_gammas = len(gammas)
    if len(weights) != num_gammas or num_gammas < 1:
        raise ValueError(f"need one weight per gamma, got {len(weights)} weights for {num_gammas} gammas")
    if network.num_actions % num_gammas:
        raise ValueError(f"network.num_actions ({network.num_actions}) must be num_gammas ({num_gammas}) x actions")
    if network.dueling and num_gammas > 1:
        raise ValueError("dueling heads are not supported with num_gammas > 1 (one value stream per head is needed)")
    gammas_arr = jnp.asarray(np.asarray(gammas, np.float64), jnp.float32)
    weights_arr = jnp.asarray(np.asarray(weights, np.float64), jnp.float32)
    support = network.support()
    noisy = network.noisy

    def apply(params, observation, key: PRNGKey, deterministic: bool = False) -> networks.RainbowOutput:
        if not noisy:
            out = network.apply(params, observation)
        elif deterministic:
            out = network.apply(params, observation, deterministic=True)
        else:
            out = network.apply(params, observation, rngs={"noise": key})
        return split_heads(out, num_gammas)

    def acting_values(q_values: jnp.ndarray) -> jnp.ndarray:
        """[..., H, A] -> [..., A]: the Riemann sum or the largest gamma's head."""
        if acting_policy == "largest_gamma":
            return q_values[..., -1, :]
        return jnp.sum(weights_arr[:, None] * q_values, axis=-2)

    def init(rng: PRNGKey, observation_shape: Sequence[int], num_actions: int) -> DQNState:
        del num_actions  # fixed by the network
        param_key, noise_key = jax.random.split(rng)
        params = network.init(
            {"params": param_key, "noise": noise_key}, jnp.zeros(tuple(observation_shape), jnp.float32)
        )
        return initial_state(params, optimizer)

    def act(state: DQNState, observation: jnp.ndarray, rng: PRNGKey, training: bool) -> jnp.ndarray:
        epsilon_key, noise_key = jax.random.split(rng)
        if training:
            if noisy:
                epsilon = jnp.asarray(noisy_epsilon, jnp.float32)
            else:
                epsilon = losses.linearly_decaying_epsilon(
                    state.env_steps, epsilon_decay_period, epsilon_warmup_steps, epsilon_train
                )
        else:
            epsilon = epsilon_eval
        deterministic = (not training) and noise_off_in_eval
        q_values = apply(state.params, observation, noise_key, deterministic).q_values
        return epsilon_greedy(epsilon_key, acting_values(q_values), epsilon)

    def loss_fn(params, targets, batch: Batch, online_key: PRNGKey):
        out = apply(params, batch.observation, online_key)  # logits [B, H, A, N]
        action = batch.action.astype(jnp.int32)
        chosen_logits = jnp.take_along_axis(out.logits, action[:, None, None, None], axis=2)[:, :, 0]  # [B, H, N]
        per_head = cross_entropy(jnp.moveaxis(targets, 0, 1), chosen_logits)  # [B, H]
        per_sample = jnp.mean(per_head, axis=1)
        chosen_q = jnp.take_along_axis(acting_values(out.q_values), action[:, None], axis=1)[:, 0]
        return jnp.mean(batch.weight * per_sample), (per_sample, chosen_q)

    def update(state: DQNState, batch: Batch, rng: PRNGKey) -> tuple[DQNState, dict]:
        chex.assert_rank([batch.action, batch.reward, batch.discount, batch.weight], 1)
        chex.assert_equal_shape([batch.action, batch.reward, batch.discount, batch.weight])
        online_key, target_key, select_key = jax.random.split(rng, 3)
        next_target = apply(state.target_params, batch.next_observation, target_key)
        if double_dqn:
            selector = apply(state.params, batch.next_observation, select_key).q_values
        else:
            selector = next_target.q_values
        rewards, discounts = head_rewards_and_discounts(batch, gammas_arr)  # [H, B]
        targets = jax.vmap(categorical_target, in_axes=(0, 0, 1, 1, None))(
            rewards, discounts, next_target.probabilities, selector, support
        )  # [H, B, N], each head with its own discount and its own argmax
        (loss, (per_sample, chosen_q)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, targets, batch, online_key
        )
        new_state = apply_gradients(state, grads, optimizer, target_update_period, update_period)
        metrics = {
            "loss": loss,
            "q_mean": jnp.mean(chosen_q),
            "priorities": jax.lax.stop_gradient(per_sample) + PRIORITY_EPSILON,
        }
        return new_state, metrics

    return Agent(init=init, act=act, update=update)


@gin.configurable
class HyperbolicAgent(RainbowAgent):
    """The host-runner hyperbolic (multi-horizon) C51 agent: Rainbow's shell with `make_hyperbolic`.

    Hyperbolic arguments (defaults: the paper's, google-research
    `hyperbolic_discount/configs/hyperbolic_c51_agent.gin`):
      num_gammas: heads N (10).
      gamma_max: the largest discount the grid aims at (0.99); also the replay's discount.
      hyperbolic_exponent: k in 1 / (1 + k t) (0.01).
      integral_estimate: 'lower' (the paper's) or 'upper' Riemann sum.
      acting_policy: 'hyperbolic' (act on the Riemann sum, the paper's default) or
        'largest_gamma' (the multi-horizon auxiliary-task agent).
    The rest are `RainbowAgent`'s (the paper's C51 settings are 51 atoms on [-10, 10], Adam lr
    2.5e-4, eps 3.125e-4, uniform replay). `update_horizon` must be 1 when `num_gammas > 1` (the
    paper uses 3; see the module docstring); `dueling` needs `num_gammas = 1`. There is no
    separate `gamma`: the replay discounts with `gamma_max`.
    """

    def __init__(
        self,
        num_actions: int,
        observation_shape: Sequence[int],
        observation_dtype: np.dtype = np.uint8,
        *,
        num_gammas: int = 10,
        gamma_max: float = 0.99,
        hyperbolic_exponent: float = 0.01,
        integral_estimate: str = "lower",
        acting_policy: str = "hyperbolic",
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
        if acting_policy not in ACTING_POLICIES:
            raise ValueError(f"unknown acting_policy {acting_policy!r}; valid: {list(ACTING_POLICIES)}")
        if num_gammas > 1 and update_horizon != 1:
            raise ValueError(
                f"HyperbolicAgent with num_gammas={num_gammas} needs update_horizon=1, got {update_horizon}: "
                "replay's batch carries one n-step return discounted with a single gamma, so per-head "
                "n-step returns cannot be formed. Bind HyperbolicAgent.update_horizon = 1 (or use num_gammas = 1)."
            )
        self.num_gammas = int(num_gammas)
        self.gamma_max = float(gamma_max)
        self.hyperbolic_exponent = float(hyperbolic_exponent)
        self.integral_estimate = integral_estimate
        self.acting_policy = acting_policy
        points = integration_points(self.gamma_max, self.num_gammas, self.hyperbolic_exponent)
        self.gammas = points**self.hyperbolic_exponent
        self.weights = riemann_weights(points, integral_estimate)
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
            gamma=self.gamma_max,
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
        network = networks.RainbowNetwork(
            torso=torso,
            num_actions=self.num_gammas * num_actions,
            num_atoms=self.num_atoms,
            vmax=self.vmax,
            vmin=self.vmin,
            hidden_units=self.hidden_units,
            dueling=self.dueling,
            noisy=self.noisy,
            noisy_sigma_zero=self.noisy_sigma_zero,
        )
        return make_hyperbolic(
            network,
            optimizer,
            gammas=self.gammas,
            weights=self.weights,
            acting_policy=self.acting_policy,
            double_dqn=self.double_dqn,
            noise_off_in_eval=self.noise_off_in_eval,
            noisy_epsilon=self.noisy_epsilon,
            target_update_period=target_update_period,
            update_period=update_period,
            **epsilon_kwargs,
        )
