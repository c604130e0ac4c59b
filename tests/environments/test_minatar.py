"""MinAtar wrapper: defaults, seeding, truncation, flicker."""
import numpy as np
import pytest

from accumbens.environments import create_environment
from accumbens.environments.minatar import MinAtarEnv


def _rollout(env, seed, steps=300):
    """Observations and rewards of a fixed action sequence, resetting on episode ends."""
    actions = np.random.default_rng(123).integers(0, env.action_space.n, steps)
    observation, _ = env.reset(seed=seed)
    trace = [observation.copy()]
    for action in actions:
        observation, reward, terminated, truncated, _ = env.step(action)
        trace.append(observation.copy())
        trace.append(np.array([reward, terminated, truncated]))
        if terminated or truncated:
            observation, _ = env.reset()
            trace.append(observation.copy())
    return trace


def test_defaults_follow_minatar():
    env = create_environment("minatar:breakout")
    assert env.action_space.n == 6  # The MinAtar paper's DQN uses env.num_actions() == 6.
    assert env._game.sticky_action_prob == 0.1
    assert create_environment("minatar:breakout", minimal_action_set=True).action_space.n == 3


@pytest.mark.parametrize("game", ["asterix", "seaquest"])
def test_seeding_reproduces_episodes(game):
    first = _rollout(create_environment(f"minatar:{game}"), seed=7)
    second = _rollout(create_environment(f"minatar:{game}"), seed=7)
    other = _rollout(create_environment(f"minatar:{game}"), seed=8)
    assert len(first) == len(second)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert len(first) != len(other) or not all(
        np.array_equal(a, b) for a, b in zip(first, other)
    )


def test_max_episode_steps_truncates():
    env = create_environment("minatar:freeway", max_episode_steps=10)
    env.reset(seed=0)
    flags = [env.step(0)[2:4] for _ in range(10)]
    assert flags[:-1] == [(False, False)] * 9
    assert flags[-1] == (False, True)


def test_game_over_is_termination():
    env = create_environment("minatar:breakout", max_episode_steps=10_000)
    env.reset(seed=0)
    terminated = truncated = False
    while not (terminated or truncated):  # Standing still loses the ball quickly.
        _, _, terminated, truncated, _ = env.step(0)
    assert terminated and not truncated


def test_flicker_statistics_and_reproducibility():
    env = MinAtarEnv("breakout", flicker_probability=0.5)
    env.reset(seed=3)
    flickers = []
    for _ in range(4000):
        observation, _, terminated, truncated, info = env.step(env.action_space.sample())
        flickers.append(info["flickered"])
        if info["flickered"]:
            assert not observation.any()
        else:
            assert observation.any()  # A Breakout frame always shows the paddle.
        if terminated or truncated:
            env.reset()
    rate = np.mean(flickers)
    assert abs(rate - 0.5) < 4 * np.sqrt(0.25 / len(flickers))

    def flicker_pattern(seed):
        env = MinAtarEnv("breakout", flicker_probability=0.5)
        pattern = [env.reset(seed=seed)[1]["flickered"]]
        pattern += [env.step(0)[4]["flickered"] for _ in range(5)]
        return pattern

    assert flicker_pattern(11) == flicker_pattern(11)
    assert not any(MinAtarEnv("breakout").reset(seed=0)[1]["flickered"] for _ in range(3))


def test_flicker_probability_validated():
    with pytest.raises(ValueError, match="flicker_probability"):
        MinAtarEnv("breakout", flicker_probability=1.5)
