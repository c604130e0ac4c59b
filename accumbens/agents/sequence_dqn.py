"""SequenceDQN: DQN on a `PowerAttentionEncoder`, for partially observable tasks.

Frame stacking gives DQN the last k observations; a task whose decisive observation lies further
back (the memory corridor, flickering MinAtar) is then unsolvable. SequenceDQN replaces the stack by
the episode's history, read by the power-attention encoder (`accumbens.sequence.encoder`):

  training  replay samples L-step histories with a mask (`SequenceReplayBuffer`); the network reads
            them in parallel (chunked power attention) and the Q-values of the last step enter
            DQN's unchanged update (`dqn.make_dqn`: target, loss, optimizer, target syncs)
  acting    one observation per step, the encoder's recurrent state carried across the episode and
            reset at its start, so a step costs the same at step 10 and step 10,000

The pure core is DQN's: `make_sequence_dqn` builds `dqn.make_dqn` on a `SequenceQNetwork` whose
input is a history `{"observation": [B, L, *obs_shape], "mask": [B, L]}` and adds the recurrent
acting functions (`initial_carry`, `recurrent_act`). The host shell (`SequenceDQNAgent`)
subclasses `HostAgent` and only adds the carry. Other agents reach the encoder by a gin binding
instead (`RainbowAgent.torso = @sequence_torso`, see `accumbens.sequence.encoder.SequenceTorso`).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

from accumbens.agents import losses, networks
from accumbens.agents.base import Agent, PRNGKey
from accumbens.agents.dqn import DQNState, create_optimizer, epsilon_greedy, initial_state, make_dqn
from accumbens.agents.host_agent import HostAgent
from accumbens.replay.batch import Batch
from accumbens.sequence.encoder import PowerAttentionEncoder

History = dict  # {"observation": [B, L, *obs_shape], "mask": [B, L] bool}


class SequenceQNetwork(nn.Module):
    """`encoder -> Dense(num_actions)`, in the encoder's two forms.

    `__call__(history)`: a history dict (batched `[B, L, ...]` or single `[L, ...]`) -> the last
    step's Q-values `[B, A]` (or `[A]`). `step(carry, observation [B, *obs_shape])` -> (carry,
    Q-values [B, A]). `all_steps(observations, mask)` -> `[B, L, A]`.
    """

    encoder: PowerAttentionEncoder
    num_actions: int

    def setup(self):
        self.head = nn.Dense(self.num_actions, kernel_init=nn.initializers.xavier_uniform())

    def all_steps(self, observations: jax.Array, mask: jax.Array) -> jax.Array:
        return self.head(self.encoder(observations, mask))

    def __call__(self, history: History) -> jax.Array:
        observation, mask = history["observation"], history["mask"]
        single = mask.ndim == 1
        if single:
            observation, mask = observation[None], mask[None]
        q_values = self.all_steps(observation, mask)[:, -1]
        return q_values[0] if single else q_values

    def step(self, carry: Any, observation: jax.Array) -> tuple[Any, jax.Array]:
        carry, features = self.encoder.step(carry, observation)
        return carry, self.head(features)

    def initial_carry(self, batch: int) -> Any:
        return self.encoder.initial_carry(batch)


class SequenceAgent(NamedTuple):
    """A pure sequence agent: the `Agent` triple over histories, plus recurrent acting.

    init(rng, observation_shape, num_actions): `observation_shape` is one observation's shape.
    act(state, history, rng, training): parallel form over a history dict.
    update(state, batch, rng): a `SequenceBatch` (or a `Batch` whose observations are histories).
    initial_carry(batch): the recurrent state at an episode start, for `batch` sequences.
    recurrent_act(state, carry, observation [B, *obs_shape], rng, training) -> (actions [B], carry).
    """

    init: Callable
    act: Callable
    update: Callable
    initial_carry: Callable
    recurrent_act: Callable

    def as_agent(self) -> Agent:
        return Agent(init=self.init, act=self.act, update=self.update)

    def as_host_agent(self) -> Agent:
        """The `Agent` for `HostAgent(stack_size=1)`, which calls `init` with a one-frame stack's
        shape `[*obs_shape, 1]`: the trailing 1 is dropped."""
        return Agent(init=lambda rng, shape, n: self.init(rng, tuple(shape)[:-1], n), act=self.act, update=self.update)


def as_history_batch(batch: Batch) -> Batch:
    """A `SequenceBatch` as a DQN `Batch` whose observations are history dicts (same arrays)."""
    if isinstance(batch.observation, dict):
        return batch
    if batch.mask is None or getattr(batch, "next_mask", None) is None:
        raise ValueError("a sequence batch needs mask and next_mask (sample it from SequenceReplayBuffer)")
    return Batch(
        observation={"observation": batch.observation, "mask": batch.mask},
        action=batch.action,
        reward=batch.reward,
        next_observation={"observation": batch.next_observation, "mask": batch.next_mask},
        discount=batch.discount,
        weight=batch.weight,
        index=batch.index,
    )


def make_sequence_dqn(
    network: SequenceQNetwork,
    optimizer: optax.GradientTransformation,
    *,
    epsilon_train: float = 0.01,
    epsilon_eval: float = 0.001,
    epsilon_decay_period: int = 250_000,
    epsilon_warmup_steps: int = 20_000,
    **dqn_kwargs,
) -> SequenceAgent:
    """DQN's pure core (`make_dqn`) on a `SequenceQNetwork`, plus recurrent acting.

    `dqn_kwargs` go to `make_dqn` (double_dqn, loss_type, target_update_period, update_period).
    The update is DQN's: its network reads the last step of the histories.
    """
    epsilon_kwargs = dict(
        epsilon_train=epsilon_train,
        epsilon_eval=epsilon_eval,
        epsilon_decay_period=epsilon_decay_period,
        epsilon_warmup_steps=epsilon_warmup_steps,
    )
    core = make_dqn(network, optimizer, **epsilon_kwargs, **dqn_kwargs)

    def init(rng: PRNGKey, observation_shape: Sequence[int], num_actions: int) -> DQNState:
        del num_actions  # fixed by the network
        shape = tuple(observation_shape)
        history = {"observation": jnp.zeros((1, 1) + shape), "mask": jnp.ones((1, 1), bool)}
        return initial_state(network.init(rng, history), optimizer)

    def update(state: DQNState, batch: Batch, rng: PRNGKey) -> tuple[DQNState, dict]:
        return core.update(state, as_history_batch(batch), rng)

    def recurrent_act(state: DQNState, carry: Any, observation: jax.Array, rng: PRNGKey, training: bool):
        carry, q_values = network.apply(state.params, carry, observation, method=network.step)
        if training:
            epsilon = losses.linearly_decaying_epsilon(
                state.env_steps, epsilon_decay_period, epsilon_warmup_steps, epsilon_train
            )
        else:
            epsilon = epsilon_eval
        return epsilon_greedy(rng, q_values, epsilon), carry

    return SequenceAgent(
        init=init, act=core.act, update=update, initial_carry=network.initial_carry, recurrent_act=recurrent_act
    )


@gin.configurable
def create_encoder(torso: Callable[[], nn.Module] = networks.create_torso) -> PowerAttentionEncoder:
    """The `PowerAttentionEncoder` with its gin bindings, on the per-step torso `torso()`."""
    return PowerAttentionEncoder(torso=torso())


@gin.configurable
class SequenceDQNAgent(HostAgent):
    """Host shell of SequenceDQN: `HostAgent` plus the encoder's recurrent state while acting.

    Replay is `SequenceReplayBuffer` (configure `SequenceReplayBuffer.capacity` and
    `.context_length`); the encoder is `create_encoder()` (configure `PowerAttentionEncoder.*` and
    the per-step torso through `create_torso`). Other arguments and their defaults are DQN's
    (Dopamine JAX DQN); the gin files in `configs/sequence/` set them per task. The recurrent state
    is reset at every `begin_episode`; it is not checkpointed (runs resume at episode starts).
    """

    def __init__(
        self,
        num_actions: int,
        observation_shape: Sequence[int],
        observation_dtype: np.dtype = np.uint8,
        *,
        encoder: Callable[[], PowerAttentionEncoder] = create_encoder,
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
        seed: int = 0,
    ):
        self.network = SequenceQNetwork(encoder=encoder(), num_actions=num_actions)
        self.sequence_agent = make_sequence_dqn(
            self.network,
            optimizer(),
            epsilon_train=epsilon_train,
            epsilon_eval=epsilon_eval,
            epsilon_decay_period=epsilon_decay_period,
            epsilon_warmup_steps=min_replay_history,
            double_dqn=double_dqn,
            loss_type=loss_type,
            target_update_period=target_update_period,
            update_period=update_period,
        )
        super().__init__(
            self.sequence_agent.as_host_agent(),
            num_actions=num_actions,
            observation_shape=observation_shape,
            observation_dtype=observation_dtype,
            stack_size=1,
            gamma=gamma,
            update_horizon=update_horizon,
            min_replay_history=min_replay_history,
            update_period=update_period,
            batch_size=batch_size,
            replay_scheme="sequence",
            seed=seed,
        )
        self._initial_carry = self.sequence_agent.initial_carry(1)
        self._carry = self._initial_carry
        self._recurrent_act_fn = jax.jit(self._recurrent_act, static_argnames="training")
        self._update_and_recurrent_act_fn = jax.jit(self._update_and_recurrent_act)

    # ----- compiled bodies -------------------------------------------------------------
    def _recurrent_act(self, state, carry, rng, observation, env_steps, training: bool):
        state = state.replace(env_steps=jnp.asarray(env_steps, jnp.int32))
        rng, act_key = jax.random.split(rng)
        action, carry = self.sequence_agent.recurrent_act(state, carry, observation[None], act_key, training)
        return action[0], carry, rng

    def _update_and_recurrent_act(self, state, carry, rng, batch, observation, env_steps):
        state = state.replace(env_steps=jnp.asarray(env_steps, jnp.int32))
        rng, update_key, act_key = jax.random.split(rng, 3)
        state, metrics = self.sequence_agent.update(state, batch, update_key)
        action, carry = self.sequence_agent.recurrent_act(state, carry, observation[None], act_key, True)
        return state, carry, rng, action[0], metrics

    # ----- acting with the carry ---------------------------------------------------------
    def begin_episode(self, observation: np.ndarray) -> int:
        """Starts an episode: the encoder's state is reset, then the first action is chosen."""
        self._carry = self._initial_carry
        return self._select(observation)

    def _select(self, observation: np.ndarray) -> int:
        observation = np.asarray(observation, self.observation_dtype)
        self._last_observation = observation
        if self.eval_mode:
            action, self._carry, self._rng = self._recurrent_act_fn(
                self.state, self._carry, self._rng, observation, self.env_steps, training=False
            )
        elif self._update_due():
            batch = self.replay.sample(self._sample_rng, self.batch_size)
            self.state, self._carry, self._rng, action, metrics = self._update_and_recurrent_act_fn(
                self.state, self._carry, self._rng, batch, observation, self.env_steps
            )
            self._loss_sum += float(metrics["loss"])
            self._loss_count += 1
        else:
            action, self._carry, self._rng = self._recurrent_act_fn(
                self.state, self._carry, self._rng, observation, self.env_steps, training=True
            )
        if not self.eval_mode:
            self.env_steps += 1
        self._last_action = int(action)
        return self._last_action
