"""`PowerAttentionEncoder`: a sequence model over an agent's observations, for partial observability.

Architecture (per step t of an episode, observation o_t)::

    x_t = Dense(model_dim)(torso(o_t))                     per-step embedding (conv or MLP torso)
    for each of `num_layers` pre-norm blocks:
        h   = LayerNorm(x)
        q, k, v = Dense(h) split into `num_heads` heads of `head_dim`
        log_g = log_sigmoid(Dense(h) + gate_bias)           data-dependent log gate per head (<= 0)
        x   = x + Dense(attention(q, k, v, log_g))          causal, gated
        x   = x + MLP(LayerNorm(x))                         GELU, `mlp_ratio * model_dim` hidden
    features_t = LayerNorm(x_t)                            model_dim = num_heads * head_dim

`attention="power"` is symmetric power attention of `degree` p (Gelada, Buckman, Zhang et al.
2025, "Scaling Context Requires Rethinking Attention"; `accumbens.sequence.power_attention`),
whose weights are (q.k)^p exp(G_i - G_j) with G the cumulative log gate. `attention="softmax"`
is the same block with gated softmax attention, weights exp(s q.k + G_i - G_j) (the "forgetting
transformer", Lin et al. 2025): the two variants have exactly the same parameters, so they can be
compared at equal size.

Two ways to run it, giving the same features on the same history (tests/sequence/test_encoder.py):
  * parallel (`__call__`), for training on sequences from replay: `[B, T, *obs_shape]` with a
    mask `[B, T]` of valid steps (False for steps before the episode start, which replay pads)
    -> `[B, T, model_dim]`. Power attention uses its chunked linear-cost form (`chunk_size`),
    with each sequence's chunks starting at its first valid step (`accumbens.sequence.masked`).
    Masked steps contribute nothing: their keys are zeroed (power) or excluded (softmax).
  * recurrent (`step`), for acting: one observation per call, carrying a state across the steps
    of an episode (`initial_carry` at episode start). For power attention the carry is the
    fixed-size chunk-aligned state per layer (`accumbens.sequence.windowed`: the completed
    chunks' power state plus the current chunk's keys), so a step costs the same at step 10 and
    step 10,000, and its float32 outputs follow the training form's own split between the
    current chunk and the earlier ones (the plain decode state of `accumbens.sequence.recurrent`
    disagreed with training by up to 0.16 where queries were nearly orthogonal to recent keys).
    For softmax the carry is a key/value cache of the last `context_length` steps, so a step
    costs O(context_length); it equals the parallel form while the episode is no longer than
    `context_length` (later it is a sliding window).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from accumbens.sequence.masked import masked_power_attention
from accumbens.sequence.windowed import init_window_state, window_step

ATTENTIONS = ("power", "softmax")


class SoftmaxCache(NamedTuple):
    """Key/value cache of the softmax variant's recurrent form (a pytree).

    k, v: [B, C, H, d] the last C = context_length keys and values (a ring, slot = step % C);
    gate: [B, C, H] the cumulative log gate G_j at each cached step; valid: [B, C] bool;
    gate_now: [B, H] the cumulative log gate up to the current step; position: [B] int32 steps seen.
    """

    k: jax.Array
    v: jax.Array
    gate: jax.Array
    valid: jax.Array
    gate_now: jax.Array
    position: jax.Array


def _check_attention(attention: str) -> None:
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")


def softmax_attention(q, k, v, log_g, mask, scale: float) -> jax.Array:
    """Causal gated softmax attention, quadratic form.

    q, k, v: [B, T, H, d]; log_g: [B, T, H]; mask: [B, T] bool (valid keys).
    Weights w_ij = exp(scale q_i.k_j + G_i - G_j) for j <= i with key j valid; rows without any
    valid key give 0. Returns [B, T, H, d] float32.
    """
    t = q.shape[1]
    scores = jnp.einsum("bihd,bjhd->bhij", q, k) * scale
    g = jnp.cumsum(log_g, axis=1).transpose(0, 2, 1)  # [B, H, T]
    scores = scores + g[:, :, :, None] - g[:, :, None, :]
    allowed = jnp.tril(jnp.ones((t, t), bool))[None, None] & mask[:, None, None, :]
    scores = jnp.where(allowed, scores, -jnp.inf)
    peak = jnp.max(scores, axis=-1, keepdims=True)
    weights = jnp.where(allowed, jnp.exp(scores - jnp.where(jnp.isfinite(peak), peak, 0.0)), 0.0)
    total = jnp.sum(weights, axis=-1, keepdims=True)
    weights = weights / jnp.where(total > 0, total, 1.0)
    return jnp.einsum("bhij,bjhd->bihd", weights, v)


def _softmax_step(cache: SoftmaxCache, q, k, v, log_g, scale: float) -> tuple[SoftmaxCache, jax.Array]:
    """One step of the softmax variant: q, k, v [B, H, d], log_g [B, H] -> (cache, y [B, H, d])."""
    capacity = cache.k.shape[1]
    gate_now = cache.gate_now + log_g
    slot = jax.nn.one_hot(cache.position % capacity, capacity, dtype=bool)  # [B, C]
    put = slot[:, :, None, None]
    cache = SoftmaxCache(
        k=jnp.where(put, k[:, None], cache.k),
        v=jnp.where(put, v[:, None], cache.v),
        gate=jnp.where(slot[:, :, None], gate_now[:, None], cache.gate),
        valid=cache.valid | slot,
        gate_now=gate_now,
        position=cache.position + 1,
    )
    scores = jnp.einsum("bhd,bchd->bhc", q, cache.k) * scale
    scores = scores + gate_now[:, :, None] - cache.gate.transpose(0, 2, 1)
    allowed = cache.valid[:, None, :]
    scores = jnp.where(allowed, scores, -jnp.inf)
    weights = jnp.where(allowed, jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True)), 0.0)
    weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
    return cache, jnp.einsum("bhc,bchd->bhd", weights, cache.v)


class AttentionBlock(nn.Module):
    """One pre-norm block: gated (power or softmax) attention, then an MLP, both residual."""

    num_heads: int
    head_dim: int
    degree: int = 2
    chunk_size: int = 64
    mlp_ratio: int = 4
    attention: str = "power"
    gate_bias: float = 5.0
    impl: str = "auto"

    def setup(self):
        dim = self.num_heads * self.head_dim
        init = nn.initializers.xavier_uniform()
        self.norm_attention = nn.LayerNorm()
        self.qkv = nn.Dense(3 * dim, kernel_init=init)
        self.gate = nn.Dense(self.num_heads, kernel_init=init, bias_init=nn.initializers.constant(self.gate_bias))
        self.out = nn.Dense(dim, kernel_init=init)
        self.norm_mlp = nn.LayerNorm()
        self.hidden = nn.Dense(self.mlp_ratio * dim, kernel_init=init)
        self.mlp_out = nn.Dense(dim, kernel_init=init)

    def _project(self, x):
        """x [..., dim] -> q, k, v [..., H, d] and log_g [..., H] (float32)."""
        h = self.norm_attention(x)
        q, k, v = jnp.split(self.qkv(h), 3, axis=-1)
        shape = x.shape[:-1] + (self.num_heads, self.head_dim)
        log_g = jax.nn.log_sigmoid(self.gate(h))
        return q.reshape(shape), k.reshape(shape), v.reshape(shape), log_g

    def _finish(self, x, y):
        x = x + self.out(y.reshape(x.shape))
        return x + self.mlp_out(nn.gelu(self.hidden(self.norm_mlp(x))))

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """Parallel form: x [B, T, dim], mask [B, T] bool -> [B, T, dim]."""
        q, k, v, log_g = self._project(x)
        if self.attention == "power":
            # masked steps contribute nothing; chunks start at the episode start, as acting's do
            y = masked_power_attention(
                q, k, v, log_g, mask, degree=self.degree, chunk_size=self.chunk_size, impl=self.impl
            )
        else:
            y = softmax_attention(q, k, v, log_g, mask, 1.0 / math.sqrt(self.head_dim))
        return self._finish(x, y)

    def step(self, carry: Any, x: jax.Array) -> tuple[Any, jax.Array]:
        """Recurrent form: x [B, dim] and this block's carry -> (carry, [B, dim])."""
        q, k, v, log_g = self._project(x)
        if self.attention == "power":
            carry, y = window_step(carry, q, k, v, log_g, degree=self.degree)
        else:
            carry, y = _softmax_step(carry, q, k, v, log_g, 1.0 / math.sqrt(self.head_dim))
        return carry, self._finish(x, y)


@gin.configurable
class PowerAttentionEncoder(nn.Module):
    """Sequence encoder over per-step observation embeddings (see the module docstring).

    Attributes:
      torso: per-step embedding; it receives one step as a one-frame stack `[..., *obs_shape, 1]`
        (the shared torsos' input convention) and returns `[..., F]`.
      num_layers, num_heads, head_dim: the blocks; model_dim = num_heads * head_dim.
      degree: power-attention degree p (even; 2 as in Gelada et al. 2025).
      chunk_size: chunk length of the parallel power-attention form.
      mlp_ratio: MLP hidden width in units of model_dim (4, as in the transformer).
      attention: "power" or "softmax" (equal parameters).
      context_length: size of the softmax variant's acting cache (unused by power attention,
        whose recurrent state has a fixed size whatever the context).
      gate_bias: initial bias of the gate logits; log_sigmoid(5) = -0.0067 per step, so at
        initialisation a step keeps exp(-0.67) = 0.51 of its weight 100 steps later.
      impl: power-attention implementation for the parallel form ("auto", "chunked", ...). Acting
        follows the chunked form's split into chunks of `chunk_size` ("auto", "chunked",
        "fused"); with "reference" training uses the attention form over the whole history and
        acting agrees with it only within the first chunk.
    """

    torso: nn.Module
    num_layers: int = 2
    num_heads: int = 4
    head_dim: int = 32
    degree: int = 2
    chunk_size: int = 64
    mlp_ratio: int = 4
    attention: str = "power"
    context_length: int = 128
    gate_bias: float = 5.0
    impl: str = "auto"

    def setup(self):
        _check_attention(self.attention)
        if self.num_layers < 1 or self.num_heads < 1 or self.head_dim < 1:
            raise ValueError(
                f"num_layers, num_heads and head_dim must be >= 1, got {self.num_layers}, "
                f"{self.num_heads}, {self.head_dim}"
            )
        self.embed = nn.Dense(self.model_dim, kernel_init=nn.initializers.xavier_uniform())
        self.blocks = [
            AttentionBlock(
                num_heads=self.num_heads,
                head_dim=self.head_dim,
                degree=self.degree,
                chunk_size=self.chunk_size,
                mlp_ratio=self.mlp_ratio,
                attention=self.attention,
                gate_bias=self.gate_bias,
                impl=self.impl,
            )
            for _ in range(self.num_layers)
        ]
        self.norm = nn.LayerNorm()

    @property
    def model_dim(self) -> int:
        return self.num_heads * self.head_dim

    def _embed(self, observation: jax.Array) -> jax.Array:
        return self.embed(self.torso(observation[..., None]))

    def __call__(self, observations: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
        """Parallel form: observations [B, T, *obs_shape], mask [B, T] bool (None: all valid)
        -> features [B, T, model_dim] float32. Features at masked steps are not meaningful."""
        if observations.ndim < 2:
            raise ValueError(f"observations must be [batch, time, *obs_shape], got shape {observations.shape}")
        if mask is None:
            mask = jnp.ones(observations.shape[:2], bool)
        if mask.shape != observations.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} must equal observations' [batch, time] {observations.shape[:2]}")
        x = self._embed(observations)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    def step(self, carry: tuple, observation: jax.Array) -> tuple[tuple, jax.Array]:
        """Recurrent form: one observation per sequence, [B, *obs_shape], and the carry from
        `initial_carry(B)` or the previous step -> (carry, features [B, model_dim])."""
        if len(carry) != self.num_layers:
            raise ValueError(f"carry has {len(carry)} layers, the encoder {self.num_layers}")
        x = self._embed(observation)
        new_carry = []
        for block, layer_carry in zip(self.blocks, carry):
            layer_carry, x = block.step(layer_carry, x)
            new_carry.append(layer_carry)
        return tuple(new_carry), self.norm(x)

    def initial_carry(self, batch: int, dtype: Any = jnp.float32) -> tuple:
        """The carry at an episode start (nothing seen): one state per layer, stored in `dtype`
        (float32; float64 for float64 checks). Needs no params. Power attention: a
        `windowed.WindowState` whose chunks have the parallel form's `chunk_size`."""
        _check_attention(self.attention)
        h, d = self.num_heads, self.head_dim
        if self.attention == "power":
            return tuple(
                init_window_state(batch, h, d, self.degree, self.chunk_size, dtype) for _ in range(self.num_layers)
            )
        c = self.context_length
        return tuple(
            SoftmaxCache(
                k=jnp.zeros((batch, c, h, d), dtype),
                v=jnp.zeros((batch, c, h, d), dtype),
                gate=jnp.zeros((batch, c, h), dtype),
                valid=jnp.zeros((batch, c), bool),
                gate_now=jnp.zeros((batch, h), dtype),
                position=jnp.zeros((batch,), jnp.int32),
            )
            for _ in range(self.num_layers)
        )


def reset_carry(carry: Any, initial: Any, reset: jax.Array) -> Any:
    """The carry with the sequences where `reset` [B] is True set back to `initial` (vectorised
    environments: reset at each one's episode start)."""

    def pick(fresh, old):
        return jnp.where(reset.reshape((-1,) + (1,) * (old.ndim - 1)), fresh, old)

    return jax.tree.map(pick, initial, carry)


class SequenceTorso(nn.Module):
    """The encoder as a plain torso, so any agent (Rainbow, ...) can use it by a gin binding.

    Input either a dict {"observation": [B, L, *obs_shape], "mask": [B, L]} (sequence replay), or
    a frame stack `[..., *obs_shape, L]` as the shared replay and host shell build it with
    `stack_size = L` (oldest first); there, leading all-zero frames are taken as the padding before
    the episode start and masked (a real all-zero first observation is masked too, losing only
    the count of such frames). Output: the last step's features `[..., model_dim]`.
    Acting through a torso is the parallel form over the window (cost grows with L); the
    constant-cost recurrent acting is `SequenceDQNAgent`'s.

    Attributes:
      encoder: the `PowerAttentionEncoder`.
      observation_ndim: dims of one observation without the stack axis (1 for vectors, 3 for
        MinAtar's [10, 10, C]).
    """

    encoder: PowerAttentionEncoder
    observation_ndim: int = 1

    @nn.compact
    def __call__(self, x: Any) -> jax.Array:
        if isinstance(x, dict):
            return self.encoder(x["observation"], x["mask"])[:, -1]
        n = self.observation_ndim
        if x.ndim < n + 1:
            raise ValueError(f"expected [..., *obs_shape ({n} dims), stack], got shape {x.shape}")
        batch_shape = x.shape[: x.ndim - n - 1]
        seq = jnp.moveaxis(x, -1, len(batch_shape))  # [..., L, *obs]
        seq = seq.reshape((-1,) + seq.shape[len(batch_shape):])  # [N, L, *obs]
        nonzero = jnp.any(seq.reshape(seq.shape[:2] + (-1,)) != 0, axis=-1)  # [N, L]
        mask = (jnp.cumsum(nonzero, axis=1) > 0).at[:, -1].set(True)  # from the first nonzero frame on
        features = self.encoder(seq, mask)[:, -1]
        return features.reshape(batch_shape + features.shape[-1:])


@gin.configurable
def sequence_torso(observation_ndim: int = 1) -> SequenceTorso:
    """A `SequenceTorso` around a gin-configured `PowerAttentionEncoder` whose per-step torso is
    `create_torso()`; bind e.g. `RainbowAgent.torso = @sequence_torso` with `stack_size = L`."""
    from accumbens.agents.networks import create_torso

    return SequenceTorso(encoder=PowerAttentionEncoder(torso=create_torso()), observation_ndim=observation_ndim)
