"""SequenceDQN: DQN's update on histories, recurrent acting = parallel Q-values, the host shell's
carry, the gin routes (registry, Rainbow with the encoder as torso), and learning the memory
corridor that 4 stacked frames cannot solve."""
from __future__ import annotations

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import accumbens.agents.rainbow  # noqa: F401  (registers RainbowAgent with gin)
from accumbens.agents import sequence_dqn
from accumbens.agents.networks import MLP
from accumbens.agents.registry import create_agent
from accumbens.environments.memory import MemoryCorridorEnv
from accumbens.replay import SequenceBatch
from accumbens.sequence.encoder import PowerAttentionEncoder

L, OBS, A = 6, 3, 2


def small_network(attention="power"):
    encoder = PowerAttentionEncoder(
        torso=MLP(hidden_units=(16,)), num_layers=1, num_heads=2, head_dim=8, chunk_size=8, attention=attention
    )
    return sequence_dqn.SequenceQNetwork(encoder=encoder, num_actions=A)


def random_batch(rng, b=8):
    starts = rng.integers(0, L, size=b)
    mask = np.arange(L)[None] >= starts[:, None]
    next_mask = np.arange(L)[None] >= np.maximum(starts - 1, 0)[:, None]
    return SequenceBatch(
        observation=rng.normal(size=(b, L, OBS)).astype(np.float32) * mask[..., None],
        action=rng.integers(0, A, size=b).astype(np.int32),
        reward=rng.normal(size=b).astype(np.float32),
        next_observation=rng.normal(size=(b, L, OBS)).astype(np.float32) * next_mask[..., None],
        discount=rng.choice([0.0, 0.99], size=b).astype(np.float32),
        weight=np.ones(b, np.float32),
        index=np.arange(b),
        mask=mask,
        next_mask=next_mask,
    )


def test_update_is_dqns_loss_on_the_last_step():
    """Loss = mean Huber(r + discount max_a Q_target(next history) - Q(history, a)), in float64."""
    rng = np.random.default_rng(0)
    network = small_network()
    agent = sequence_dqn.make_sequence_dqn(network, optax.sgd(0.0), loss_type="huber", target_update_period=10**6, update_period=1)
    state = jax.jit(agent.init, static_argnums=(1, 2))(jax.random.PRNGKey(0), (OBS,), A)
    state = state.replace(target_params=jax.tree.map(lambda p: p * 0.7, state.params))
    batch = random_batch(rng)
    _, metrics = jax.jit(agent.update)(state, batch, jax.random.PRNGKey(1))
    apply = jax.jit(network.apply)
    q = np.asarray(apply(state.params, {"observation": batch.observation, "mask": batch.mask}), np.float64)
    q_next = np.asarray(apply(state.target_params, {"observation": batch.next_observation, "mask": batch.next_mask}), np.float64)
    error = batch.reward + batch.discount * q_next.max(axis=1) - q[np.arange(len(q)), batch.action]
    huber = np.where(np.abs(error) <= 1, 0.5 * error**2, np.abs(error) - 0.5)
    np.testing.assert_allclose(float(metrics["loss"]), huber.mean(), rtol=1e-5)
    # Masked steps (before the episode start) do not change the loss.
    scrambled = batch.replace(observation=np.where(batch.mask[..., None], batch.observation, 50.0).astype(np.float32))
    _, again = jax.jit(agent.update)(state, scrambled, jax.random.PRNGKey(1))
    np.testing.assert_allclose(float(again["loss"]), float(metrics["loss"]), rtol=1e-5)


@pytest.mark.parametrize("attention", ["power", "softmax"])
def test_recurrent_q_values_equal_parallel_on_the_same_history(attention):
    """float32, as acting runs: within 1e-4 (see tests/sequence/test_encoder.py on the tolerance)."""
    rng = np.random.default_rng(1)
    network = small_network(attention)
    params = jax.jit(network.init)(jax.random.PRNGKey(0), {"observation": jnp.zeros((1, 1, OBS)), "mask": jnp.ones((1, 1), bool)})
    history = jnp.asarray(rng.normal(size=(2, 9, OBS)), jnp.float32)
    parallel = jax.jit(network.apply, static_argnames="method")(
        params, history, jnp.ones((2, 9), bool), method=network.all_steps
    )
    step = jax.jit(lambda carry, x: network.apply(params, carry, x, method=network.step))
    carry = network.initial_carry(2)
    for t in range(9):
        carry, q = step(carry, history[:, t])
        np.testing.assert_allclose(q, parallel[:, t], atol=1e-4, rtol=1e-4)


def _build(gin_text: str):
    gin.clear_config()
    gin.parse_config(gin_text)
    return create_agent(num_actions=2, observation_shape=(OBS,), observation_dtype=np.float32, seed=0)


SMALL = """
create_agent.agent_name = 'sequence_dqn'
SequenceReplayBuffer.capacity = 5000
SequenceReplayBuffer.context_length = 8
create_torso.name = 'mlp'
MLP.hidden_units = (32,)
PowerAttentionEncoder.num_layers = 1
PowerAttentionEncoder.num_heads = 2
PowerAttentionEncoder.head_dim = 8
PowerAttentionEncoder.chunk_size = 8
create_optimizer.learning_rate = 0.001
create_optimizer.eps = 0.00001
SequenceDQNAgent.min_replay_history = 300
SequenceDQNAgent.update_period = 2
SequenceDQNAgent.target_update_period = 200
SequenceDQNAgent.epsilon_decay_period = 1500
SequenceDQNAgent.epsilon_train = 0.05
SequenceDQNAgent.epsilon_eval = 0.0
SequenceDQNAgent.batch_size = 32
SequenceDQNAgent.gamma = 0.9
SequenceDQNAgent.loss_type = 'huber'
"""


def play(agent, env, episodes, eval_mode):
    agent.eval_mode = eval_mode
    successes = []
    for _ in range(episodes):
        observation, _ = env.reset()
        action = agent.begin_episode(observation)
        while True:
            observation, reward, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                agent.end_episode(reward, terminated, observation)
                successes.append(info["success"])
                break
            action = agent.step(reward, observation)
    return float(np.mean(successes))


def test_carry_resets_at_each_episode_start():
    """Greedy acting on the same observations gives the same carry in every episode."""
    agent = _build(SMALL)
    env = MemoryCorridorEnv(length=3)
    env.reset(seed=0)
    agent.eval_mode = True
    carries = []
    for _ in range(2):
        agent.begin_episode(np.array([1.0, 0.0, 0.0], np.float32))
        agent.step(0.0, np.zeros(3, np.float32))
        carries.append(agent._carry)
    for a, b in zip(jax.tree.leaves(carries[0]), jax.tree.leaves(carries[1])):
        np.testing.assert_array_equal(a, b)
    assert any(float(jnp.abs(x).max()) > 0 for x in jax.tree.leaves(carries[0]))


@pytest.mark.slow  # ~30 s of compilation on 2 idle cores (95 s under this machine's load)
def test_rainbow_takes_the_encoder_by_gin_binding():
    agent = _build(
        SMALL
        + """
create_agent.agent_name = 'rainbow'
RainbowAgent.torso = @sequence_torso
RainbowAgent.stack_size = 8
RainbowAgent.replay_scheme = 'uniform'
RainbowAgent.min_replay_history = 20
RainbowAgent.update_period = 1
RainbowAgent.batch_size = 4
ReplayBuffer.capacity = 200
"""
    )
    assert "encoder" in agent.state.params["params"]["torso"]
    env = MemoryCorridorEnv(length=4)
    env.reset(seed=0)
    play(agent, env, 6, eval_mode=False)
    assert agent.pop_training_metrics()["update_steps"] > 0


def test_learns_the_memory_corridor_beyond_the_frame_stack():
    """Corridor of 4 steps: 4 stacked frames never show the cue at the junction (chance: 0.5).
    After 3000 training steps SequenceDQN's greedy success rate over 50 episodes is >= 0.9
    (P(>= 45/50 | chance) < 3e-9). About 40 s on 2 idle cores, mostly compilation."""
    agent = _build(SMALL)
    env = MemoryCorridorEnv(length=4)
    env.reset(seed=0)
    play(agent, env, 600, eval_mode=False)  # 5 steps per episode: 3000 steps
    assert play(agent, env, 50, eval_mode=True) >= 0.9
    gin.clear_config()


@pytest.mark.parametrize(
    "gin_file", ["memory", "memory_dqn", "flicker_minatar", "flicker_minatar_dqn", "memory_rainbow"]
)
def test_packaged_sequence_configs_parse(gin_file):
    """Every binding in configs/sequence/ names a real configurable and argument."""
    from accumbens import train

    train.parse_config([f"sequence/{gin_file}.gin"], [])
    assert gin.query_parameter("create_environment.name") in ("memory:corridor-100", "minatar:breakout")
    gin.clear_config()
