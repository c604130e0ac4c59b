"""DonutWorld: a 2-D latent state rendered as a high-dimensional image, for DeepMDP's latent check.

After the synthetic demonstration of Gelada et al. (2019, DeepMDP, sec. on recovering latent
structure): an agent moves on a donut-shaped track and is rewarded for running clockwise around
it; the agent sees only an image. A representation that supports the latent MDP's reward and
transition models must recover the low-dimensional position from the pixels.

  state       p = (x, y) in the annulus  inner_radius <= |p| <= outer_radius  (inside [-1, 1]^2)
  actions     0 up, 1 down, 2 left, 3 right: p' = p + step * direction, then pulled back
              radially into the annulus (deterministic)
  reward      the clockwise angular progress of the move, wrap(theta(p) - theta(p')) in radians,
              which depends on both the angle (the move's direction against the track) and the
              radius (a step of fixed length turns more near the inner edge)
  observation a `size` x `size` float32 image in [0, 1]: a Gaussian blob of width `blob_sigma`
              pixels centred on p (1024 numbers for the default 32 x 32)

Everything is vectorised NumPy over a leading batch axis; `DonutWorld` is a small gymnasium
environment over the same functions (not registered in the environment factory: it exists for
`benchmarks/deepmdp_latent.py` and for experiments).
"""
from __future__ import annotations

from typing import Optional

import gymnasium as gym
import numpy as np

MOVES = np.array([[0.0, 1.0], [0.0, -1.0], [-1.0, 0.0], [1.0, 0.0]], np.float64)  # up, down, left, right
NUM_ACTIONS = len(MOVES)


def sample_states(rng: np.random.Generator, count: int, inner_radius: float = 0.5, outer_radius: float = 1.0) -> np.ndarray:
    """`count` positions [count, 2], uniform over the annulus's area."""
    angle = rng.uniform(-np.pi, np.pi, count)
    radius = np.sqrt(rng.uniform(inner_radius**2, outer_radius**2, count))
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)


def step(
    position: np.ndarray, action: np.ndarray, step_size: float = 0.1, inner_radius: float = 0.5, outer_radius: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """(next positions [B, 2], rewards [B]) for positions [B, 2] and actions [B] in 0..3."""
    position = np.asarray(position, np.float64)
    action = np.asarray(action)
    if action.min(initial=0) < 0 or action.max(initial=0) >= NUM_ACTIONS:
        raise ValueError(f"actions must be in 0..{NUM_ACTIONS - 1}, got {np.unique(action)}")
    moved = position + step_size * MOVES[action]
    radius = np.linalg.norm(moved, axis=-1, keepdims=True)
    next_position = moved * np.clip(radius, inner_radius, outer_radius) / np.maximum(radius, 1e-12)
    before = np.arctan2(position[..., 1], position[..., 0])
    after = np.arctan2(next_position[..., 1], next_position[..., 0])
    reward = np.angle(np.exp(1j * (before - after)))  # clockwise progress, wrapped to (-pi, pi]
    return next_position, reward


def render(position: np.ndarray, size: int = 32, blob_sigma: float = 1.0) -> np.ndarray:
    """Images [B, size, size] float32: a Gaussian blob at each position ([-1, 1]^2 -> pixel grid)."""
    position = np.asarray(position, np.float64)
    centre = (position + 1.0) * 0.5 * (size - 1)  # [B, 2] pixel coordinates (x -> column, y -> row)
    grid = np.arange(size, dtype=np.float64)
    dx = (grid[None, :] - centre[:, :1]) ** 2  # [B, size] over columns
    dy = (grid[None, :] - centre[:, 1:]) ** 2  # [B, size] over rows
    image = np.exp(-(dy[:, :, None] + dx[:, None, :]) / (2.0 * blob_sigma**2))
    return image.astype(np.float32)


class DonutWorld(gym.Env):
    """The gymnasium form: observations [size, size] float32, 4 actions, episodes of `max_steps`."""

    def __init__(self, size: int = 32, step_size: float = 0.1, inner_radius: float = 0.5, outer_radius: float = 1.0,
                 blob_sigma: float = 1.0, max_steps: int = 200):
        if not 0.0 < inner_radius < outer_radius <= 1.0:
            raise ValueError(f"need 0 < inner_radius < outer_radius <= 1, got {inner_radius}, {outer_radius}")
        self.size, self.step_size, self.blob_sigma, self.max_steps = size, step_size, blob_sigma, max_steps
        self.inner_radius, self.outer_radius = inner_radius, outer_radius
        self.observation_space = gym.spaces.Box(0.0, 1.0, (size, size), np.float32)
        self.action_space = gym.spaces.Discrete(NUM_ACTIONS)
        self.position = np.zeros(2)
        self.steps = 0

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        self.position = sample_states(self.np_random, 1, self.inner_radius, self.outer_radius)[0]
        self.steps = 0
        return render(self.position[None], self.size, self.blob_sigma)[0], {"position": self.position.copy()}

    def step(self, action):
        nxt, reward = step(self.position[None], np.array([int(action)]), self.step_size, self.inner_radius, self.outer_radius)
        self.position = nxt[0]
        self.steps += 1
        observation = render(nxt, self.size, self.blob_sigma)[0]
        return observation, float(reward[0]), False, self.steps >= self.max_steps, {"position": self.position.copy()}
