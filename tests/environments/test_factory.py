"""The `create_environment` factory: names, errors, and the Env contract for every family."""
import gymnasium
import numpy as np
import pytest

from accumbens.environments import FAMILIES, create_environment, parse_name


@pytest.mark.parametrize(
    "name, shape, dtype",
    [
        ("gym:CartPole-v1", (4,), np.float32),
        ("gym:Acrobot-v1", (6,), np.float32),
        ("gym:MountainCar-v0", (2,), np.float32),
        ("minatar:breakout", (10, 10, 4), np.uint8),
        ("minatar:asterix", (10, 10, 4), np.uint8),
        ("minatar:freeway", (10, 10, 7), np.uint8),
        ("minatar:seaquest", (10, 10, 10), np.uint8),
        ("minatar:space_invaders", (10, 10, 6), np.uint8),
    ],
)
def test_create_reset_step(name, shape, dtype):
    env = create_environment(name)
    assert isinstance(env.action_space, gymnasium.spaces.Discrete)
    assert env.observation_space.shape == shape
    observation, info = env.reset(seed=0)
    assert observation.shape == shape and observation.dtype == dtype
    assert env.observation_space.contains(observation)
    for _ in range(5):
        observation, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert observation.shape == shape and observation.dtype == dtype
        assert isinstance(reward, float)
        assert isinstance(terminated, bool) and isinstance(truncated, bool)
        if terminated or truncated:
            env.reset()


@pytest.mark.parametrize(
    "name, family, game",
    [
        ("minatar:Breakout", "minatar", "breakout"),
        ("MinAtar:SpaceInvaders", "minatar", "space_invaders"),
        ("minatar:space-invaders", "minatar", "space_invaders"),
        ("gym:cartpole-v1", "gym", "CartPole-v1"),
    ],
)
def test_name_spellings(name, family, game):
    assert parse_name(name) == (family, game)


def test_unknown_family_lists_families():
    with pytest.raises(ValueError) as error:
        create_environment("doom:e1m1")
    for family in FAMILIES:
        assert family in str(error.value)


def test_missing_colon_lists_families():
    with pytest.raises(ValueError, match="family:game"):
        create_environment("breakout")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("minatar:pong", ["asterix", "breakout", "freeway", "seaquest", "space_invaders"]),
        ("gym:Pendulum-v1", ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"]),
    ],
)
def test_unknown_game_lists_games(name, expected):
    with pytest.raises(ValueError) as error:
        create_environment(name)
    for game in expected:
        assert game in str(error.value)


def test_gym_time_limit_is_truncation():
    env = create_environment("gym:CartPole-v1", max_episode_steps=3)
    env.reset(seed=0)
    outcomes = [env.step(step % 2)[2:4] for step in range(3)]
    assert outcomes[-1] == (False, True)


def test_gym_termination_is_not_truncation():
    env = create_environment("gym:CartPole-v1")
    env.reset(seed=0)
    terminated = truncated = False
    while not (terminated or truncated):  # Always pushing right drops the pole in ~10 steps.
        _, _, terminated, truncated, _ = env.step(1)
    assert terminated and not truncated


def test_gin_configures_factory_and_family_constructors():
    import gin

    gin.parse_config(
        """
        create_environment.name = "minatar:breakout"
        create_environment.max_episode_steps = 7
        MinAtarEnv.flicker_probability = 0.5
        AtariEnv.terminal_on_life_loss = True
        MemoryCorridorEnv.length = 9
        """
    )
    try:
        env = create_environment()
        assert env.max_episode_steps == 7 and env.flicker_probability == 0.5
        assert create_environment("atari:Breakout").terminal_on_life_loss
        assert create_environment("memory:corridor").length == 9
    finally:
        gin.clear_config()


@pytest.mark.parametrize("name", ["atari:Pong", "minatar:seaquest", "memory:corridor-5"])
def test_gymnasium_env_checker(name):
    """gymnasium's own API checks (spaces, seeding determinism, step/reset signatures)."""
    from gymnasium.utils.env_checker import check_env

    check_env(create_environment(name), skip_render_check=True)
