"""ale-py's vector environment (`VectorAtariEnv`) against the single-environment reference `AtariEnv`.

With sticky actions off the emulator is deterministic, so on a fixed action sequence both paths
must give the same rewards, terminations, truncations and episode lengths. Observations: equal
within 1 grey level (OpenCV's floating-point INTER_AREA vs the exact integer area average; on
these frames they agree exactly, which the test also records). The one documented exception
is the observation that ends an episode mid frame-skip (ale-py pools stale screens there), which
is only ever a `final_observation`.
"""
import numpy as np
import pytest

from accumbens.environments.atari import AtariEnv
from accumbens.environments.vector_atari import VectorAtariEnv, ale_seed, create_vector_atari_environment


def _reference_rollout(game, seed, actions, cap, sticky=0.0):
    env = AtariEnv(game, repeat_action_probability=sticky, max_episode_steps=cap)
    observation, _ = env.reset(seed=seed)
    out = {"obs": [observation], "reward": [], "terminated": [], "truncated": [], "lengths": [], "final": []}
    length = 0
    for a in actions:
        observation, reward, terminated, truncated, _ = env.step(int(a))
        length += 1
        out["reward"].append(reward)
        out["terminated"].append(terminated)
        out["truncated"].append(truncated)
        if terminated or truncated:
            out["lengths"].append(length)
            out["final"].append(observation)
            length = 0
            observation, _ = env.reset()
        out["obs"].append(observation)
    return out


def _vector_rollout(game, seeds, actions, cap, sticky=0.0):
    env = VectorAtariEnv(game, len(seeds), repeat_action_probability=sticky, max_episode_steps=cap)
    observation = env.reset(seeds)
    per_env = [{"obs": [observation[i]], "reward": [], "terminated": [], "truncated": [], "lengths": [], "final": []}
               for i in range(len(seeds))]
    lengths = np.zeros(len(seeds), int)
    for a in actions:
        step = env.step(np.full(len(seeds), a))
        lengths += 1
        for i, out in enumerate(per_env):
            out["reward"].append(step.reward[i])
            out["terminated"].append(bool(step.terminated[i]))
            out["truncated"].append(bool(step.truncated[i]))
            if step.terminated[i] or step.truncated[i]:
                out["lengths"].append(int(lengths[i]))
                out["final"].append(step.final_observation[i])
                lengths[i] = 0
            out["obs"].append(step.observation[i])
    env.close()
    return per_env


@pytest.mark.parametrize("game,steps,cap", [("Breakout", 500, 27_000), ("Pong", 260, 120)])
def test_vector_matches_reference_on_fixed_actions(game, steps, cap):
    actions = np.random.default_rng(0).integers(0, 4, size=steps)  # Breakout and Pong share actions 0-3
    want = _reference_rollout(game, 7, actions, cap)
    got = _vector_rollout(game, [7, 8], actions, cap)[0]
    assert want["lengths"], "the rollout should cross an episode boundary"
    np.testing.assert_array_equal(got["reward"], want["reward"])
    assert got["terminated"] == want["terminated"]
    assert got["truncated"] == want["truncated"]
    assert got["lengths"] == want["lengths"]
    obs_got, obs_want = np.array(got["obs"], np.int16), np.array(want["obs"], np.int16)
    assert np.abs(obs_got - obs_want).max() <= 1


def test_cap_truncates_with_same_step_reset():
    got = _vector_rollout("Pong", [3], np.zeros(25, int), cap=10)[0]
    assert got["lengths"] == [10, 10]
    assert got["truncated"][9] and got["truncated"][19] and not any(got["terminated"])
    # After the reset the observation is the new episode's first frame: the game's start screen.
    np.testing.assert_array_equal(got["obs"][10], got["obs"][0])


def test_seeding_matches_the_reference_with_sticky_actions():
    """Same ALE seed derivation as AtariEnv: with sticky actions on, the emulators still agree."""
    actions = np.random.default_rng(1).integers(0, 6, size=300)
    want = _reference_rollout("Pong", 11, actions, 27_000, sticky=0.25)
    got = _vector_rollout("Pong", [11], actions, 27_000, sticky=0.25)[0]
    np.testing.assert_array_equal(got["reward"], want["reward"])
    assert np.abs(np.array(got["obs"], np.int16) - np.array(want["obs"], np.int16)).max() <= 1
    assert ale_seed(11) != ale_seed(12)


def test_environments_are_independent_of_their_batch():
    """Sub-environment i with seed s runs the same episode whatever the other seeds are."""
    actions = np.random.default_rng(2).integers(0, 6, size=100)
    alone = _vector_rollout("Pong", [5], actions, 27_000, sticky=0.25)[0]
    together = _vector_rollout("Pong", [9, 5], actions, 27_000, sticky=0.25)[1]
    np.testing.assert_array_equal(np.array(alone["obs"]), np.array(together["obs"]))


def test_bad_names_and_factory_errors():
    with pytest.raises(ValueError, match="Valid Atari games"):
        VectorAtariEnv("NotAGame", 1)
    with pytest.raises(ValueError, match="num_envs"):
        VectorAtariEnv("Pong", 0)
    env = create_vector_atari_environment(num_envs=1, name="atari:Pong")
    assert env.single_action_space.n == 6 and env.single_observation_space.shape == (84, 84)
