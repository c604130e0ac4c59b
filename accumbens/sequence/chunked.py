"""Chunked, linear-cost power attention in plain JAX (``lax.scan`` over chunks).

Split time into chunks of ``c`` steps. Inside chunk ``n`` write ``g_i`` for the gate log-sum
from the chunk start up to and including step ``i`` and ``g_c`` for the whole chunk's sum.
Carry across chunks the state built from all earlier keys, decayed to the chunk boundary::

    S_n = sum_{j before chunk n} exp(G_{start(n)-1} - G_j) * phi_k(k_j) v_j^T     (D x d)
    z_n = sum_{j before chunk n} exp(G_{start(n)-1} - G_j) * phi_k(k_j)           (D)

where ``phi_k`` is the weighted symmetric power embedding of size ``D = C(d+p-1, p)`` (see
``_common``). For a query ``i`` in chunk ``n`` the numerator and denominator of the
attention form split into the part inside the chunk (a small ``c x c`` power attention) and
the part before it, which the state answers in ``O(D d)``::

    num_i = sum_{j in chunk, j<=i} w_ij v_j  +  scale^p exp(g_i) phi_q(q_i)^T S_n
    den_i = sum_{j in chunk, j<=i} w_ij      +  scale^p exp(g_i) phi_q(q_i)^T z_n
    S_{n+1} = exp(g_c) S_n + sum_{j in chunk} exp(g_c - g_j) phi_k(k_j) v_j^T

For gates ``log_g <= 0`` every exponent above is ``<= 0``, so nothing overflows however long
the sequence. States are kept in float32 (float64 for float64 inputs). The cost per step is
``O(c d + D d)`` instead of the reference's ``O(T d)``. Time that is not a multiple of ``c``
is padded at the end with zero keys/values/gates; causality keeps the padding out of every
real output, and it is sliced off.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from accumbens.sequence._common import (
    Array, accum_dtype, check_inputs, default_scale, phi_key, phi_query, safe_divide,
)


def _pad_time(x: Array, pad: int) -> Array:
    if pad == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[1] = (0, pad)
    return jnp.pad(x, widths)


def power_attention_chunked(
    q: Array,
    k: Array,
    v: Array,
    log_g: Optional[Array] = None,
    *,
    degree: int = 2,
    scale: Optional[float] = None,
    chunk_size: int = 128,
) -> Array:
    """Linear-cost power attention; same function as the reference, shapes as the public API."""
    b, t, hq, hk, d = check_inputs(q, k, v, log_g, degree)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    r = hq // hk
    acc = accum_dtype(q.dtype)
    # On GPU bf16/fp16 matmul operands stay in their dtype (accumulated in float32); float32/64
    # stay exact. XLA:CPU has no bf16 x bf16 -> f32 matmul, so there everything runs in float32.
    low = jnp.dtype(q.dtype).itemsize < 4 and jax.default_backend() != "cpu"
    mm = q.dtype if low else acc
    prec = jax.lax.Precision.HIGHEST
    s = default_scale(d, scale)
    c = min(chunk_size, t)
    n = -(-t // c)
    pad = n * c - t
    if log_g is None:
        log_g = jnp.zeros((b, t, hk), acc)
    qp, kp, vp, gp = (_pad_time(x, pad) for x in (q, k, v, log_g.astype(acc)))

    def to_chunks(x: Array) -> Array:  # (b, n*c, ...) -> (n, b, c, ...)
        return jnp.moveaxis(x.reshape(b, n, c, *x.shape[2:]), 1, 0)

    qc = to_chunks(qp).reshape(n, b, c, hk, r, d)
    kc, vc, gc = to_chunks(kp), to_chunks(vp), to_chunks(gp)
    causal = jnp.tril(jnp.ones((c, c), dtype=bool))

    def body(carry, xs):
        S, z = carry  # (b, hk, D, d), (b, hk, D)
        qn, kn, vn, gn = xs
        g = jnp.cumsum(gn, axis=1)  # (b, c, hk) local cumulative gate
        g_tot = g[:, -1]  # (b, hk)
        qa = qn.astype(acc) * s
        ka = kn.astype(acc)
        # --- inside the chunk: c x c power attention ---
        scores = jnp.einsum("bihrd,bjhd->bhrij", qa.astype(mm), ka.astype(mm), precision=prec,
                            preferred_element_type=acc)
        diff = jnp.transpose(g, (0, 2, 1))[:, :, None, :, None] - jnp.transpose(g, (0, 2, 1))[:, :, None, None, :]
        w = jnp.where(causal, scores**degree * jnp.exp(jnp.where(causal, diff, 0)), 0)
        num = jnp.einsum("bhrij,bjhd->bihrd", w.astype(mm), vn.astype(mm), precision=prec,
                         preferred_element_type=acc)
        den = jnp.einsum("bhrij->bihr", w)
        # --- before the chunk: read the carried state ---
        qg = qa * jnp.exp(g / degree)[:, :, :, None, None]  # exp(g_i) folded into phi_q as exp(g_i/p)^p
        pq = phi_query(qg, degree)  # (b, c, hk, r, D)
        num = num + jnp.einsum("bihrD,bhDd->bihrd", pq.astype(mm), S.astype(mm), precision=prec,
                               preferred_element_type=acc)
        den = den + jnp.einsum("bihrD,bhD->bihr", pq, z, precision=prec)
        # --- fold this chunk into the state ---
        kg = ka * jnp.exp((g_tot[:, None, :] - g) / degree)[..., None]
        pk = phi_key(kg, degree)  # (b, c, hk, D)
        decay = jnp.exp(g_tot)
        S = decay[:, :, None, None] * S + jnp.einsum("bjhD,bjhd->bhDd", pk.astype(mm), vn.astype(mm),
                                                       precision=prec, preferred_element_type=acc)
        z = decay[:, :, None] * z + jnp.sum(pk, axis=1)
        return (S, z), (num, den)

    from accumbens.sequence._common import expanded_dim

    D = expanded_dim(d, degree)
    init = (jnp.zeros((b, hk, D, d), acc), jnp.zeros((b, hk, D), acc))
    _, (num, den) = jax.lax.scan(body, init, (qc, kc, vc, gc))
    # (n, b, c, hk, r, ...) -> (b, n*c, hq, ...)
    num = jnp.moveaxis(num, 0, 1).reshape(b, n * c, hq, d)[:, :t]
    den = jnp.moveaxis(den, 0, 1).reshape(b, n * c, hq)[:, :t]
    return safe_divide(num, den).astype(q.dtype)
