"""Atari 2600 games through ale-py, with Dopamine's preprocessing.

`AtariEnv` talks to `ale_py.ALEInterface` directly (no gymnasium AtariEnv underneath) and
follows Dopamine's `AtariPreprocessing` and its defaults (Machado et al., 2018):

  * sticky actions: the emulator repeats the previous action with probability 0.25
    (`repeat_action_probability`), the only source of randomness;
  * frame skip 4: one agent step is 4 emulator frames with the same action, rewards summed;
  * the observation is the pixel-wise max of the grayscale screens of the last two of those
    frames (removing sprite flicker), resized to 84x84 by area averaging: one [84, 84] uint8
    frame. Frame stacking is left to the replay and the agent, so a frame is stored once;
  * the minimal action set of the game;
  * optional `terminal_on_life_loss`;
  * at most 27,000 agent steps (108,000 frames) per game; reaching the cap ends the episode
    with `truncated=True`, while a game over gives `terminated=True`; either way the next
    `reset()` starts a new game.

One deviation from Dopamine: when an episode ends before the last frame of a step (game over,
or a life lost in life-loss mode), Dopamine returns partly stale pooled frames; here the
observation is the final screen.

With `terminal_on_life_loss=True`, losing a life returns `terminated=True` (the agent should not
bootstrap through a life loss) but the game goes on: the next `reset()` without a seed continues
from the current screen, as Dopamine's runner does, and only resets the emulator once the game
is over (`game_over`). The 27,000-step cap counts steps since the emulator's last reset.

Seeding: `reset(seed=s)` reseeds the emulator (sticky actions) from `s` and restarts the game,
so equal seeds and actions give equal episodes. The first `reset()` without a seed seeds the
emulator from fresh entropy.

Speed: screens are read with `getScreenGrayscale` into preallocated buffers and resized with a
banded NumPy area resize (`preprocessing.py`); see the factory module for measured rates.
"""
from __future__ import annotations

import re
from typing import Any

import ale_py
import ale_py.roms
import gin
import gymnasium
import numpy as np

from accumbens.environments.preprocessing import AreaResize


def _camel_case(rom_id: str) -> str:
    return "".join(part.capitalize() for part in rom_id.split("_"))


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


_ROM_IDS: tuple[str, ...] = tuple(sorted(ale_py.roms.get_all_rom_ids()))
_ROM_BY_KEY: dict[str, str] = {_key(rom_id): rom_id for rom_id in _ROM_IDS}

# Dopamine-style names for error messages: "Pong", "SpaceInvaders", "MontezumaRevenge".
GAMES: tuple[str, ...] = tuple(_camel_case(rom_id) for rom_id in _ROM_IDS)


def canonical_game(name: str) -> str | None:
    """The ROM id ("space_invaders") for "SpaceInvaders", "space_invaders", "spaceinvaders"."""
    return _ROM_BY_KEY.get(_key(name))


def unknown_game_hint(name: str) -> str:
    """Explains why gym-style ids such as "PongNoFrameskip-v4" or "ALE/Pong-v5" are refused."""
    if re.search(r"(NoFrameskip|Deterministic)?-v\d+$", name) or name.startswith("ALE/"):
        return (
            " Gym-style ids are not accepted: their suffix implies gym's preprocessing settings."
            " Name the game alone (e.g. 'atari:Pong') and set the preprocessing with AtariEnv's"
            " arguments (repeat_action_probability, frame_skip, terminal_on_life_loss, ...)."
        )
    return ""


@gin.configurable
class AtariEnv(gymnasium.Env):
    """An Atari game with Dopamine's preprocessing; observations are [84, 84] uint8."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        game: str,
        repeat_action_probability: float = 0.25,
        frame_skip: int = 4,
        screen_size: int = 84,
        terminal_on_life_loss: bool = False,
        max_episode_steps: int | None = 27_000,
        mode: int | None = None,
        difficulty: int | None = None,
        render_mode: str | None = None,
    ):
        """Loads the game's ROM.

        Args:
          game: a ROM id ("pong", "space_invaders") or its CamelCase name ("SpaceInvaders").
          repeat_action_probability: sticky-action probability (Dopamine and Machado et al.:
            0.25; 0.0 for the deterministic emulator).
          frame_skip: emulator frames per agent step (>= 1). With frame_skip >= 2 the
            observation is the max over the last two frames.
          screen_size: side of the square observation.
          terminal_on_life_loss: report a lost life as termination (see module docstring).
          max_episode_steps: truncate the game after this many agent steps (None: never).
          mode, difficulty: ALE game mode and difficulty (None: the game's defaults).
          render_mode: None or "rgb_array" (`render()` returns the raw RGB screen).
        """
        rom_id = canonical_game(game)
        if rom_id is None:
            raise ValueError(
                f"Unknown Atari game {game!r}.{unknown_game_hint(game)} "
                f"Valid Atari games: {', '.join(GAMES)}."
            )
        if frame_skip < 1:
            raise ValueError(f"frame_skip must be at least 1, got {frame_skip}.")
        self.game = rom_id
        self.repeat_action_probability = repeat_action_probability
        self.frame_skip = frame_skip
        self.terminal_on_life_loss = terminal_on_life_loss
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self._mode = mode
        self._difficulty = difficulty

        # The logger mode is global to ale-py; Error silences its banner and per-ROM messages.
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
        self.ale = ale_py.ALEInterface()
        self.ale_seed: int | None = None  # The emulator's current seed, derived in reset().
        self._load_rom()
        self._actions = self.ale.getMinimalActionSet()
        self._seeded = False

        height, width = self.ale.getScreenDims()
        # The grayscale screens of the last two frames of a step; the max of the two is pooled
        # into _screens[0].
        self._screens = np.zeros((2, height, width), dtype=np.uint8)
        self._resize = AreaResize((height, width), (screen_size, screen_size))
        self._lives = 0
        self._episode_steps = 0
        # False only when the last step ended by a lost life (life-loss mode), not a game over.
        self._new_game_on_reset = True

        self.action_space = gymnasium.spaces.Discrete(len(self._actions))
        self.observation_space = gymnasium.spaces.Box(
            low=0, high=255, shape=(screen_size, screen_size), dtype=np.uint8
        )

    def _load_rom(self) -> None:
        """(Re)loads the ROM, which applies the settings, including the random seed."""
        if self.ale_seed is not None:
            self.ale.setInt("random_seed", self.ale_seed)
        self.ale.setFloat("repeat_action_probability", self.repeat_action_probability)
        self.ale.setInt("frame_skip", 1)  # Frame skipping is done here, to pool the frames.
        self.ale.loadROM(ale_py.roms.get_rom_path(self.game))
        if self._mode is not None:
            self.ale.setMode(self._mode)
        if self._difficulty is not None:
            self.ale.setDifficulty(self._difficulty)

    @property
    def game_over(self) -> bool:
        """Whether the game itself has ended (as opposed to a life lost)."""
        return self.ale.game_over()

    @property
    def lives(self) -> int:
        return self._lives

    def _observation(self) -> np.ndarray:
        """Max-pools the two screen buffers and resizes: a new [size, size] uint8 array."""
        if self.frame_skip > 1:
            np.maximum(self._screens[0], self._screens[1], out=self._screens[0])
        return self._resize(self._screens[0])

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Starts a new game, or (life-loss mode, game not over) continues the current one.

        A seed, or `options={"full_reset": True}`, forces a new game in life-loss mode.
        """
        super().reset(seed=seed)
        full_reset = bool(options and options.get("full_reset"))
        if seed is not None or not self._seeded:
            # ALE takes a non-negative 32-bit int; derive it from gymnasium's seeded generator.
            self.ale_seed = int(self.np_random.integers(0, 2**31 - 1))
            self._load_rom()
            self._seeded = True
            full_reset = True
        if self._new_game_on_reset or full_reset or not self.terminal_on_life_loss:
            self.ale.reset_game()
            self._episode_steps = 0
        self._lives = self.ale.lives()
        self.ale.getScreenGrayscale(self._screens[0])
        self._screens[1].fill(0)
        return self._observation(), {"lives": self._lives, "episode_step": self._episode_steps}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Repeats `action` for `frame_skip` frames; returns the pooled, resized observation."""
        ale_action = self._actions[int(action)]
        self._new_game_on_reset = True
        reward = 0.0
        terminated = False
        first_pooled = self.frame_skip - 2  # Frames from here on are pooled.
        for frame in range(self.frame_skip):
            reward += self.ale.act(ale_action)
            game_over = self.ale.game_over()
            life_lost = self.terminal_on_life_loss and self.ale.lives() < self._lives
            if game_over or life_lost:
                # The episode ends mid-skip: observe the final screen alone.
                self.ale.getScreenGrayscale(self._screens[0])
                self._screens[1] = self._screens[0]
                self._new_game_on_reset = game_over
                terminated = True
                break
            if frame >= first_pooled:
                self.ale.getScreenGrayscale(self._screens[frame - first_pooled])
        self._lives = self.ale.lives()
        self._episode_steps += 1
        truncated = (
            not terminated
            and self.max_episode_steps is not None
            and self._episode_steps >= self.max_episode_steps
        )
        info = {"lives": self._lives, "episode_step": self._episode_steps}
        return self._observation(), reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """The raw [210, 160, 3] RGB screen when render_mode == "rgb_array"."""
        if self.render_mode == "rgb_array":
            return self.ale.getScreenRGB()
        return None


def make(game: str, **kwargs: Any) -> AtariEnv:
    """The factory's entry point (see `accumbens.environments.create_environment`)."""
    return AtariEnv(game, **kwargs)
