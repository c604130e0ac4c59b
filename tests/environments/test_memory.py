"""The memory corridor: shapes, optimal and cue-blind policies, names."""
import numpy as np
import pytest

from accumbens.environments import create_environment
from accumbens.environments.memory import MemoryCorridorEnv


def _play(env, policy, episodes, seed=0):
    """Success rate of `policy(observation, memory) -> (action, memory)` over `episodes`."""
    successes = []
    env.reset(seed=seed)
    for _ in range(episodes):
        observation, _ = env.reset()
        memory = None
        terminated = truncated = False
        steps = 0
        while not (terminated or truncated):
            action, memory = policy(observation, memory)
            observation, reward, terminated, truncated, info = env.step(action)
            steps += 1
            assert observation.shape == (3,) and observation.dtype == np.float32
        assert terminated and not truncated and steps == env.length + 1
        successes.append(info["success"])
        assert reward == (1.0 if info["success"] else -1.0)
    return np.mean(successes)


def remember_cue(observation, memory):
    """Optimal: store the cue at the first step, take its exit at the junction."""
    if memory is None:
        memory = int(np.argmax(observation[:2]))
    return memory, memory


def stacked_frames(k):
    """The best a k-frame-stack policy can do: act on the cue if it is in the last k frames."""

    def policy(observation, frames):
        frames = ((frames or ()) + (observation,))[-k:]
        cue = sum(frame[:2] for frame in frames)
        return (int(np.argmax(cue)) if cue.any() else 0), frames

    return policy


@pytest.mark.parametrize("length", [0, 1, 10, 1000])
def test_optimal_policy_always_succeeds(length):
    env = MemoryCorridorEnv(length=length)
    assert _play(env, remember_cue, episodes=20 if length == 1000 else 200) == 1.0


def test_four_frames_are_chance_when_the_corridor_is_longer():
    env = MemoryCorridorEnv(length=20)
    rate = _play(env, stacked_frames(4), episodes=1000, seed=1)
    assert abs(rate - 0.5) < 4 * np.sqrt(0.25 / 1000)
    assert _play(MemoryCorridorEnv(length=3), stacked_frames(4), episodes=200) == 1.0


def test_observations():
    env = MemoryCorridorEnv(length=2)
    observation, info = env.reset(seed=0)
    assert observation[info["cue"]] == 1.0 and observation.sum() == 1.0
    np.testing.assert_array_equal(env.step(0)[0], [0, 0, 0])
    np.testing.assert_array_equal(env.step(1)[0], [0, 0, 1])
    assert env.step(info["cue"])[1:3] == (1.0, True)


def test_names():
    assert create_environment("memory:corridor").length == 100
    assert create_environment("memory:corridor", length=7).length == 7
    assert create_environment("memory:corridor-250").length == 250
    assert create_environment("memory:corridor-5", length=5).length == 5
    with pytest.raises(ValueError, match="length"):
        create_environment("memory:corridor-5", length=6)
    with pytest.raises(ValueError, match="corridor"):
        create_environment("memory:maze")


def test_zero_one_rewards():
    env = create_environment("memory:corridor-1", wrong_reward=0.0)
    _, info = env.reset(seed=0)
    env.step(0)
    assert env.step(1 - info["cue"])[1] == 0.0


def test_max_episode_steps_truncates():
    env = MemoryCorridorEnv(length=10, max_episode_steps=4)
    env.reset(seed=0)
    assert [env.step(0)[2:4] for _ in range(4)] == [(False, False)] * 3 + [(False, True)]
