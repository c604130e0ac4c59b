"""gymnax environments through `create_jax_environment`."""
import sys

import numpy as np

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


def test_minatar_sticky_actions_repeat_the_previous_action_at_rate_one_tenth():
    from scipy.stats import binomtest

    env, params = create_jax_environment("minatar:breakout", params={"max_steps_in_episode": 100_000})
    assert env.sticky_action_probability == 0.1
    _, state = env.reset(jax.random.key(0), params)
    # Alternate actions 1 and 3 from a state whose previous action is 1: the executed action is 3
    # unless the step was sticky; steps that end an episode reset the previous action to 0.
    state = state.replace(previous_action=jax.numpy.int32(1))
    keys = jax.random.split(jax.random.key(1), 4000)

    def step(state, key):
        chosen = jax.numpy.where(state.previous_action == 3, 1, 3)
        _, new_state, _, terminated, truncated, _ = env.step(key, state, chosen, params)
        executed = new_state.previous_action
        valid = ~(terminated | truncated) & (state.previous_action != 0)
        return new_state, (valid, executed == state.previous_action)

    _, (valid, sticky) = jax.lax.scan(step, state, keys)
    valid, sticky = np.asarray(valid), np.asarray(sticky)
    assert binomtest(int(sticky[valid].sum()), int(valid.sum()), 0.1).pvalue > 1e-3
    plain, _ = create_jax_environment("minatar:breakout", sticky_action_probability=0.0)
    assert plain.sticky_action_probability == 0.0  # the wrapper stays for the game clock (Freeway)


def test_minatar_freeway_is_terminal_after_2501_steps_like_the_package():
    env, params = create_jax_environment("minatar:freeway", params={"max_steps_in_episode": 100_000})
    _, state = env.reset(jax.random.key(0), params)

    def step(state, key):
        _, state, _, terminated, truncated, _ = env.step(key, state, 0, params)
        return state, (terminated, truncated)

    _, (terminated, truncated) = jax.lax.scan(step, state, jax.random.split(jax.random.key(1), 2600))
    assert np.flatnonzero(np.asarray(terminated)).tolist() == [2500]  # the 2501st step
    assert not np.asarray(truncated).any()
    host = create_environment("minatar:freeway")
    host.reset(seed=0)
    length = 0
    while True:
        length += 1
        _, _, terminated, truncated, _ = host.step(0)
        if terminated or truncated:
            break
    assert (length, terminated) == (2501, True)
