"""Quadratic (attention-form) reference of symmetric power attention.

Every query ``i`` attends to keys ``j <= i`` with weight

    w_ij = (scale * q_i . k_j) ** p * exp(G_i - G_j),      G_i = sum_{t <= i} log_g_t,

and returns ``y_i = sum_j w_ij v_j / sum_j w_ij``. This costs ``O(T^2)`` and materialises the
``(T, T)`` weight matrix, so it is meant for tests and short sequences; it works in float64.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from accumbens.sequence._common import Array, accum_dtype, check_inputs, default_scale, safe_divide


def power_attention_reference(
    q: Array, k: Array, v: Array, log_g: Optional[Array] = None, *, degree: int = 2, scale: Optional[float] = None
) -> Array:
    """Quadratic-cost power attention; shapes as :func:`accumbens.sequence.power_attention`."""
    b, t, hq, hk, d = check_inputs(q, k, v, log_g, degree)
    r = hq // hk
    acc = accum_dtype(q.dtype)
    s = default_scale(d, scale)
    kr = jnp.repeat(k, r, axis=2).astype(acc)
    vr = jnp.repeat(v, r, axis=2).astype(acc)
    scores = jnp.einsum("bihd,bjhd->bhij", q.astype(acc) * s, kr, precision=jax.lax.Precision.HIGHEST)
    w = scores**degree
    causal = jnp.tril(jnp.ones((t, t), dtype=bool))
    if log_g is not None:
        g = jnp.cumsum(jnp.repeat(log_g, r, axis=2).astype(acc), axis=1)  # (b, t, hq)
        g = jnp.transpose(g, (0, 2, 1))  # (b, hq, t)
        diff = g[:, :, :, None] - g[:, :, None, :]
        w = w * jnp.exp(jnp.where(causal, diff, -jnp.inf))
    w = jnp.where(causal, w, 0)
    num = jnp.einsum("bhij,bjhd->bihd", w, vr, precision=jax.lax.Precision.HIGHEST)
    den = jnp.transpose(jnp.sum(w, axis=-1), (0, 2, 1))  # (b, t, hq)
    return safe_divide(num, den).astype(q.dtype)
