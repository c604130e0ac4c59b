"""N Atari games stepped together by ale-py's C++ vector environment, with Dopamine's preprocessing.

`VectorAtariEnv` drives `ale_py.ALEVectorInterface` (a pool of C++ threads, one emulator per
sub-environment) with the settings of Dopamine's `AtariPreprocessing` (Machado et al., 2018),
the same as the single-environment reference `accumbens.environments.atari.AtariEnv`:

  * sticky actions with probability 0.25 inside the emulator (ALE's own `repeat_action_probability`);
  * frame skip 4, the observation the pixel-wise max of the grayscale screens of the last two
    frames, resized to 84x84 by area averaging; one [84, 84] uint8 frame per step (frame stacking
    stays with the replay and the agent: `stack_num=1`);
  * the game's minimal action set; no no-op starts, no FIRE on reset, no reward clipping, no
    life-loss terminals (all off in Dopamine's Atari defaults);
  * at most `max_episode_steps` agent steps (27,000 = 108,000 frames) per episode, reported as
    `truncated`; a game over is `terminated`.

Seeding matches `AtariEnv`: `reset(seeds)` with seed s gives the emulator the ALE seed that
`AtariEnv.reset(seed=s)` derives (the first integer of gymnasium's generator for s), so with the
same seed and actions the emulators, sticky actions included, run the same frames. Later episodes
start without reseeding, as `AtariEnv.reset()` does.

Where it differs from `AtariEnv` (the reference; measured in tests/environments/test_vector_atari.py):

  1. Resize: ale-py uses OpenCV's INTER_AREA in floating point; `AtariEnv` computes the exact area
     average in integers, rounding halves up. Pixels differ by at most 1 grey level.
  2. The observation that ends an episode in the middle of a frame skip (a game over on frames
     1-4 of a step, or the 27,000-step cap, which falls on frame 4): ale-py stops before reading
     that frame, so it pools stale screens (as Dopamine does); `AtariEnv` returns the final screen.
     This observation is only the `final_observation`. After a termination it is never bootstrapped
     from (discount 0); after the cap it is, so a truncated episode's last target differs slightly.
  3. Rewards are summed as integers in C++ (Atari rewards are integers), returned as float.

Same-step autoreset: an ended episode's next observation is already the new episode's first
one, and the ended episode's last one is `final_observation` (see `accumbens.runners.batched_env`).
`send(actions)` returns at once and the emulators step in their threads until `recv()`, so the
caller can work (dispatch an update to the GPU) in between. All sub-environments step on every
call (ale-py 0.11 cannot step a subset); an inactive one is stepped with action 0 and ignored.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import ale_py
import ale_py.roms
import gin
import gymnasium
import numpy as np

from accumbens.environments.atari import GAMES, canonical_game, unknown_game_hint
from accumbens.runners.batched_env import BatchedStep


def ale_seed(seed: int) -> int:
    """The emulator seed `AtariEnv.reset(seed=seed)` uses: gymnasium's generator's first draw."""
    generator, _ = gymnasium.utils.seeding.np_random(int(seed))
    return int(generator.integers(0, 2**31 - 1))


@gin.configurable
class VectorAtariEnv:
    """`num_envs` copies of one Atari game in ale-py's vector environment (see module docstring)."""

    def __init__(
        self,
        game: str,
        num_envs: int,
        *,
        repeat_action_probability: float = 0.25,
        frame_skip: int = 4,
        screen_size: int = 84,
        max_episode_steps: int = 27_000,
        num_threads: int = 0,
        thread_affinity_offset: int = -1,
    ):
        """Args:
          game: a ROM id ("pong") or Dopamine-style name ("Pong"); "atari:Pong" also accepted.
          num_envs: number of sub-environments (one per seed).
          repeat_action_probability: sticky actions (Dopamine: 0.25).
          frame_skip: emulator frames per agent step (Dopamine: 4).
          screen_size: side of the square observation (Dopamine: 84).
          max_episode_steps: cap on agent steps per episode (Dopamine: 27,000).
          num_threads: emulator threads; 0 means min(num_envs, CPU count).
          thread_affinity_offset: pin emulator thread j to CPU core offset + j; -1 leaves them unpinned.
        """
        name = game.split(":", 1)[1] if game.lower().startswith("atari:") else game
        rom_id = canonical_game(name)
        if rom_id is None:
            raise ValueError(f"Unknown Atari game {game!r}.{unknown_game_hint(name)} Valid Atari games: {', '.join(GAMES)}.")
        if num_envs < 1 or frame_skip < 1 or max_episode_steps < 1:
            raise ValueError(
                f"VectorAtariEnv needs num_envs, frame_skip and max_episode_steps >= 1; got {num_envs}, "
                f"{frame_skip}, {max_episode_steps}"
            )
        self.game = rom_id
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        threads = num_threads or min(num_envs, os.cpu_count() or 1)
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
        self.ale = ale_py.ALEVectorInterface(
            rom_path=ale_py.roms.get_rom_path(rom_id),
            num_envs=num_envs,
            frame_skip=frame_skip,
            stack_num=1,
            img_height=screen_size,
            img_width=screen_size,
            grayscale=True,
            maxpool=frame_skip > 1,
            noop_max=0,
            use_fire_reset=False,
            episodic_life=False,
            life_loss_info=False,
            reward_clipping=False,
            max_episode_steps=max_episode_steps * frame_skip,  # counted in frames there
            repeat_action_probability=repeat_action_probability,
            full_action_space=False,
            batch_size=num_envs,
            num_threads=threads,
            thread_affinity_offset=thread_affinity_offset,
            autoreset_mode="SameStep",
        )
        self.single_action_space = gymnasium.spaces.Discrete(len(self.ale.get_action_set()))
        self.single_observation_space = gymnasium.spaces.Box(0, 255, (screen_size, screen_size), np.uint8)
        self._all = list(range(num_envs))
        self._idle_action = np.zeros(num_envs, np.int32)
        self._ones = np.ones(num_envs, np.float32)
        self._sent = False

    def _ordered(self, info: dict, *arrays: np.ndarray) -> list[np.ndarray]:
        """Puts results in sub-environment order (the C++ side returns them as they finish)."""
        order = np.argsort(info["env_id"])
        return [a[order] for a in arrays]

    def reset(self, seeds: Sequence[Optional[int]]) -> np.ndarray:
        """Resets every sub-environment; seed None continues its emulator's RNG. [N, size, size]."""
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset needs {self.num_envs} seeds, got {len(seeds)}")
        ale_seeds = [-1 if s is None else ale_seed(s) for s in seeds]
        observation, info = self.ale.reset(self._all, ale_seeds)
        (observation,) = self._ordered(info, np.asarray(observation))
        return observation[:, 0]

    def send(self, actions: np.ndarray, active: Optional[np.ndarray] = None) -> None:
        """Starts one step of every sub-environment (inactive ones take action 0); returns at once."""
        actions = np.asarray(actions, np.int32)
        if active is not None:
            actions = np.where(active, actions, self._idle_action)
        self.ale.send(actions.tolist(), self._ones.tolist())
        self._sent = True

    def recv(self) -> BatchedStep:
        """Waits for the step started by `send`."""
        if not self._sent:
            raise RuntimeError("recv() without a preceding send()")
        self._sent = False
        observation, reward, terminated, truncated, info = self.ale.recv()
        final = info.get("final_obs", observation)
        observation, reward, terminated, truncated, final = self._ordered(
            info, np.asarray(observation), np.asarray(reward), np.asarray(terminated), np.asarray(truncated), np.asarray(final)
        )
        return BatchedStep(observation[:, 0], reward.astype(np.float64), terminated, truncated & ~terminated, final[:, 0])

    def step(self, actions: np.ndarray) -> BatchedStep:
        """`send` then `recv`."""
        self.send(actions)
        return self.recv()

    def close(self) -> None:
        del self.ale


def _bound(parameter: str, default):
    try:
        return gin.query_parameter(parameter)
    except ValueError:
        return default


@gin.configurable
def create_vector_atari_environment(
    num_envs: int, max_episode_steps: int = 27_000, name: Optional[str] = None, **kwargs
) -> VectorAtariEnv:
    """Factory for the several-seeds runner, which passes `num_envs` and its episode cap.

    `name` defaults to the gin binding `create_environment.name` ("atari:Pong"), and sticky
    actions and frame skip to the `AtariEnv.*` bindings when the gin file sets them, so a
    host-runner Atari gin file needs no new bindings.
    """
    if name is None:
        name = _bound("create_environment.name", None)
        if name is None:
            raise ValueError("create_vector_atari_environment needs `name` or a create_environment.name binding")
    for key in ("repeat_action_probability", "frame_skip", "screen_size"):
        if key not in kwargs:
            value = _bound(f"AtariEnv.{key}", None)
            if value is not None:
                kwargs[key] = value
    return VectorAtariEnv(name, num_envs, max_episode_steps=max_episode_steps, **kwargs)
