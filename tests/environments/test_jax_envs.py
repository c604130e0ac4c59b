"""gymnax environments through `create_jax_environment`."""
import sys

import pytest

from accumbens.environments import create_environment, create_jax_environment


def test_missing_gymnax_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnax", None)  # Makes `import gymnax` fail.
    with pytest.raises(ImportError, match=r"pip install -e \"\.\[jax-envs\]\""):
        create_jax_environment("minatar:breakout")


gymnax = pytest.importorskip("gymnax", reason="gymnax (the jax-envs extra) is not installed")
jax = pytest.importorskip("jax")


@pytest.mark.parametrize("game", ["asterix", "breakout", "freeway", "seaquest", "space_invaders"])
def test_minatar_names_match_host_minatar(game):
    env, params = create_jax_environment(f"minatar:{game}")
    host = create_environment(f"minatar:{game}")
    assert env.num_actions == host.action_space.n == 6
    assert env.observation_space(params).shape == host.observation_space.shape


def test_reset_and_step_under_jit():
    env, params = create_jax_environment("minatar:breakout", params={"max_steps_in_episode": 50})
    assert params.max_steps_in_episode == 50
    key_reset, key_step = jax.random.split(jax.random.key(0))
    observation, state = jax.jit(env.reset)(key_reset, params)
    assert observation.shape == (10, 10, 4)
    step = jax.jit(env.step)
    observation, state, reward, terminated, truncated, info = step(key_step, state, 1, params)
    assert observation.shape == (10, 10, 4)
    assert reward.shape == terminated.shape == truncated.shape == ()


def test_gymnax_and_gym_names():
    env, params = create_jax_environment("gymnax:Breakout-MinAtar")
    assert env.num_actions == 3  # gymnax's own default: the minimal action set.
    env, params = create_jax_environment("gym:CartPole-v1")
    observation, _ = env.reset(jax.random.key(0), params)
    assert observation.shape == (4,)


@pytest.mark.parametrize("name", ["gymnax:Nope-v0", "minatar:pong", "atari:Pong", "breakout"])
def test_unknown_names_list_valid_ones(name):
    with pytest.raises(ValueError) as error:
        create_jax_environment(name)
    message = str(error.value)
    assert "Breakout-MinAtar" in message and "space_invaders" in message
    assert "CartPole-v1" in message
