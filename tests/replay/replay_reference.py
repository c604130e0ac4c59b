"""A naive, obviously-correct replay for tests: a list of episodes and the log of written slots.

It knows nothing about rings, cursors or incremental validity. It records every write in order
(one entry per step, plus one per episode's final observation), treats the last `capacity` writes
as live, and recomputes from scratch which steps can be sampled and what each sample should be.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Episode:
    observations: list = field(default_factory=list)  # o_0 .. o_{T-1}, then the final obs if ended
    actions: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    terminated: bool = False
    truncated: bool = False

    @property
    def ended(self) -> bool:
        return self.terminated or self.truncated

    @property
    def num_steps(self) -> int:
        return len(self.actions)


class NaiveReplay:
    def __init__(self, capacity, observation_shape, stack_size, update_horizon, gamma, dtype=np.uint8):
        self.capacity = capacity
        self.shape = tuple(observation_shape)
        self.k = stack_size
        self.n = update_horizon
        self.gamma = gamma
        self.dtype = dtype
        self.episodes: list[Episode] = [Episode()]
        self.log: list[tuple[int, int]] = []  # per write: (episode id, position; final = length)

    def add(self, observation, action, reward, terminated, truncated, final_observation=None):
        episode = self.episodes[-1]
        self.log.append((len(self.episodes) - 1, episode.num_steps))
        episode.observations.append(np.array(observation, self.dtype))
        episode.actions.append(int(action))
        episode.rewards.append(float(reward))
        if terminated or truncated:
            episode.terminated = bool(terminated)
            episode.truncated = bool(truncated) and not terminated
            final = np.zeros(self.shape, self.dtype) if final_observation is None else final_observation
            episode.observations.append(np.array(final, self.dtype))
            self.log.append((len(self.episodes) - 1, episode.num_steps))
            self.episodes.append(Episode())

    def _live(self):
        """Map (episode, position) -> slot index for the last `capacity` writes."""
        start = max(0, len(self.log) - self.capacity)
        return {self.log[t]: t % self.capacity for t in range(start, len(self.log))}

    def transitions(self) -> dict[int, dict]:
        """slot index -> expected transition, for every step that may be sampled now."""
        live = self._live()
        out = {}
        for (e, pos), slot in live.items():
            episode = self.episodes[e]
            if pos >= episode.num_steps:
                continue  # a final-observation slot
            if episode.ended:
                m = min(self.n, episode.num_steps - pos)
            else:
                m = self.n
            needed = [(e, p) for p in range(max(0, pos - self.k + 1), pos + m + 1)]
            if not all(key in live for key in needed):
                continue  # window incomplete or partly overwritten
            reward = sum(self.gamma**i * episode.rewards[pos + i] for i in range(m))
            ends_here = episode.ended and pos + m == episode.num_steps
            discount = 0.0 if (ends_here and episode.terminated) else self.gamma**m
            out[slot] = dict(
                observation=self._stack(episode, pos),
                action=episode.actions[pos],
                reward=reward,
                discount=discount,
                next_observation=self._stack(episode, pos + m),
            )
        return out

    def _stack(self, episode: Episode, pos: int) -> np.ndarray:
        frames = []
        for p in range(pos - self.k + 1, pos + 1):
            frames.append(episode.observations[p] if p >= 0 else np.zeros(self.shape, self.dtype))
        return np.stack(frames, axis=-1)


def random_stream(rng: np.random.Generator, num_steps: int, shape, max_len: int = 12):
    """Yields add() keyword arguments for random episodes with terminations and truncations.

    Observations are distinct (a running counter) so that a wrong frame is always detected.
    """
    counter = 0
    step = 0
    length = int(rng.integers(1, max_len + 1))
    size = int(np.prod(shape))
    while step < num_steps:
        counter += 1
        obs = ((np.arange(size) + counter * 7) % 251 + 1).astype(np.uint8).reshape(shape)
        step += 1
        length -= 1
        kwargs = dict(
            observation=obs,
            action=int(rng.integers(0, 6)),
            reward=float(rng.normal()),
            terminated=False,
            truncated=False,
        )
        if length == 0:
            kind = rng.integers(0, 3)
            if kind == 0:
                kwargs["terminated"] = True  # with or without a final observation
                if rng.random() < 0.5:
                    kwargs["final_observation"] = np.full(shape, 255 - counter % 5, np.uint8)
            else:
                kwargs["truncated"] = True
                kwargs["final_observation"] = np.full(shape, 200 + counter % 50, np.uint8)
            length = int(rng.integers(1, max_len + 1))
        yield kwargs
