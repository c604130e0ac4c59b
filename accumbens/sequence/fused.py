"""Fused degree-2 power attention: Pallas GPU kernels with a hand-written backward pass.

Chunk-parallel (see ``fused_kernels`` for the tiling and the kernels):

Forward  = ``chunk_states`` (per chunk and kv head: the chunk's own expanded-state contribution,
phi expanded in registers) -> gated exclusive prefix over chunks (``chunk_prefix``, a streaming
Pallas kernel, or ``lax.associative_scan`` with ``prefix="xla"``) -> ``output`` (per chunk: gated
power attention inside the chunk + query of the state tiles).
Backward = ``chunk_dstates`` (per chunk: its queries' contribution to the state gradient) ->
reverse prefix -> three per-chunk gradient kernels (dq, dk, dv and the gate sums).

No kernel walks the chunks while doing matrix work (the earlier design did, and was 30-100x
slower than its arithmetic; benchmarks/power_attention_notes.md). The expanded features
``phi(q)``, ``phi(k)`` (``c x 2560`` per chunk for ``d = 64``) are built in registers and never
written; the per-chunk states (``2560 x d``) are written in the input dtype (float32
accumulation everywhere), once by ``chunk_states`` and once more by the prefix.

Gate gradient. The output depends on the gates only through ``w_ij = (q_i.k_j)^2 exp(G_i - G_j)``,
so the gradient with respect to the cumulative gate is

    dL/dG_i = sum_j dL/dw_ij w_ij  -  sum_j dL/dw_ji w_ji      (i as receiver minus i as sender).

The gradient kernels accumulate both sums in float32 (inside the chunk from ``w`` and ``dL/dw``
directly, across chunks from the tile products they already form). ``dL/dlog_g_t`` is the sum of
``dL/dw_ij w_ij`` over the pairs straddling ``t`` (``j < t <= i``). Summing receiver minus sender
sums over the whole rest of the sequence gives it, but subtracts two large, differently rounded
totals (2e-2 relative error in bfloat16). Instead :func:`_gate_gradient` assembles it per chunk:
the chunk's own pairs and its queries' and keys' cross-chunk sums (within-chunk prefix/suffix
sums), plus the pairs spanning the whole chunk, ``exp(gt_n) (<S_n, dL/dS_{n+1}> + <z_n, dL/dz_{n+1}>)``,
which the reverse prefix kernel forms as it passes (measured in interpret mode: 1.8e-3).

On a machine without a GPU the same kernels run in Pallas interpret mode (slow; for tests).
"""
from __future__ import annotations

from functools import partial
from typing import Optional

import jax
import jax.numpy as jnp

from accumbens.sequence import fused_kernels as fk
from accumbens.sequence._common import Array, check_inputs, default_scale

F32 = jnp.float32


def fused_supported(head_dim: int, degree: int, chunk_size: int) -> Optional[str]:
    """None if the fused kernel handles this configuration, else the reason it does not."""
    if degree != 2:
        return f"the fused kernel implements degree 2 only (got {degree})"
    if head_dim not in (16, 32, 64):
        return f"the fused kernel needs head_dim in (16, 32, 64) (got {head_dim})"
    if chunk_size not in (16, 32, 64, 128, 256):
        return f"the fused kernel needs chunk_size in (16, 32, 64, 128, 256) (got {chunk_size})"
    return None


def _on_gpu() -> bool:
    return jax.default_backend() == "gpu"


def _prec32(interpret: bool):
    """Near-float32 matmuls: three-pass TF32 on the tensor cores (HIGHEST in interpret mode)."""
    return jax.lax.Precision.HIGHEST if interpret else jax.lax.DotAlgorithmPreset.TF32_TF32_F32_X3


def _config(dtype, interpret: bool):
    if jnp.dtype(dtype).itemsize < 4:
        return jnp.dtype(dtype), None
    return F32, _prec32(interpret)


def _prepare_gates(log_g: Array, c: int):
    """Chunk-local inclusive cumulative sums (B, Tp, Hk) and chunk totals (B, N, Hk), float32."""
    B, Tp, Hk = log_g.shape
    n = Tp // c
    g = jnp.cumsum(log_g.astype(F32).reshape(B, n, c, Hk), axis=2)
    return g.reshape(B, Tp, Hk), g[:, :, -1, :]


PREFIXES = ("pallas", "xla")


def _prefix(delta, dz, gt, reverse: bool, prefix: str, interpret: bool, poison: bool):
    if prefix == "xla":
        return fk.chunk_prefix_xla(delta, dz, gt, reverse=reverse)
    return fk.chunk_prefix(delta, dz, gt, reverse=reverse, interpret=interpret, poison=poison)


def _reverse_prefix_and_cross(Qn, Qz, S, z, gt, prefix: str, interpret: bool, poison: bool):
    """State gradients after each chunk (reverse prefix) and the whole-chunk gate term ``cross``
    (B, N, Hk) of :func:`_chunk_cross_gate`: by the Pallas prefix kernel in the same pass, or in XLA."""
    if prefix == "xla":
        dS, dz = fk.chunk_prefix_xla(Qn, Qz, gt, reverse=True)
        return dS, dz, _chunk_cross_gate(S, z, dS, dz, gt)
    dS, dz, e = fk.chunk_prefix(Qn, Qz, gt, reverse=True, interpret=interpret, poison=poison, dot_with=(S, z))
    return dS, dz, jnp.exp(gt) * jnp.transpose(jnp.sum(e, axis=(3, 4)), (0, 2, 1))


@partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
def _fused(q, k, v, log_g, scale: float, c: int, interpret: bool, prefix: str, poison: bool):
    return _fused_fwd(q, k, v, log_g, scale, c, interpret, prefix, poison)[0]


def _fused_fwd(q, k, v, log_g, scale, c, interpret, prefix, poison):
    mm, prec = _config(q.dtype, interpret)
    g, gt = _prepare_gates(log_g, c)
    delta, dzc = fk.chunk_states(k, v, g, gt, c=c, state_dtype=mm, mm=mm, prec=prec, interpret=interpret,
                                 poison=poison)
    S, z = _prefix(delta, dzc, gt, False, prefix, interpret, poison)
    y, den = fk.output_pass(q, k, v, g, S, z, c=c, scale=scale, mm=mm, prec=prec, prec32=_prec32(interpret),
                            interpret=interpret,
                            poison=poison)
    return y.astype(q.dtype), (q, k, v, g, gt, S, z, y, den)


def _fused_bwd(scale, c, interpret, prefix, poison, res, dy):
    q, k, v, g, gt, S, z, y, den = res
    mm, prec = _config(q.dtype, interpret)
    B, Tp, Hq, d = q.shape
    Hk = k.shape[2]
    r = Hq // Hk
    dyf = dy.astype(F32)
    zero = den == 0
    den_ok = jnp.where(zero, 1.0, den)
    dn = dyf / den_ok[..., None]
    dd = jnp.where(zero, 0.0, -jnp.sum(dyf * y, axis=-1) / den_ok)  # y kept in float32
    Qn, Qz = fk.chunk_dstates(q, dn, dd, g, c=c, scale=scale, state_dtype=mm, mm=mm, prec=prec,
                              interpret=interpret, poison=poison)
    dS, dz, cross = _reverse_prefix_and_cross(Qn, Qz, S, z, gt, prefix, interpret, poison)
    kw = dict(c=c, mm=mm, prec=prec, prec32=_prec32(interpret), interpret=interpret, poison=poison)
    dq_i, dk_i, dv_i, gq_i, gk_i = fk.grads_intra(q, k, v, g, dn, dd, scale=scale, **kw)
    dq_s, gq_s = fk.grads_query_state(q, g, S, z, dn, dd, scale=scale, **kw)
    dk_s, dv_s, gk_s = fk.grads_key_state(k, v, g, gt, dS, dz, **kw)
    dlog_g = _gate_gradient(jnp.sum((gq_i + gq_s).reshape(B, Tp, Hk, r), axis=3), gk_i, gk_s, cross, c)
    return ((dq_i + dq_s).astype(q.dtype), (dk_i + dk_s).astype(k.dtype), (dv_i + dv_s).astype(v.dtype),
            dlog_g.astype(F32))


def _chunk_cross_gate(S, z, dS, dz, gt):
    """Per chunk ``n`` and kv head: ``sum dL/dw_ij w_ij`` over the pairs with ``j`` before chunk ``n``
    and ``i`` after it, i.e. the derivative of the loss with respect to a factor on chunk ``n``'s
    decay ``exp(gt_n)`` of the state: ``exp(gt_n) (<S_n, dL/dS_{n+1}> + <z_n, dL/dz_{n+1}>)``.
    (B, N, Hk) float32."""
    sd = jnp.einsum("bhntfd,bhntfd->bnh", S.astype(F32), dS.astype(F32))
    zd = jnp.einsum("bhntf,bhntf->bnh", z, dz)
    return jnp.exp(gt) * (sd + zd)


def _gate_gradient(gq, gk_in, gk_cross, cross, c):
    """``dL/dlog_g_t = sum_{i >= t > j} dL/dw_ij w_ij`` (pairs straddling ``t``), assembled per chunk:
    pairs inside the chunk (suffix sum of receiver minus sender sums, which cancel well there),
    queries of the chunk at or after ``t`` with earlier chunks (suffix sum of their receiver sums),
    keys of the chunk before ``t`` with later chunks (exclusive prefix sum of their sender sums),
    and pairs spanning the whole chunk (``cross``). No sum runs over more than one chunk, so the
    large receiver and sender totals are never subtracted from each other (that lost ~2e-2
    relative accuracy in bfloat16). gq, gk_in, gk_cross: (B, Tp, Hk); cross: (B, N, Hk)."""
    B, Tp, Hk = gq.shape
    n = Tp // c
    local = (gq - gk_in).reshape(B, n, c, Hk)
    suffix = jnp.flip(jnp.cumsum(jnp.flip(local, axis=2), axis=2), axis=2)
    gkc = gk_cross.reshape(B, n, c, Hk)
    before = jnp.cumsum(gkc, axis=2) - gkc
    return (suffix + before + cross[:, :, None, :]).reshape(B, Tp, Hk)


_fused.defvjp(_fused_fwd, _fused_bwd)


def power_attention_fused(
    q: Array,
    k: Array,
    v: Array,
    log_g: Optional[Array] = None,
    *,
    degree: int = 2,
    scale: Optional[float] = None,
    chunk_size: int = 128,
    interpret: Optional[bool] = None,
    prefix: str = "pallas",
    poison: bool = False,
) -> Array:
    """Fused-kernel power attention (degree 2); shapes as :func:`accumbens.sequence.power_attention`.

    ``interpret`` defaults to True off-GPU (Pallas interpret mode, slow). ``prefix`` picks the
    gated prefix over chunks: ``"pallas"`` (streaming kernel) or ``"xla"``
    (``lax.associative_scan``). ``poison`` (for tests) starts every kernel output as NaN so
    that an element a kernel fails to write cannot go unnoticed.
    """
    b, t, hq, hk, d = check_inputs(q, k, v, log_g, degree)
    c = chunk_size
    why = fused_supported(d, degree, c)
    if why:
        raise ValueError(why)
    if interpret is None:
        interpret = not _on_gpu()
    s = default_scale(d, scale)
    if prefix not in PREFIXES:
        raise ValueError(f"prefix must be one of {PREFIXES}, got {prefix!r}")
    n = -(-t // c)
    pad = n * c - t
    if log_g is None:
        log_g = jnp.zeros((b, t, hk), F32)
    if pad:
        widths = ((0, 0), (0, pad), (0, 0), (0, 0))
        q, k, v = (jnp.pad(x, widths) for x in (q, k, v))
        log_g = jnp.pad(log_g, widths[:3])
    y = _fused(q, k, v, log_g.astype(F32), s, c, bool(interpret), prefix, bool(poison))
    return y[:, :t]
