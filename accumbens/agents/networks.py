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


class PatchConv(nn.Module):
    """A stride-1 2-D convolution written as patch extraction (slices) plus one matrix product.

    Same parameters as `nn.Conv` (`kernel` [kh, kw, C, F], `bias` [F]), same initialisation and the
    same function up to float rounding. Why: under `jax.vmap` over parameters (many seeds in one
    program, the compiled runner) XLA turns `nn.Conv` into a grouped convolution, which GPUs run
    slowly; this form becomes a batched matrix product instead.
    """

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    padding: str = "VALID"
    kernel_init: Initializer = nn.initializers.xavier_uniform()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kh, kw = self.kernel_size
        channels = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (kh, kw, channels, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        if self.padding == "SAME":
            top, left = (kh - 1) // 2, (kw - 1) // 2
            pad = [(0, 0)] * (x.ndim - 3) + [(top, kh - 1 - top), (left, kw - 1 - left), (0, 0)]
            x = jnp.pad(x, pad)
        elif self.padding != "VALID":
            raise ValueError(f"PatchConv padding must be 'VALID' or 'SAME', got {self.padding!r}")
        height, width = x.shape[-3] - kh + 1, x.shape[-2] - kw + 1
        patches = jnp.concatenate(
            [x[..., i : i + height, j : j + width, :] for i in range(kh) for j in range(kw)], axis=-1
        )  # [..., H', W', kh*kw*C], ordered like kernel.reshape(kh*kw*C, F)
        return patches @ kernel.reshape(kh * kw * channels, self.features) + bias


@gin.configurable
class MinAtarCNN(nn.Module):
    """Young & Tian (2019) MinAtar torso: one 3x3 conv with 16 channels, then dense 128.

    Input `[..., 10, 10, channels, stack]` booleans/uint8. `padding='VALID'` is the paper's network
    (8x8x16 = 1024 features); Dopamine's MinAtar DQN uses `padding='SAME'` and no hidden layer
    (`hidden_units=()`), which gin can select for like-for-like comparisons.

    conv_impl='patches' computes the same convolution as slices and one matrix product
    (`PatchConv`, same parameters), which is much faster when many seeds are vmapped on a GPU.
    """

    features: int = 16
    hidden_units: Sequence[int] = (128,)
    padding: str = "VALID"
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        init = nn.initializers.xavier_uniform()
        x = _flatten_stack(x.astype(jnp.float32), 3)
        if self.conv_impl == "xla":
            conv = nn.Conv(self.features, (3, 3), padding=self.padding, kernel_init=init)
        elif self.conv_impl == "patches":
            conv = PatchConv(self.features, (3, 3), padding=self.padding, kernel_init=init, name="Conv_0")
        else:
            raise ValueError(f"MinAtarCNN.conv_impl must be 'xla' or 'patches', got {self.conv_impl!r}")
        x = nn.relu(conv(x))
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


# ----- Rainbow: noisy linear layers and the distributional (C51) head --------------------------
# Used by accumbens.agents.rainbow and by the agents that stand on its head.
import jax  # noqa: E402
from typing import NamedTuple, Optional  # noqa: E402


@gin.configurable
class NatureConvTorso(nn.Module):
    """Nature CNN's three convolutions, flattened, without the 512-unit layer.

    For Rainbow variants whose 512-unit hidden layer belongs to the (noisy) head, as in Dopamine's
    full Rainbow and DER: `RainbowNetwork(hidden_units=(512,), noisy=True)` on this torso is
    `FullRainbowNetwork`. Input `[..., 84, 84, stack]` uint8; output `[..., 3136]`.
    """

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        init = nn.initializers.xavier_uniform()
        x = x.astype(jnp.float32) / 255.0
        x = nn.relu(nn.Conv(32, (8, 8), strides=(4, 4), kernel_init=init)(x))
        x = nn.relu(nn.Conv(64, (4, 4), strides=(2, 2), kernel_init=init)(x))
        x = nn.relu(nn.Conv(64, (3, 3), strides=(1, 1), kernel_init=init)(x))
        return x.reshape(x.shape[:-3] + (-1,))


TORSOS["nature_conv"] = NatureConvTorso


def _scaled_noise(key: jax.Array, shape: Sequence[int]) -> jnp.ndarray:
    """f(e) = sign(e) sqrt(|e|), e ~ N(0, 1): Fortunato et al. (2018) eq. (11)."""
    e = jax.random.normal(key, shape)
    return jnp.sign(e) * jnp.sqrt(jnp.abs(e))


class NoisyDense(nn.Module):
    """Factorised Gaussian noisy linear layer (Fortunato et al. 2018, sec. 3.1-3.2).

    y = x (W_mu + W_sigma * f(p) f(q)^T) + b_mu + b_sigma * f(q), with p ~ N(0, I_in),
    q ~ N(0, I_out) drawn from the `'noise'` RNG stream (`apply(..., rngs={'noise': key})`), so
    the noise is a pure function of that key: the same key gives the same noise, and one noise
    sample is shared by every row of a batch. Initialisation: mu ~ U(-1/sqrt(in), 1/sqrt(in)),
    sigma = sigma_zero / sqrt(in) (the paper's sigma_0 = 0.5; Dopamine's JAX networks and DER
    use 0.1). `deterministic=True` drops the noise (y = x W_mu + b_mu) and needs no key.

    x: [..., in] -> [..., features].
    """

    features: int
    sigma_zero: float = 0.5

    @nn.compact
    def __call__(self, x: jnp.ndarray, deterministic: bool = False) -> jnp.ndarray:
        fan_in = x.shape[-1]
        bound = 1.0 / jnp.sqrt(fan_in)

        def mu_init(key, shape, dtype=jnp.float32):
            return jax.random.uniform(key, shape, dtype, -bound, bound)

        sigma_init = nn.initializers.constant(self.sigma_zero / float(fan_in) ** 0.5)
        kernel_mu = self.param("kernel_mu", mu_init, (fan_in, self.features))
        kernel_sigma = self.param("kernel_sigma", sigma_init, (fan_in, self.features))
        bias_mu = self.param("bias_mu", mu_init, (self.features,))
        bias_sigma = self.param("bias_sigma", sigma_init, (self.features,))
        if deterministic:
            return x @ kernel_mu + bias_mu
        key_in, key_out = jax.random.split(self.make_rng("noise"))
        f_in = _scaled_noise(key_in, (fan_in,))
        f_out = _scaled_noise(key_out, (self.features,))
        # x (W_mu + W_sigma * f_in f_out^T) = x W_mu + ((x * f_in) W_sigma) * f_out: no [in, out] noise matrix.
        noisy = ((x * f_in) @ kernel_sigma) * f_out
        return x @ kernel_mu + noisy + bias_mu + bias_sigma * f_out


class RainbowOutput(NamedTuple):
    """What `RainbowNetwork` returns for observations `[..., *obs_shape, stack]`.

    logits: [..., A, num_atoms]; probabilities: softmax over atoms; q_values: [..., A], the
    expectation of each action's return distribution under the support.
    """

    q_values: jnp.ndarray
    logits: jnp.ndarray
    probabilities: jnp.ndarray


def categorical_support(num_atoms: int, vmax: float, vmin: Optional[float] = None) -> jnp.ndarray:
    """The C51 support: `num_atoms` equally spaced atoms on [vmin, vmax] (vmin = -vmax by default)."""
    if num_atoms < 2:
        raise ValueError(f"num_atoms must be >= 2 for a categorical support, got {num_atoms}")
    vmin = -float(vmax) if vmin is None else float(vmin)
    if not vmin < float(vmax):
        raise ValueError(f"the support needs vmin < vmax, got vmin={vmin}, vmax={vmax}")
    return jnp.linspace(vmin, float(vmax), num_atoms, dtype=jnp.float32)


class RainbowNetwork(nn.Module):
    """`torso -> [hidden layers] -> distributional head`, the network of C51 and Rainbow.

    The head gives `num_atoms` logits per action; with `dueling` (Wang et al. 2016) they are
    value(s) + advantage(s, a) - mean_a advantage(s, a), per atom, as in Dopamine. With `noisy`
    every layer after the torso (the `hidden_units` layers and the head) is a `NoisyDense`, whose
    noise comes from the `'noise'` RNG stream; `deterministic=True` turns the noise off. Without
    `noisy` the layers are plain Dense layers (Xavier uniform) and need no RNG.

    x: [..., *obs_shape, stack] -> RainbowOutput (q_values [..., A], logits/probabilities [..., A, N]).
    """

    torso: nn.Module
    num_actions: int
    num_atoms: int = 51
    vmax: float = 10.0
    vmin: Optional[float] = None
    hidden_units: Sequence[int] = ()
    dueling: bool = False
    noisy: bool = False
    noisy_sigma_zero: float = 0.5

    def support(self) -> jnp.ndarray:
        """[num_atoms] atom locations."""
        return categorical_support(self.num_atoms, self.vmax, self.vmin)

    @nn.compact
    def __call__(self, x: jnp.ndarray, deterministic: bool = False) -> RainbowOutput:
        def dense(features: int, name: str):
            if self.noisy:
                layer = NoisyDense(features, sigma_zero=self.noisy_sigma_zero, name=name)
                return lambda h: layer(h, deterministic)
            return nn.Dense(features, kernel_init=nn.initializers.xavier_uniform(), name=name)

        h = self.torso(x)
        for i, units in enumerate(self.hidden_units):
            h = nn.relu(dense(units, f"hidden_{i}")(h))
        batch_shape = h.shape[:-1]
        shape = batch_shape + (self.num_actions, self.num_atoms)
        if self.dueling:
            advantage = dense(self.num_actions * self.num_atoms, "advantage")(h).reshape(shape)
            value = dense(self.num_atoms, "value")(h).reshape(batch_shape + (1, self.num_atoms))
            logits = value + advantage - jnp.mean(advantage, axis=-2, keepdims=True)
        else:
            logits = dense(self.num_actions * self.num_atoms, "logits")(h).reshape(shape)
        probabilities = nn.softmax(logits, axis=-1)
        q_values = jnp.sum(probabilities * self.support(), axis=-1)
        return RainbowOutput(q_values=q_values, logits=logits, probabilities=probabilities)
