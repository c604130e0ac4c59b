"""The shared network library: torsos that turn observations into features, and heads.

Every agent builds its network as `torso -> head`. Torsos take one observation as the replay and
the agent's frame stack present it, `[*obs_shape, stack_size]` (or a batch of them), and return a
feature vector. Heads turn features into Q-values (DQN) or, in later agents, distributions.

Torsos are picked by name through gin (`create_torso.name = 'minatar'`), so a config chooses the
network without code.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import gin
import jax.numpy as jnp

Initializer = nn.initializers.Initializer


def _flatten_stack(x: jnp.ndarray, feature_dims: int) -> jnp.ndarray:
    """Merges the trailing `stack` axis into the channel axis: [..., H, W, C, S] -> [..., H, W, C*S]."""
    if x.ndim < feature_dims + 1:
        raise ValueError(f"expected at least {feature_dims + 1} dims (spatial, channel, stack), got {x.shape}")
    return x.reshape(x.shape[:-2] + (x.shape[-2] * x.shape[-1],))


@gin.configurable
class NatureCNN(nn.Module):
    """Mnih et al. (2015) Atari torso: 84x84 uint8 frames stacked on the last axis, scaled to [0, 1]."""

    hidden_units: int = 512

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        init = nn.initializers.xavier_uniform()
        x = x.astype(jnp.float32) / 255.0  # [..., 84, 84, stack]
        x = nn.relu(nn.Conv(32, (8, 8), strides=(4, 4), kernel_init=init)(x))
        x = nn.relu(nn.Conv(64, (4, 4), strides=(2, 2), kernel_init=init)(x))
        x = nn.relu(nn.Conv(64, (3, 3), strides=(1, 1), kernel_init=init)(x))
        x = x.reshape(x.shape[:-3] + (-1,))
        return nn.relu(nn.Dense(self.hidden_units, kernel_init=init)(x))


@gin.configurable
class MinAtarCNN(nn.Module):
    """Young & Tian (2019) MinAtar torso: one 3x3 conv with 16 channels, then dense 128.

    Input `[..., 10, 10, channels, stack]` booleans/uint8. `padding='VALID'` is the paper's network
    (8x8x16 = 1024 features); Dopamine's MinAtar DQN uses `padding='SAME'` and no hidden layer
    (`hidden_units=()`), which gin can select for like-for-like comparisons.
    """

    features: int = 16
    hidden_units: Sequence[int] = (128,)
    padding: str = "VALID"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        init = nn.initializers.xavier_uniform()
        x = _flatten_stack(x.astype(jnp.float32), 3)
        x = nn.relu(nn.Conv(self.features, (3, 3), padding=self.padding, kernel_init=init)(x))
        x = x.reshape(x.shape[:-3] + (-1,))
        for units in self.hidden_units:
            x = nn.relu(nn.Dense(units, kernel_init=init)(x))
        return x


@gin.configurable
class MLP(nn.Module):
    """Classic-control torso: flattens `[..., *obs_shape, stack]` and applies ReLU layers."""

    hidden_units: Sequence[int] = (512, 512)
    observation_ndim: int = 1  # dims of one observation, excluding the stack axis

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        feature_ndim = self.observation_ndim + 1
        x = x.astype(jnp.float32).reshape(x.shape[: x.ndim - feature_ndim] + (-1,))
        for units in self.hidden_units:
            x = nn.relu(nn.Dense(units, kernel_init=nn.initializers.xavier_uniform())(x))
        return x


TORSOS = {"nature": NatureCNN, "minatar": MinAtarCNN, "mlp": MLP}


@gin.configurable
def create_torso(name: str = "nature") -> nn.Module:
    """Returns the torso registered under `name` (configured by its own gin bindings)."""
    if name not in TORSOS:
        raise ValueError(f"unknown torso {name!r}; valid torsos: {sorted(TORSOS)}")
    return TORSOS[name]()


class QNetwork(nn.Module):
    """`torso -> dense(num_actions)`: Q-values `[..., num_actions]` for `[..., *obs_shape, stack]`."""

    torso: nn.Module
    num_actions: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        features = self.torso(x)
        return nn.Dense(self.num_actions, kernel_init=nn.initializers.xavier_uniform())(features)
