"""Recurrent (decode) form of symmetric power attention: constant cost per token.

The state after step ``t`` holds everything the future needs about steps ``<= t``::

    S_t = exp(log_g_t) S_{t-1} + phi_k(k_t) v_t^T        (kv_heads, D, d)
    z_t = exp(log_g_t) z_{t-1} + phi_k(k_t)              (kv_heads, D)
    y_t = phi_q(q_t)^T S_t / phi_q(q_t)^T z_t

with ``phi_q``/``phi_k`` the symmetric power embeddings of ``_common`` (``D = C(d+p-1, p)``).
Running :func:`step` over a sequence from :func:`init_state` gives the same outputs as the
parallel forms. Each step costs ``O(D d)`` per head, independent of how many steps came
before. ``scale`` multiplies numerator and denominator alike, so it cancels here; it is
accepted for symmetry with the parallel API.

Accuracy: each score phi_q(q)^T phi_k(k) = (q.k)^p is a sum of terms of both signs, so where q is
nearly orthogonal to every key seen so far, its relative error is about machine epsilon times
sum_j |q|^p |k_j|^p / sum_j (q.k_j)^p. The quadratic form raises q.k itself and does not lose
these digits. In float64 this ratio reached 1e12 for some random degree-4 inputs, head_dim 3,
without gating, where the outputs then agree only to about 1e-6. The tests bound the error by
it (tests/sequence/test_power_attention_api.py).

For acting with a model trained by the chunked form use :mod:`accumbens.sequence.windowed`
instead (the encoder does): it splits every output between the current chunk (attention form)
and the earlier chunks (state) exactly as training does, so float32 rounding does not make the
acted and the trained outputs differ where queries are nearly orthogonal to recent keys. This
module remains the minimal decode form, O(D d) per token with the smallest state.

Example (acting in an RL loop)::

    state = init_state(batch=8, kv_heads=4, head_dim=32, degree=2)
    for t in range(T):
        state, y = step(state, q[:, t], k[:, t], v[:, t], log_g[:, t])
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import jax.numpy as jnp

from accumbens.sequence._common import (
    Array, accum_dtype, check_degree, check_step_shapes, expanded_dim, phi_key, phi_query, safe_divide,
)


class PowerState(NamedTuple):
    """Recurrent state of power attention (a pytree; works with jit/vmap/scan).

    Attributes:
      S: ``(batch, kv_heads, D, head_dim)`` gated sum of ``phi_k(k) v^T``.
      z: ``(batch, kv_heads, D)`` gated sum of ``phi_k(k)`` (the normaliser).
    """

    S: Array
    z: Array

    @property
    def degree(self) -> int:
        d = self.S.shape[-1]
        D = self.S.shape[-2]
        for p in range(2, 64, 2):
            if expanded_dim(d, p) == D:
                return p
        raise ValueError(f"state of shape {self.S.shape} matches no even degree")


def init_state(batch: int, kv_heads: int, head_dim: int, degree: int = 2, dtype=jnp.float32) -> PowerState:
    """Empty state (no tokens seen). ``dtype`` is the state's storage dtype (float32 advised)."""
    check_degree(degree)
    D = expanded_dim(head_dim, degree)
    return PowerState(jnp.zeros((batch, kv_heads, D, head_dim), dtype), jnp.zeros((batch, kv_heads, D), dtype))


def step(
    state: PowerState,
    q_t: Array,
    k_t: Array,
    v_t: Array,
    log_g_t: Optional[Array] = None,
    *,
    degree: Optional[int] = None,
    scale: Optional[float] = None,
) -> Tuple[PowerState, Array]:
    """Advance one token.

    Args:
      state: from :func:`init_state` or a previous :func:`step`.
      q_t: ``(batch, q_heads, head_dim)``; ``q_heads`` a multiple of the state's ``kv_heads``.
      k_t, v_t: ``(batch, kv_heads, head_dim)``.
      log_g_t: optional ``(batch, kv_heads)`` log gate of this step (``<= 0`` for decay).
      degree: defaults to the degree the state was made with.
      scale: accepted for API symmetry; it cancels in the normalised output.

    Returns:
      ``(new_state, y_t)`` with ``y_t`` of shape ``(batch, q_heads, head_dim)`` in ``q_t``'s dtype.
    """
    del scale
    p = state.degree if degree is None else degree
    check_degree(p)
    check_step_shapes(state.S.shape, q_t, k_t, v_t, log_g_t, p)
    b, hk, D, d = state.S.shape
    r = q_t.shape[1] // hk
    acc = accum_dtype(jnp.promote_types(q_t.dtype, state.S.dtype))
    pk = phi_key(k_t.astype(acc), p)  # (b, hk, D)
    S = state.S.astype(acc)
    z = state.z.astype(acc)
    if log_g_t is not None:
        if log_g_t.shape != (b, hk):
            raise ValueError(f"log_g_t must have shape {(b, hk)}, got {log_g_t.shape}")
        decay = jnp.exp(log_g_t.astype(acc))
        S = decay[:, :, None, None] * S
        z = decay[:, :, None] * z
    S = S + pk[..., None] * v_t.astype(acc)[:, :, None, :]
    z = z + pk
    pq = phi_query(q_t.astype(acc).reshape(b, hk, r, d), p)  # (b, hk, r, D)
    num = jnp.einsum("bhrD,bhDd->bhrd", pq, S)
    den = jnp.einsum("bhrD,bhD->bhr", pq, z)
    y = safe_divide(num, den).reshape(b, hk * r, d).astype(q_t.dtype)
    return PowerState(S.astype(state.S.dtype), z.astype(state.z.dtype)), y
