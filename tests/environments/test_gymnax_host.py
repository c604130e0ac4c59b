"""`GymnaxHostEnv`: a gymnax game stepped from the host, checked against gymnax's own functions."""
import numpy as np
import pytest

gymnax = pytest.importorskip("gymnax", reason="gymnax (the jax-envs extra) is not installed")
jax = pytest.importorskip("jax")

from accumbens.environments import create_environment, create_jax_environment  # noqa: E402
from accumbens.environments.gymnax_host import GymnaxHostEnv, canonical_game  # noqa: E402


def _reference_episode(name, seed, actions, max_steps):
    """The same game played with gymnax's reset/step directly (no auto-reset used: stops at the end)."""
    env, params = create_jax_environment(name, params={"max_steps_in_episode": max_steps})
    key = jax.random.PRNGKey(seed)
    key, reset_key = jax.random.split(key)
    obs, state = env.reset(reset_key, params)
    observations, rewards, ends = [np.asarray(obs)], [], []
    for action in actions:
        key, step_key = jax.random.split(key)
        obs, state, reward, terminated, truncated, info = env.step(step_key, state, action, params)
        ended = bool(terminated) or bool(truncated)
        observations.append(np.asarray(info["final_observation"] if ended else obs))
        rewards.append(float(reward))
        ends.append((bool(terminated), bool(truncated) and not bool(terminated)))
        if ended:
            break
    return observations, rewards, ends


@pytest.mark.parametrize("name,max_steps", [("minatar:breakout", 1000), ("gym:CartPole-v1", 500), ("gym:CartPole-v1", 7)])
def test_matches_gymnax_step_by_step(name, max_steps):
    env = GymnaxHostEnv(name, max_episode_steps=max_steps)
    rng = np.random.default_rng(1)
    actions = [int(a) for a in rng.integers(0, env.action_space.n, size=400)]
    ref_obs, ref_rewards, ref_ends = _reference_episode(name, 11, actions, max_steps)
    obs, _ = env.reset(seed=11)
    np.testing.assert_array_equal(obs, ref_obs[0])
    for t, action in enumerate(actions[: len(ref_rewards)]):
        obs, reward, terminated, truncated, _ = env.step(action)
        np.testing.assert_allclose(obs, ref_obs[t + 1].astype(obs.dtype), rtol=1e-6, atol=1e-7)  # jit may fuse differently
        assert reward == pytest.approx(ref_rewards[t])
        assert (terminated, truncated) == ref_ends[t]
    assert terminated or truncated, "the reference episode ended, so must the host one"
    if max_steps == 7:  # CartPole cannot fail in 7 steps: a time-limit truncation
        assert (terminated, truncated) == (False, True) and len(ref_rewards) == 7


def test_spaces_and_dtypes_match_the_compiled_runner():
    breakout = create_environment("jax:minatar:breakout")
    assert isinstance(breakout, GymnaxHostEnv)
    assert breakout.observation_space.shape == (10, 10, 4) and breakout.observation_space.dtype == np.uint8
    assert breakout.action_space.n == 6  # all MinAtar actions, as the minatar package and the compiled runner
    obs, _ = breakout.reset(seed=0)
    assert obs.dtype == np.uint8 and set(np.unique(obs)) <= {0, 1}
    cartpole = create_environment("jax:gym:cartpole-v1")
    obs, _ = cartpole.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (4,) and cartpole.action_space.n == 2


def test_seeding_reproduces_and_continues():
    env = GymnaxHostEnv("minatar:breakout")
    actions = [3, 1, 1, 5, 0, 2, 4, 4, 3, 1] * 20

    def play():
        frames = []
        for a in actions:
            obs, _, terminated, truncated, _ = env.step(a)
            frames.append(obs.copy())
            if terminated or truncated:
                break
        return np.stack(frames)

    env.reset(seed=2**40 + 3)  # seeds above 2**32 are accepted (the host runner's phase seeds are 32-bit)
    first = play()
    env.reset(seed=2**40 + 3)
    np.testing.assert_array_equal(play(), first)
    env.reset()  # continues the key: a different episode
    second = play()
    assert second.shape != first.shape or not np.array_equal(second, first)


def test_bad_input_is_refused_with_a_clear_message():
    assert canonical_game("minatar:SpaceInvaders") == "minatar:space_invaders"
    assert canonical_game("minatar:pong") is None
    with pytest.raises(ValueError, match="jax:minatar:breakout"):
        create_environment("jax:minatar:pong")
    env = GymnaxHostEnv("minatar:breakout")
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(6)
    with pytest.raises(ValueError, match="seed"):
        env.reset(seed=-1)
