"""Rainbow (Hessel et al., 2018) and C51 (Bellemare et al., 2017) as an extension of DQN.

Rainbow keeps DQN's state (`DQNState`), optimizer, epsilon-greedy acting, target syncs and host
shell, and changes what differs: the network returns a categorical return distribution per
action (`num_atoms` atoms on [vmin, vmax], `networks.RainbowNetwork`), the target is the
n-step Bellman update of the target network's distribution projected back onto the support,
and the loss is the cross-entropy between that target and the online distribution. Each other
component is a switch:

  double_dqn      the online network picks the next action, the target network's distribution
                  of that action is the bootstrap (van Hasselt et al. 2016)
  dueling         value + advantage head, per atom (Wang et al. 2016)
  noisy           factorised Gaussian noisy layers after the torso (Fortunato et al. 2018);
                  the training epsilon becomes `noisy_epsilon` (0, as Dopamine's full Rainbow)
  update_horizon  n-step returns, folded into the batch by replay (`reward`, `discount = gamma^m`)
  replay_scheme   'uniform' or 'prioritized' (Schaul et al. 2016)

With every switch off and `update_horizon = 1`, `replay_scheme = 'uniform'` this is C51
(`configs/c51/atari.gin`).

One update, for a batch (weights `w`, 1 for uniform replay):
    a*      = argmax_a Q(s', a)        Q of the target net, or of the online net (double DQN)
    target  = Proj_z( reward + discount * z , p_target(s', a*) )           (no gradient)
    loss_i  = -sum_j target_ij log p_online(s_i, a_i)_j                     (cross-entropy)
    L       = mean_i w_i loss_i
Noise (noisy nets) comes from explicit keys: the update splits its key into one for the online
network on s, one for the target network on s' and one for the online network on s' (double
DQN); `act` draws from its key in training and, with `noise_off_in_eval`, uses the noise-free
mean network in evaluation.

Priorities. `metrics['priorities']` is `loss_i + 1e-10`, the raw priority that
`PrioritizedReplayBuffer` raises to `alpha`. With Rainbow's alpha = 0.5 the sampling mass is
sqrt(loss_i + 1e-10), exactly what Dopamine's JAX Rainbow stores (it passes sqrt(loss + 1e-10)
to a sum tree without an exponent), and Hessel et al.'s "KL loss to the power omega = 0.5".
The 1e-10 keeps every sampled transition's priority positive.
"""
from __future__ import annotations

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
from accumbens.agents.dqn import (
    DQNAgent,
    DQNState,
    apply_gradients,
    create_optimizer,
    epsilon_greedy,
    epsilon_greedy_probabilities,
    initial_state,
)

PRIORITY_EPSILON = 1e-10


def project_distribution(
    supports: jnp.ndarray, probabilities: jnp.ndarray, target_support: jnp.ndarray
) -> jnp.ndarray:
    """Categorical projection (Bellemare et al. 2017, eq. 7) of (supports, probabilities) onto `target_support`.

    supports: [..., K] locations of the source atoms (e.g. r + gamma^n z), any values: those
      outside [z_0, z_{N-1}] are clipped to the nearest end atom;
    probabilities: [..., K] their masses;
    target_support: [N] equally spaced, increasing atoms z_0 < ... < z_{N-1}.
    Returns [..., N]: mass_i = sum_k clip(1 - |clip(x_k) - z_i| / dz, 0, 1) p_k, i.e. each source
    atom's mass is split linearly between its two neighbouring target atoms (all of it to one atom
    when it falls exactly on it). The total mass is preserved.
    """
    vmin, vmax = target_support[0], target_support[-1]
    delta_z = (vmax - vmin) / (target_support.shape[0] - 1)
    clipped = jnp.clip(supports, vmin, vmax)  # [..., K]
    distance = jnp.abs(clipped[..., None, :] - target_support[:, None])  # [..., N, K]
    weights = jnp.clip(1.0 - distance / delta_z, 0.0, 1.0)
    return jnp.sum(weights * probabilities[..., None, :], axis=-1)


def categorical_target(
    reward: jnp.ndarray,
    discount: jnp.ndarray,
    next_probabilities: jnp.ndarray,
    next_q_selector: jnp.ndarray,
    support: jnp.ndarray,
) -> jnp.ndarray:
    """The projected n-step target distribution, gradient stopped.

    reward, discount: [B] (n-step return and gamma^m, 0 where the episode terminated);
    next_probabilities: [B, A, N] target network's distributions at s';
    next_q_selector: [B, A] Q-values that pick a* (the target net's, or the online net's for double DQN);
    support: [N]. Returns [B, N].
    """
    best_action = jnp.argmax(next_q_selector, axis=-1)
    next_p = jnp.take_along_axis(next_probabilities, best_action[:, None, None], axis=1)[:, 0]  # [B, N]
    target_atoms = reward[:, None] + discount[:, None] * support[None, :]
    return jax.lax.stop_gradient(project_distribution(target_atoms, next_p, support))


def cross_entropy(target: jnp.ndarray, logits: jnp.ndarray) -> jnp.ndarray:
    """-sum_j target_j log softmax(logits)_j over the last axis: [..., N] -> [...]."""
    return -jnp.sum(target * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def make_rainbow(
    network: networks.RainbowNetwork,
    optimizer: optax.GradientTransformation,
    *,
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
    """Builds Rainbow's pure `init`, `act` and `update` around a `RainbowNetwork`.

    The state is DQN's `DQNState`; target syncs and the optimizer step are DQN's
    (`dqn.apply_gradients`). Whether the network is noisy and dueling is the network's own
    setting (`network.noisy`, `network.dueling`); the support is `network.support()`.

    act: `observation` one `[*obs_shape, stack]` (scalar action) or a batch (`[B]` actions; noisy
      nets share one noise sample across the batch). Training: epsilon-greedy with DQN's linearly
      decaying epsilon, or `noisy_epsilon` (default 0) with noisy nets; evaluation: `epsilon_eval`,
      and no noise when `noise_off_in_eval`.
    update: metrics `loss` (weighted mean cross-entropy), `q_mean` (mean Q of the taken actions)
      and `priorities` ([B], per-sample cross-entropy + 1e-10, see the module docstring).
    """
    support = network.support()
    noisy = network.noisy

    def apply(params, observation, key: PRNGKey, deterministic: bool = False) -> networks.RainbowOutput:
        """The network's output; noisy layers draw their noise from `key` unless `deterministic`."""
        if not noisy:
            return network.apply(params, observation)
        if deterministic:
            return network.apply(params, observation, deterministic=True)
        return network.apply(params, observation, rngs={"noise": key})

    def init(rng: PRNGKey, observation_shape: Sequence[int], num_actions: int) -> DQNState:
        del num_actions  # fixed by the network
        param_key, noise_key = jax.random.split(rng)
        params = network.init(
            {"params": param_key, "noise": noise_key}, jnp.zeros(tuple(observation_shape), jnp.float32)
        )
        return initial_state(params, optimizer)

    def epsilon(state: DQNState, training: bool) -> jnp.ndarray:
        if not training:
            return jnp.asarray(epsilon_eval, jnp.float32)
        if noisy:
            return jnp.asarray(noisy_epsilon, jnp.float32)
        return losses.linearly_decaying_epsilon(state.env_steps, epsilon_decay_period, epsilon_warmup_steps, epsilon_train)

    def act(state: DQNState, observation: jnp.ndarray, rng: PRNGKey, training: bool) -> jnp.ndarray:
        epsilon_key, noise_key = jax.random.split(rng)
        deterministic = (not training) and noise_off_in_eval
        q_values = apply(state.params, observation, noise_key, deterministic).q_values
        return epsilon_greedy(epsilon_key, q_values, epsilon(state, training))

    def policy(state: DQNState, observation: jnp.ndarray, training: bool) -> jnp.ndarray:
        """Epsilon-greedy probabilities over the noise-free Q-values (exact without noisy layers;
        with them, the policy `act` follows given its noise draw is not recorded, so this is the
        noise-free policy's probability)."""
        q_values = apply(state.params, observation, None, True).q_values
        return epsilon_greedy_probabilities(q_values, epsilon(state, training))

    def loss_fn(params, target_distribution, batch: Batch, online_key: PRNGKey):
        out = apply(params, batch.observation, online_key)
        action = batch.action.astype(jnp.int32)[:, None, None]
        chosen_logits = jnp.take_along_axis(out.logits, action, axis=1)[:, 0]  # [B, N]
        per_sample = cross_entropy(target_distribution, chosen_logits)
        chosen_q = jnp.take_along_axis(out.q_values, action[:, :, 0], axis=1)[:, 0]
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
        target_distribution = categorical_target(
            batch.reward.astype(jnp.float32),
            batch.discount.astype(jnp.float32),
            next_target.probabilities,
            selector,
            support,
        )
        (loss, (per_sample, chosen_q)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, target_distribution, batch, online_key
        )
        new_state = apply_gradients(state, grads, optimizer, target_update_period, update_period)
        metrics = {
            "loss": loss,
            "q_mean": jnp.mean(chosen_q),
            "priorities": jax.lax.stop_gradient(per_sample) + PRIORITY_EPSILON,
        }
        return new_state, metrics

    return Agent(init=init, act=act, update=update, policy=policy)


@gin.configurable
class RainbowAgent(DQNAgent):
    """The host-runner Rainbow: DQN's shell with Rainbow's pure core.

    Defaults are Dopamine's JAX Rainbow (`dopamine/jax/agents/rainbow/configs/rainbow.gin`:
    C51 head with 51 atoms on [-10, 10], 3-step returns, prioritized replay, no double DQN,
    dueling or noisy nets). Dopamine's full Rainbow turns on `double_dqn`, `dueling` and `noisy`.

    Rainbow-only arguments:
      num_atoms, vmax, vmin: the support, `num_atoms` atoms on [vmin, vmax]; vmin = -vmax if None.
      dueling, noisy, double_dqn: the switches (see the module docstring).
      hidden_units: dense layers between the torso and the head (noisy when `noisy`); Dopamine's
        full Rainbow is `torso='nature_conv'` with `hidden_units=(512,)`.
      noisy_sigma_zero: sigma_0 of the noisy layers' initialisation (0.5 in Fortunato et al.
        and Hessel et al.; 0.1 in Dopamine's JAX networks and DER).
      noise_off_in_eval: evaluate with the noise-free mean network (Dopamine's full Rainbow).
      noisy_epsilon: the training epsilon when `noisy` (0 in Dopamine's full Rainbow).
    The rest are `DQNAgent`'s.
    """

    def __init__(
        self,
        num_actions: int,
        observation_shape: Sequence[int],
        observation_dtype: np.dtype = np.uint8,
        *,
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
        update_horizon: int = 3,
        min_replay_history: int = 20_000,
        update_period: int = 4,
        target_update_period: int = 8_000,
        epsilon_train: float = 0.01,
        epsilon_eval: float = 0.001,
        epsilon_decay_period: int = 250_000,
        optimizer: Callable[[], optax.GradientTransformation] = create_optimizer,
        batch_size: int = 32,
        replay_scheme: str = "prioritized",
        seed: int = 0,
    ):
        self.num_atoms = int(num_atoms)
        self.vmax = float(vmax)
        self.vmin = None if vmin is None else float(vmin)
        self.dueling = bool(dueling)
        self.noisy = bool(noisy)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.noisy_sigma_zero = float(noisy_sigma_zero)
        self.noise_off_in_eval = bool(noise_off_in_eval)
        self.noisy_epsilon = float(noisy_epsilon)
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
            epsilon_train=epsilon_train,
            epsilon_eval=epsilon_eval,
            epsilon_decay_period=epsilon_decay_period,
            double_dqn=double_dqn,
            loss_type="mse",  # unused: Rainbow's loss is the cross-entropy
            optimizer=optimizer,
            batch_size=batch_size,
            replay_scheme=replay_scheme,
            seed=seed,
        )

    def _build_agent(self, *, torso, num_actions, optimizer, epsilon_kwargs, target_update_period, update_period) -> Agent:
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
        return make_rainbow(
            network,
            optimizer,
            double_dqn=self.double_dqn,
            noise_off_in_eval=self.noise_off_in_eval,
            noisy_epsilon=self.noisy_epsilon,
            target_update_period=target_update_period,
            update_period=update_period,
            **epsilon_kwargs,
        )
