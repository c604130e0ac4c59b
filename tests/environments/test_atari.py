"""Atari: Dopamine's preprocessing checked against a float64 reference on a raw ALE."""
import inspect

import ale_py
import ale_py.roms
import numpy as np
import pytest

from accumbens.environments import create_environment, parse_name
from accumbens.environments.atari import AtariEnv
from accumbens.environments.preprocessing import AreaResize, area_weights


_ROWS = area_weights(210, 84)
_COLUMNS = area_weights(160, 84)


def _reference_resize(image: np.ndarray) -> np.ndarray:
    """float64 area resize 210x160 -> 84x84, before rounding: rows @ image @ columns.T."""
    # einsum without `optimize` avoids BLAS, whose thread pool is erratic on a busy 2-core CPU.
    rows = np.einsum("ij,jk->ik", _ROWS, image.astype(np.float64))
    return np.einsum("ik,lk->il", rows, _COLUMNS)


def _reference_observation(frames: list[np.ndarray]) -> np.ndarray:
    """float64 max over the last two frames, area-resized to 84x84 (before rounding)."""
    pooled = np.maximum(frames[-2], frames[-1]).astype(np.float64)
    return _reference_resize(pooled)


def _assert_matches_reference(observation: np.ndarray, reference: np.ndarray) -> None:
    """Equal to the reference rounded to nearest, except possibly at exact .5 ties, where
    float64 may land on either side."""
    expected = np.floor(reference + 0.5)
    tie = np.abs(reference - np.floor(reference) - 0.5) < 1e-6
    difference = np.abs(observation.astype(np.float64) - expected)
    assert np.all(difference[~tie] == 0)
    assert np.all(difference[tie] <= 1)


def test_names():
    assert parse_name("atari:Pong") == ("atari", "pong")
    assert parse_name("atari:pong") == ("atari", "pong")
    assert parse_name("atari:SpaceInvaders") == ("atari", "space_invaders")
    assert parse_name("atari:space_invaders") == ("atari", "space_invaders")
    assert parse_name("atari:MontezumaRevenge") == ("atari", "montezuma_revenge")


@pytest.mark.parametrize("name", ["atari:PongNoFrameskip-v4", "atari:Pongg"])
def test_unknown_game_lists_games(name):
    with pytest.raises(ValueError) as error:
        create_environment(name)
    message = str(error.value)
    assert "Pong" in message and "SpaceInvaders" in message and "Breakout" in message
    if "v4" in name:
        assert "Gym-style ids are not accepted" in message


def test_dopamine_defaults():
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(AtariEnv.__init__).parameters.items()
    }
    assert defaults["repeat_action_probability"] == 0.25
    assert defaults["frame_skip"] == 4
    assert defaults["screen_size"] == 84
    assert defaults["terminal_on_life_loss"] is False
    assert defaults["max_episode_steps"] == 27_000
    env = create_environment("atari:Pong")
    env.reset(seed=0)
    assert env.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    assert env.action_space.n == len(env.ale.getMinimalActionSet()) == 6
    assert create_environment("atari:Breakout").action_space.n == 4


def test_area_resize_is_exact():
    rng = np.random.default_rng(0)
    resize = AreaResize((210, 160), (84, 84))
    for _ in range(3):
        image = rng.integers(0, 256, (210, 160), dtype=np.uint8)
        output = resize(image)
        assert output.shape == (84, 84) and output.dtype == np.uint8
        assert output.flags.c_contiguous
        _assert_matches_reference(output, _reference_resize(image))
    assert np.all(resize(np.full((210, 160), 255, np.uint8)) == 255)


def test_preprocessing_matches_raw_ale_reference():
    """Step our env and a raw frame-skip-1 ALE (same seed, sticky actions) side by side."""
    env = AtariEnv("pong")
    observation, _ = env.reset(seed=5)

    raw = ale_py.ALEInterface()
    raw.setInt("random_seed", env.ale_seed)
    raw.setFloat("repeat_action_probability", 0.25)
    raw.loadROM(ale_py.roms.get_rom_path("pong"))
    raw.reset_game()
    actions = raw.getMinimalActionSet()
    frames = [np.zeros((210, 160), np.uint8), raw.getScreenGrayscale()]
    _assert_matches_reference(observation, _reference_observation(frames))

    rng = np.random.default_rng(0)
    total_reward = 0.0
    for _ in range(120):  # Pong scores every ~35 steps here.
        action = int(rng.integers(len(actions)))
        observation, reward, terminated, truncated, _ = env.step(action)
        raw_reward = 0.0
        frames = []
        for _ in range(4):
            raw_reward += raw.act(actions[action])
            frames.append(raw.getScreenGrayscale())
        assert observation.shape == (84, 84) and observation.dtype == np.uint8
        assert reward == raw_reward
        assert not terminated and not truncated
        _assert_matches_reference(observation, _reference_observation(frames))
        total_reward += reward
    assert total_reward != 0  # The reference comparison covered scoring frames too.


def test_seeding_reproduces_episodes():
    def rollout(seed):
        env = AtariEnv("pong")
        observations = [env.reset(seed=seed)[0]]
        rng = np.random.default_rng(1)
        observations += [env.step(int(rng.integers(6)))[0] for _ in range(100)]
        return np.stack(observations)

    first, second, other = rollout(3), rollout(3), rollout(4)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)  # Sticky actions differ with the seed.


def test_episode_cap_truncates_and_next_reset_starts_new_game():
    env = AtariEnv("pong", max_episode_steps=20)
    env.reset(seed=0)
    flags = [env.step(0)[2:4] for _ in range(20)]
    assert flags[:-1] == [(False, False)] * 19
    assert flags[-1] == (False, True)
    _, info = env.reset()
    assert info["episode_step"] == 0


def test_terminal_on_life_loss():
    env = AtariEnv("breakout", terminal_on_life_loss=True)
    _, info = env.reset(seed=0)
    assert info["lives"] == 5
    rng = np.random.default_rng(0)
    lives_seen = []
    for _ in range(5):  # One episode per life.
        terminated = truncated = False
        steps = 0
        while not (terminated or truncated):
            _, _, terminated, truncated, info = env.step(int(rng.integers(4)))
            steps += 1
        assert terminated and not truncated
        lives_seen.append(info["lives"])
        if env.game_over:
            break
        # The game continues from the same screen: no emulator reset, same lives.
        _, reset_info = env.reset()
        assert reset_info["lives"] == info["lives"]
        assert reset_info["episode_step"] == info["episode_step"]
    assert lives_seen == [4, 3, 2, 1, 0]
    assert env.game_over
    _, info = env.reset()
    assert info["lives"] == 5 and info["episode_step"] == 0


@pytest.mark.parametrize("reset_kwargs", [{"seed": 1}, {"options": {"full_reset": True}}])
def test_seed_or_full_reset_starts_a_new_game_after_a_life_loss(reset_kwargs):
    env = AtariEnv("breakout", terminal_on_life_loss=True)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    terminated = False
    while not terminated:
        _, _, terminated, _, info = env.step(int(rng.integers(4)))
    assert info["lives"] == 4
    _, info = env.reset(**reset_kwargs)
    assert info["lives"] == 5 and info["episode_step"] == 0


def test_without_life_loss_a_lost_life_is_not_terminal():
    env = AtariEnv("breakout")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(400):
        _, _, terminated, _, info = env.step(int(rng.integers(4)))
        if info["lives"] < 5:
            break
    assert info["lives"] < 5 and not terminated
