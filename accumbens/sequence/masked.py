"""Power attention over masked sequences (replay histories), chunks aligned to the episode start.

A replay history is ``L`` steps ending at a sampled step, with the steps before the episode start
masked (``accumbens/replay/sequence.py``). :func:`masked_power_attention` gives masked steps zero
keys and zero log gates (a zero key has weight ``(q.0)^p = 0``; a zero gate leaves the later
weights unchanged), so they contribute nothing, and it rotates each sequence so that its first
valid step comes first.

Why rotate: the chunked form (``accumbens/sequence/chunked.py``) starts its chunks at position 0
of the array, and it computes keys of the current chunk in the attention form and earlier ones
through the expanded state; in float32 these differ where a query is nearly orthogonal to the
keys (``accumbens/sequence/windowed.py``). The acting state starts its chunks at the episode
start. Without the rotation a history whose episode starts at position ``s`` would have its chunk
boundaries at episode steps ``-s mod c``, which change with the sampled step, so training would
split the same keys differently from acting (and from itself at other steps). Rotated, the
padding sits at the end, where causality keeps it out of every valid output; it is rotated back
afterwards. In exact arithmetic the rotation changes nothing.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from accumbens.sequence.power_attention import power_attention


def first_valid(mask: jax.Array) -> jax.Array:
    """Index of each sequence's first valid step: mask [B, T] bool -> [B] int32 (0 if none)."""
    return jnp.argmax(mask, axis=1).astype(jnp.int32)


def rotate_time(x: jax.Array, shift: jax.Array) -> jax.Array:
    """x [B, T, ...] with row b rotated left by shift[b] [B] along time:
    out[b, i] = x[b, (i + shift[b]) mod T]. A negative shift rotates right (the inverse)."""
    t = x.shape[1]
    index = (jnp.arange(t)[None, :] + shift[:, None]) % t  # [B, T]
    index = index.reshape(index.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, index, axis=1)


def masked_power_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    log_g: Optional[jax.Array],
    mask: jax.Array,
    *,
    degree: int = 2,
    chunk_size: Optional[int] = None,
    impl: str = "auto",
    align: bool = True,
) -> jax.Array:
    """Causal power attention over valid steps only (module docstring).

    Args:
      q: [B, T, q_heads, d]; k, v: [B, T, kv_heads, d]; log_g: [B, T, kv_heads] or None.
      mask: [B, T] bool, True at valid steps (for replay histories: a suffix of each row).
      degree, chunk_size, impl: as :func:`accumbens.sequence.power_attention`.
      align: rotate each row so that its chunks start at its first valid step (True: as the
        acting state does; False only to measure what the alignment is for).

    Returns:
      [B, T, q_heads, d]; rows at masked steps are not meaningful.
    """
    if mask.shape != q.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} must equal q's [batch, time] {q.shape[:2]}")
    valid = mask[:, :, None]
    k = jnp.where(valid[..., None], k, jnp.zeros((), k.dtype))
    if log_g is not None:
        log_g = jnp.where(valid, log_g, jnp.zeros((), log_g.dtype))
    shift = first_valid(mask) if align else jnp.zeros(mask.shape[:1], jnp.int32)
    q, k, v = (rotate_time(x, shift) for x in (q, k, v))
    log_g = None if log_g is None else rotate_time(log_g, shift)
    y = power_attention(q, k, v, log_g, degree=degree, chunk_size=chunk_size, impl=impl)
    return rotate_time(y, -shift)
