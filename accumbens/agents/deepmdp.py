"""DeepMDP auxiliary losses (Gelada, Kumar, Buckman, Nachum & Bellemare, ICML 2019) on C51 or DQN.

The agent's representation phi(s) -- the output of the network's torso, which for the paper's
Atari agent is the last convolutional layer -- is treated as the state of a latent MDP with two
learned models on top of it:

  reward model      R(phi(s), a)      -> r              [B, A] outputs, the taken action's is used
  transition model  P(phi(s), a)      -> phi(s')        [B, A, d] outputs, deterministic

trained by two losses added to the agent's own TD loss (the paper's eqs. for L_R and L_P with a
deterministic latent transition, where the Wasserstein-1 distance between Dirac measures is the
Euclidean distance):

  L_R  = mean_i ( R(phi(s_i), a_i) - r_i )^2
  L_P  = mean_i || P(phi(s_i), a_i) - phi(s'_i) ||_2           ('l2'; 'squared_l2': the square)

The theory's bounds need Lipschitz models, so a gradient penalty (after Gulrajani et al. 2017, here on
the two latent models) is added: at points x = u phi(s_i) + (1 - u) phi(s_j) between
latent states of the batch (u ~ U[0, 1], j a shuffled partner, latents gradient-stopped),

  GP   = mean_i max(0, || d/dx <f(x_i), v_i> || - 1)^2        f = R(., a_i) and P(., a_i)

with v_i a random unit vector over the model's outputs (for the scalar reward v_i = 1): the
norm of J^T v is a Monte Carlo probe of the Jacobian's operator norm, whose supremum over v is
the Lipschitz constant. 'two_sided' penalises (||.|| - 1)^2 as Gulrajani et al. do. The total is

  L = value_loss_weight L_value + reward_loss_weight L_R + transition_loss_weight L_P
      + gradient_penalty_weight GP

and one optimizer step updates the network and both models together.

Defaults and what they rest on. The paper's Atari agent is Dopamine's C51 with the auxiliary
losses on the last convolutional layer's output (as the issue and the paper's text state) (7x7x64 with TensorFlow's 'VALID' padding;
11x11x64 here, where the Nature CNN pads 'SAME' as Dopamine's JAX networks do), a convolutional per-action
transition model, and a gradient penalty on the models. The loss weights (1, 1) and the
gradient-penalty coefficient (0.01) are the defaults of the public DeepMDP replication
(github.com/MkuuWaUjinga/DeepMDP-SSL4RL, `deepmdp/garage_mod/algos/dqn.py`: t_loss=1,
r_loss=1, penalty_lambda=0.01), written to reproduce the paper. The paper's appendix, with its own
table of values, could not be opened from this workplace: check these three numbers against
it before quoting a reproduction. The transition model's architecture (one hidden 3x3
convolution) and the one-sided penalty are this implementation's choices and are set in gin.

The transition target phi(s') is gradient-stopped by default ('online_stop_gradient'). Letting
the gradient flow into both sides ('online') lets the encoder shrink every latent towards one
point, which the Euclidean loss rewards: on DonutWorld (`benchmarks/deepmdp_latent.py`) all 32
latent units died within 300 updates, with the transition loss alone or added to C51's, while
either stop-gradient form (online or target network) kept them and recovered the position.

Composition. `make_deepmdp` takes the base agent's network and its value loss (`c51_value_loss`
or `dqn_value_loss`, each built from `rainbow`'s or `losses`' own target functions), reuses the
base agent's `act` (from `make_rainbow` / `make_dqn`) and DQN's optimizer step and target sync
(`dqn.apply_gradients`). Parameters are `{'network': <the base network's>, 'reward_model': ...,
'transition_model': ...}`. With `auxiliary_losses=False` there are no model parameters and
`update` is exactly the base agent's (tested bitwise against `make_rainbow`).

The losses assume one-step transitions (`update_horizon = 1`, as C51): with n-step replay the
batch's reward is an n-step return and next_observation is n steps ahead, which the one-step
models do not predict, so the host agent refuses that combination.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import chex
import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

from accumbens.agents import losses, networks
from accumbens.agents.base import Agent, Batch, PRNGKey
from accumbens.agents.dqn import DQNState, apply_gradients, create_optimizer, initial_state, make_dqn
from accumbens.agents.rainbow import PRIORITY_EPSILON, RainbowAgent, categorical_target, cross_entropy, make_rainbow

PENALTY_TYPES = ("one_sided", "two_sided")
TRANSITION_DISTANCES = ("l2", "squared_l2")
TRANSITION_TARGETS = ("online", "online_stop_gradient", "target")
BASE_AGENTS = ("c51", "dqn")


# ----- latent models ------------------------------------------------------------------------
class RewardModel(nn.Module):
    """R(phi, a): latent `[..., d]` -> one predicted reward per action `[..., A]` (ReLU MLP)."""

    num_actions: int
    hidden_units: Sequence[int] = ()

    @nn.compact
    def __call__(self, latent: jnp.ndarray) -> jnp.ndarray:
        init = nn.initializers.xavier_uniform()
        h = latent
        for units in self.hidden_units:
            h = nn.relu(nn.Dense(units, kernel_init=init)(h))
        return nn.Dense(self.num_actions, kernel_init=init)(h)


class TransitionModel(nn.Module):
    """P(phi, a): latent `[..., d]` -> one predicted next latent per action `[..., A, d]`.

    'dense': ReLU layers of `hidden_units`, then a linear layer to A*d outputs.
    'conv': the latent is viewed as the `latent_shape` (H, W, C) grid it was flattened from (row
      major, as the torsos flatten), passed through 3x3 'SAME' ReLU convolutions of
      `hidden_units` channels and a linear 3x3 convolution to C*A channels, so each action
      predicts the next grid at every location from its neighbourhood (the paper's Atari
      transition model is convolutional on the last conv layer's output).
    """

    num_actions: int
    kind: str = "conv"
    hidden_units: Sequence[int] = (64,)
    latent_shape: Optional[Sequence[int]] = None

    @nn.compact
    def __call__(self, latent: jnp.ndarray) -> jnp.ndarray:
        init = nn.initializers.xavier_uniform()
        batch_shape, d = latent.shape[:-1], latent.shape[-1]
        if self.kind == "dense":
            h = latent
            for units in self.hidden_units:
                h = nn.relu(nn.Dense(units, kernel_init=init)(h))
            out = nn.Dense(self.num_actions * d, kernel_init=init)(h)
            return out.reshape(batch_shape + (self.num_actions, d))
        if self.kind != "conv":
            raise ValueError(f"unknown transition model {self.kind!r}; valid: ['conv', 'dense']")
        if self.latent_shape is None or len(self.latent_shape) != 3 or int(np.prod(self.latent_shape)) != d:
            raise ValueError(
                f"the 'conv' transition model needs latent_shape = (H, W, C) with H*W*C = {d} (the torso's "
                f"output size), got {self.latent_shape}; bind DeepMDPAgent.latent_shape, e.g. (11, 11, 64) for "
                "the Nature CNN's convolutions ('nature_conv' torso, 84x84 frames) or (10, 10, 16) for the MinAtar torso with padding 'SAME'."
            )
        height, width, channels = (int(s) for s in self.latent_shape)
        h = latent.reshape((-1, height, width, channels))
        for units in self.hidden_units:
            h = nn.relu(nn.Conv(units, (3, 3), padding="SAME", kernel_init=init)(h))
        h = nn.Conv(channels * self.num_actions, (3, 3), padding="SAME", kernel_init=init)(h)
        h = h.reshape((-1, height, width, channels, self.num_actions))
        h = jnp.moveaxis(h, -1, 1).reshape((-1, self.num_actions, d))  # [N, A, H*W*C], row major per action
        return h.reshape(batch_shape + (self.num_actions, d))


# ----- the losses as pure functions (tested on hand-computed cases) ---------------------------
def reward_loss(predicted_rewards: jnp.ndarray, action: jnp.ndarray, reward: jnp.ndarray) -> jnp.ndarray:
    """mean_i (R_i[a_i] - r_i)^2 for predictions [B, A], actions [B], rewards [B]."""
    chosen = jnp.take_along_axis(predicted_rewards, action.astype(jnp.int32)[:, None], axis=1)[:, 0]
    return jnp.mean((chosen - reward) ** 2)


def _safe_norm(x: jnp.ndarray, axis: int = -1) -> jnp.ndarray:
    """Euclidean norm with a finite gradient (zero) at the origin."""
    squared = jnp.sum(x * x, axis=axis)
    safe = jnp.where(squared > 0.0, squared, 1.0)
    return jnp.where(squared > 0.0, jnp.sqrt(safe), 0.0)


def transition_loss(
    predicted_latents: jnp.ndarray, action: jnp.ndarray, next_latent: jnp.ndarray, distance: str = "l2"
) -> jnp.ndarray:
    """mean_i dist(P_i[a_i], phi(s'_i)) for predictions [B, A, d], actions [B], next latents [B, d].

    'l2': the Euclidean distance (Wasserstein-1 between the Dirac measures of a deterministic
    latent model); 'squared_l2': its square.
    """
    if distance not in TRANSITION_DISTANCES:
        raise ValueError(f"unknown transition distance {distance!r}; valid: {list(TRANSITION_DISTANCES)}")
    chosen = jnp.take_along_axis(predicted_latents, action.astype(jnp.int32)[:, None, None], axis=1)[:, 0]
    difference = chosen - next_latent
    if distance == "l2":
        return jnp.mean(_safe_norm(difference))
    return jnp.mean(jnp.sum(difference**2, axis=-1))


def gradient_penalty(
    fn: Callable[[jnp.ndarray], jnp.ndarray],
    points: jnp.ndarray,
    directions: jnp.ndarray,
    penalty_type: str = "one_sided",
) -> jnp.ndarray:
    """mean_i h(|| d/dx <fn(x)_i, v_i> at x = points ||), h = max(0, n - 1)^2 or (n - 1)^2.

    fn maps points [B, d] to outputs [B, ...] row by row (no mixing across the batch);
    directions [B, ...] (same shape as fn's output) are the v_i. The gradient is one
    vector-Jacobian product; the penalty is differentiable in fn's parameters (double backprop).
    """
    if penalty_type not in PENALTY_TYPES:
        raise ValueError(f"unknown penalty type {penalty_type!r}; valid: {list(PENALTY_TYPES)}")
    _, vjp = jax.vjp(fn, points)
    (gradients,) = vjp(directions)
    norms = _safe_norm(gradients.reshape((gradients.shape[0], -1)))
    excess = norms - 1.0
    if penalty_type == "one_sided":
        excess = jnp.maximum(excess, 0.0)
    return jnp.mean(excess**2)


def _unit_directions(key: PRNGKey, shape: Sequence[int]) -> jnp.ndarray:
    """Per-row random unit vectors: Gaussian rows of `shape` = [B, ...] normalised over all but axis 0."""
    v = jax.random.normal(key, tuple(shape))
    flat = v.reshape((shape[0], -1))
    return (flat / jnp.maximum(jnp.linalg.norm(flat, axis=-1, keepdims=True), 1e-12)).reshape(v.shape)


# ----- value losses of the base agents --------------------------------------------------------
def _torso(module: nn.Module, x: jnp.ndarray) -> jnp.ndarray:
    return module.torso(x)


def _is_torso(module: nn.Module, method_name: str) -> bool:
    return method_name == "__call__" and module.path == ("torso",)


def _apply_with_latent(network: nn.Module, params, observation, **kwargs):
    """(network output, torso output) from one forward pass (flax's captured intermediates)."""
    out, captured = network.apply(params, observation, capture_intermediates=_is_torso, mutable=["intermediates"], **kwargs)
    return out, captured["intermediates"]["torso"]["__call__"][0]


class ValueLoss(NamedTuple):
    """A base agent's TD loss split as its update computes it.

    target(params, target_params, batch, target_key, select_key) -> the bootstrap target (no gradient);
    loss(params, target, batch, online_key) -> (weighted mean loss, (per-sample loss, chosen Q, latent [B, d]));
    priorities(per_sample) -> the raw replay priorities the base agent reports.
    """

    target: Callable
    loss: Callable
    priorities: Callable


def c51_value_loss(network: networks.RainbowNetwork, double_dqn: bool = False) -> ValueLoss:
    """C51/Rainbow's categorical TD loss (`rainbow.categorical_target` + `rainbow.cross_entropy`),
    with the same key use as `make_rainbow`'s update, plus the torso output of the online pass."""
    support = network.support()

    def apply(params, observation, key, with_latent=False):
        kwargs = {"rngs": {"noise": key}} if network.noisy else {}
        if with_latent:
            return _apply_with_latent(network, params, observation, **kwargs)
        return network.apply(params, observation, **kwargs)

    def target(params, target_params, batch: Batch, target_key, select_key):
        next_target = apply(target_params, batch.next_observation, target_key)
        selector = apply(params, batch.next_observation, select_key).q_values if double_dqn else next_target.q_values
        return categorical_target(
            batch.reward.astype(jnp.float32), batch.discount.astype(jnp.float32), next_target.probabilities, selector, support
        )

    def loss(params, target_distribution, batch: Batch, online_key):
        out, latent = apply(params, batch.observation, online_key, with_latent=True)
        action = batch.action.astype(jnp.int32)[:, None, None]
        chosen_logits = jnp.take_along_axis(out.logits, action, axis=1)[:, 0]
        per_sample = cross_entropy(target_distribution, chosen_logits)
        chosen_q = jnp.take_along_axis(out.q_values, action[:, :, 0], axis=1)[:, 0]
        return jnp.mean(batch.weight * per_sample), (per_sample, chosen_q, latent)

    return ValueLoss(target, loss, lambda per_sample: jax.lax.stop_gradient(per_sample) + PRIORITY_EPSILON)


def dqn_value_loss(network: networks.QNetwork, double_dqn: bool = False, loss_type: str = "mse") -> ValueLoss:
    """DQN's TD loss (`losses.q_learning_target` + `losses.regression_loss`), as `make_dqn` computes it."""
    elementwise = losses.regression_loss(loss_type)

    def target(params, target_params, batch: Batch, target_key, select_key):
        del target_key, select_key
        next_q_target = network.apply(target_params, batch.next_observation)
        next_q_online = network.apply(params, batch.next_observation) if double_dqn else None
        return losses.q_learning_target(batch.reward, batch.discount, next_q_target, next_q_online)

    def loss(params, bootstrap_target, batch: Batch, online_key):
        del online_key
        q_values, latent = _apply_with_latent(network, params, batch.observation)
        chosen_q = jnp.take_along_axis(q_values, batch.action[:, None].astype(jnp.int32), axis=-1)[:, 0]
        per_sample = elementwise(bootstrap_target, chosen_q)
        return jnp.mean(batch.weight * per_sample), (per_sample, chosen_q, latent)

    return ValueLoss(target, loss, lambda per_sample: jnp.sqrt(jax.lax.stop_gradient(per_sample) + 1e-10))


# ----- the agent ------------------------------------------------------------------------------
def make_deepmdp(
    network: nn.Module,
    base: Agent,
    value_loss: ValueLoss,
    optimizer: optax.GradientTransformation,
    *,
    num_actions: int,
    auxiliary_losses: bool = True,
    reward_model: Optional[nn.Module] = None,
    transition_model: Optional[nn.Module] = None,
    value_loss_weight: float = 1.0,
    reward_loss_weight: float = 1.0,
    transition_loss_weight: float = 1.0,
    gradient_penalty_weight: float = 0.01,
    penalty_type: str = "one_sided",
    transition_distance: str = "l2",
    transition_target: str = "online_stop_gradient",
    target_update_period: int = 8_000,
    update_period: int = 4,
) -> Agent:
    """The pure DeepMDP agent: `base`'s acting, `value_loss` plus the latent-model losses.

    network: the base agent's network (its `torso` field gives phi); base: the base agent's pure
    core built on the same network and optimizer (`make_rainbow`/`make_dqn`), whose `init`
    creates the network parameters and whose `act` is used unchanged. State: `DQNState` with
    params `{'network', 'reward_model', 'transition_model'}` (only `'network'` when
    `auxiliary_losses` is off).

    update metrics: `loss` (the total), `value_loss`, `q_mean`, `priorities` and, with the
    auxiliary losses, `reward_loss`, `transition_loss`, `gradient_penalty`.
    """
    if penalty_type not in PENALTY_TYPES:
        raise ValueError(f"unknown penalty_type {penalty_type!r}; valid: {list(PENALTY_TYPES)}")
    if transition_distance not in TRANSITION_DISTANCES:
        raise ValueError(f"unknown transition_distance {transition_distance!r}; valid: {list(TRANSITION_DISTANCES)}")
    if transition_target not in TRANSITION_TARGETS:
        raise ValueError(f"unknown transition_target {transition_target!r}; valid: {list(TRANSITION_TARGETS)}")
    if auxiliary_losses:
        reward_model = reward_model or RewardModel(num_actions)
        transition_model = transition_model or TransitionModel(num_actions, kind="dense", hidden_units=(256,))

    def latent_of(params, observation):
        return network.apply(params, observation, method=_torso)

    def init(rng: PRNGKey, observation_shape: Sequence[int], num_actions_: int) -> DQNState:
        network_params = base.init(rng, observation_shape, num_actions_).params  # the base agent's own init
        params = {"network": network_params}
        if auxiliary_losses:
            latent = jax.eval_shape(latent_of, network_params, jnp.zeros(tuple(observation_shape), jnp.float32))
            zeros = jnp.zeros(latent.shape, jnp.float32)
            params["reward_model"] = reward_model.init(jax.random.fold_in(rng, 1), zeros)
            params["transition_model"] = transition_model.init(jax.random.fold_in(rng, 2), zeros)
        return initial_state(params, optimizer)

    def act(state: DQNState, observation: jnp.ndarray, rng: PRNGKey, training: bool) -> jnp.ndarray:
        return base.act(state.replace(params=state.params["network"]), observation, rng, training)

    def latent_model_penalty(params, latent, action, aux_key: PRNGKey):
        """The gradient penalty of both models at random points between (gradient-stopped) latents."""
        mix_key, perm_key, direction_key = jax.random.split(aux_key, 3)
        anchor = jax.lax.stop_gradient(latent)
        partner = anchor[jax.random.permutation(perm_key, anchor.shape[0])]
        u = jax.random.uniform(mix_key, (anchor.shape[0], 1))
        points = u * anchor + (1.0 - u) * partner

        def chosen_reward(x):
            return jnp.take_along_axis(reward_model.apply(params["reward_model"], x), action[:, None], axis=1)[:, 0]

        def chosen_transition(x):
            predicted = transition_model.apply(params["transition_model"], x)
            return jnp.take_along_axis(predicted, action[:, None, None], axis=1)[:, 0]

        reward_directions = jnp.ones((anchor.shape[0],), jnp.float32)
        transition_directions = _unit_directions(direction_key, anchor.shape)
        return gradient_penalty(chosen_reward, points, reward_directions, penalty_type) + gradient_penalty(
            chosen_transition, points, transition_directions, penalty_type
        )

    def auxiliary(params, latent, batch: Batch, aux_key: PRNGKey, target_network_params):
        action = batch.action.astype(jnp.int32)
        if transition_target == "target":
            next_latent = jax.lax.stop_gradient(latent_of(target_network_params, batch.next_observation))
        else:
            next_latent = latent_of(params["network"], batch.next_observation)
            if transition_target == "online_stop_gradient":
                next_latent = jax.lax.stop_gradient(next_latent)
        rewards = reward_model.apply(params["reward_model"], latent)
        next_latents = transition_model.apply(params["transition_model"], latent)
        l_reward = reward_loss(rewards, action, batch.reward.astype(jnp.float32))
        l_transition = transition_loss(next_latents, action, next_latent, transition_distance)
        if gradient_penalty_weight == 0.0:  # skip the double backprop when the penalty is off
            penalty = jnp.zeros((), jnp.float32)
        else:
            penalty = latent_model_penalty(params, latent, action, aux_key)
        total = reward_loss_weight * l_reward + transition_loss_weight * l_transition + gradient_penalty_weight * penalty
        return total, {"reward_loss": l_reward, "transition_loss": l_transition, "gradient_penalty": penalty}

    def loss_fn(params, bootstrap_target, batch: Batch, online_key: PRNGKey, aux_key: PRNGKey, target_network_params):
        value, (per_sample, chosen_q, latent) = value_loss.loss(params["network"], bootstrap_target, batch, online_key)
        if not auxiliary_losses:
            return value, (per_sample, chosen_q, {})
        aux_total, aux_metrics = auxiliary(params, latent, batch, aux_key, target_network_params)
        total = value_loss_weight * value + aux_total
        return total, (per_sample, chosen_q, {"value_loss": value, **aux_metrics})

    def update(state: DQNState, batch: Batch, rng: PRNGKey) -> tuple[DQNState, dict]:
        chex.assert_rank([batch.action, batch.reward, batch.discount, batch.weight], 1)
        chex.assert_equal_shape([batch.action, batch.reward, batch.discount, batch.weight])
        online_key, target_key, select_key = jax.random.split(rng, 3)  # as make_rainbow splits it
        aux_key = jax.random.fold_in(rng, 1)
        bootstrap_target = value_loss.target(
            state.params["network"], state.target_params["network"], batch, target_key, select_key
        )
        (loss, (per_sample, chosen_q, aux_metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, bootstrap_target, batch, online_key, aux_key, state.target_params["network"]
        )
        new_state = apply_gradients(state, grads, optimizer, target_update_period, update_period)
        metrics = {
            "loss": loss,
            "value_loss": aux_metrics.get("value_loss", loss),
            "q_mean": jnp.mean(chosen_q),
            "priorities": value_loss.priorities(per_sample),
        }
        metrics.update({k: v for k, v in aux_metrics.items() if k != "value_loss"})
        return new_state, metrics

    return Agent(init=init, act=act, update=update)


@gin.configurable
class DeepMDPAgent(RainbowAgent):
    """The host-runner DeepMDP agent: C51 (default) or DQN with the DeepMDP auxiliary losses.

    Defaults are Dopamine's C51 (`c51.gin`: 51 atoms on [-10, 10], 1-step returns, uniform replay,
    no double DQN/dueling/noisy nets) plus the losses with the weights in the module docstring.

    DeepMDP arguments:
      auxiliary_losses: add the latent-model losses (False: exactly the base agent).
      base_agent: 'c51' (RainbowNetwork, categorical loss; every Rainbow switch still applies) or
        'dqn' (QNetwork, `loss_type` regression loss).
      value_loss_weight, reward_loss_weight, transition_loss_weight, gradient_penalty_weight:
        the loss weights (value_loss_weight = 0 trains the representation by the DeepMDP losses alone).
      penalty_type: 'one_sided' (max(0, ||g|| - 1)^2) or 'two_sided' (Gulrajani et al.'s (||g|| - 1)^2).
      transition_distance: 'l2' (Euclidean, the W1 of deterministic models) or 'squared_l2'.
      transition_target: phi(s') from the online network without gradient ('online_stop_gradient',
        the default), with gradient into both sides ('online', the loss as written; it collapses
        the latent to zero on DonutWorld, see the module docstring) or the 'target' network.
      transition_model: 'conv' (needs `latent_shape`, the torso output's (H, W, C)) or 'dense'.
      transition_hidden_units, reward_hidden_units: hidden layers (channels for 'conv') of the models.
      loss_type: DQN's regression loss when base_agent='dqn'.
    The rest are `RainbowAgent`'s.
    """

    def __init__(
        self,
        num_actions: int,
        observation_shape: Sequence[int],
        observation_dtype: np.dtype = np.uint8,
        *,
        auxiliary_losses: bool = True,
        base_agent: str = "c51",
        value_loss_weight: float = 1.0,
        reward_loss_weight: float = 1.0,
        transition_loss_weight: float = 1.0,
        gradient_penalty_weight: float = 0.01,
        penalty_type: str = "one_sided",
        transition_distance: str = "l2",
        transition_target: str = "online_stop_gradient",
        transition_model: str = "conv",
        latent_shape: Optional[Sequence[int]] = (11, 11, 64),
        transition_hidden_units: Sequence[int] = (64,),
        reward_hidden_units: Sequence[int] = (),
        loss_type: str = "huber",
        num_atoms: int = 51,
        vmax: float = 10.0,
        vmin: Optional[float] = None,
        double_dqn: bool = False,
        dueling: bool = False,
        noisy: bool = False,
        hidden_units: Sequence[int] = (512,),
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
        if base_agent not in BASE_AGENTS:
            raise ValueError(f"unknown base_agent {base_agent!r}; valid: {list(BASE_AGENTS)}")
        if auxiliary_losses and update_horizon != 1:
            raise ValueError(
                f"DeepMDP's latent models predict one step (r_t+1, phi(s_t+1)), but update_horizon = {update_horizon} "
                "makes replay return n-step returns and s_t+n; bind DeepMDPAgent.update_horizon = 1."
            )
        self.base_agent = base_agent
        self.deepmdp_kwargs = dict(
            auxiliary_losses=bool(auxiliary_losses),
            value_loss_weight=float(value_loss_weight),
            reward_loss_weight=float(reward_loss_weight),
            transition_loss_weight=float(transition_loss_weight),
            gradient_penalty_weight=float(gradient_penalty_weight),
            penalty_type=penalty_type,
            transition_distance=transition_distance,
            transition_target=transition_target,
        )
        self.transition_model_kind = transition_model
        self.latent_shape = None if latent_shape is None else tuple(int(s) for s in latent_shape)
        self.transition_hidden_units = tuple(int(u) for u in transition_hidden_units)
        self.reward_hidden_units = tuple(int(u) for u in reward_hidden_units)
        self.dqn_loss_type = loss_type
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
        schedule = dict(target_update_period=target_update_period, update_period=update_period)
        if self.base_agent == "c51":
            network = networks.RainbowNetwork(
                torso=torso,
                num_actions=num_actions,
                num_atoms=self.num_atoms,
                vmax=self.vmax,
                vmin=self.vmin,
                hidden_units=self.hidden_units,
                dueling=self.dueling,
                noisy=self.noisy,
                noisy_sigma_zero=self.noisy_sigma_zero,
            )
            base = make_rainbow(
                network,
                optimizer,
                double_dqn=self.double_dqn,
                noise_off_in_eval=self.noise_off_in_eval,
                noisy_epsilon=self.noisy_epsilon,
                **schedule,
                **epsilon_kwargs,
            )
            value = c51_value_loss(network, self.double_dqn)
        else:
            network = networks.QNetwork(torso=torso, num_actions=num_actions)
            base = make_dqn(network, optimizer, double_dqn=self.double_dqn, loss_type=self.dqn_loss_type, **schedule, **epsilon_kwargs)
            value = dqn_value_loss(network, self.double_dqn, self.dqn_loss_type)
        return make_deepmdp(
            network,
            base,
            value,
            optimizer,
            num_actions=num_actions,
            reward_model=RewardModel(num_actions, hidden_units=self.reward_hidden_units),
            transition_model=TransitionModel(
                num_actions,
                kind=self.transition_model_kind,
                hidden_units=self.transition_hidden_units,
                latent_shape=self.latent_shape,
            ),
            **self.deepmdp_kwargs,
            **schedule,
        )
