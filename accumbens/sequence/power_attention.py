"""Symmetric power attention: the public entry point.

The function
------------
Power attention ("Scaling Context Requires Rethinking Attention", Gelada, Buckman, Zhang et
al. 2025; PyPI package ``power-attention`` 1.4.x, function ``power_full``) replaces the
softmax of causal attention by an even power of the scaled dot product, optionally with a
per-step multiplicative gate. For queries ``q_i``, keys ``k_j``, values ``v_j`` (head dim
``d``), even degree ``p``, scale ``s`` (default ``1/sqrt(d)``) and log gates ``log_g_t``::

    G_i  = log_g_1 + ... + log_g_i                        (cumulative log gate)
    w_ij = (s q_i . k_j)^p * exp(G_i - G_j)               for j <= i, else 0
    y_i  = sum_j w_ij v_j / sum_j w_ij

Because ``p`` is even every weight is ``>= 0`` and the denominator is a proper normaliser; the
gate ``exp(log_g_t)`` (``log_g_t <= 0``) multiplies the weight of every earlier key, so old
tokens fade. ``s`` multiplies all weights of a row alike and cancels in ``y``; it only sets the
range of intermediate numbers (as in the package).

Why it is cheap: ``(q . k)^p = phi(q) . phi(k)`` for the symmetric power embedding ``phi`` of
size ``D = C(d+p-1, p)`` (2080 for ``d = 64, p = 2``), so the sums over the past can be carried
in a fixed-size state ``S = sum_j exp(G_i - G_j) phi(k_j) v_j^T`` (``D x d``) and its normaliser
``z = sum_j exp(G_i - G_j) phi(k_j)`` (``D``), like a linear transformer. The chunked and fused
forms mix both views: exact attention inside chunks of ``c`` steps, the state across chunks.

Matching the package. Our forms compute exactly the function above. The package's
``power_full`` computes the same function up to two stabilisers below float32 resolution:
it adds ``1e-7`` to ``|s q.k|`` before the power inside its attention tiles and ``1e-6`` (times
the row's largest weight in its tile) to the denominator; it also divides numerator and
denominator of each chunk by a common factor ``max(sqrt(D), exp(rowmax))``, which cancels
exactly and which we do not need because we accumulate in float32. Its ``chunk_size=None``
(quadratic form) is our ``impl="reference"``. Rows whose every weight is exactly 0 (an all-zero
query) give ``y = 0`` here instead of a NaN. Grouped heads follow the package: q head ``j``
reads kv head ``j // (q_heads // kv_heads)``; gates are per kv head.

Implementations (``impl``):
  * ``"reference"``: quadratic attention form, float64-capable (tests, short sequences).
  * ``"chunked"``: ``lax.scan`` over chunks carrying the state, plain JAX, CPU and GPU, any
    even degree; differentiated by JAX.
  * ``"fused"``: Pallas (Triton) GPU kernels for degree 2 with a hand-written backward
    (``jax.custom_vjp``); on a machine without GPU it runs in Pallas interpret mode (slow).
    Experimental: correct against the reference, but at present far slower than the chunked
    form on an H100 (see benchmarks/power_attention_notes.md), so only used when asked for.
  * ``"auto"``: ``"chunked"`` (until the fused kernels are faster; then ``"fused"`` on GPU for
    the shapes it supports: degree 2, head_dim 16, 32 or 64, chunk 16..256).

For acting one token at a time, use :mod:`accumbens.sequence.recurrent` (``init_state``,
``step``), which gives the same outputs at constant cost per token.
"""
from __future__ import annotations

from typing import Optional

import jax

from accumbens.sequence._common import Array, check_inputs
from accumbens.sequence.chunked import power_attention_chunked
from accumbens.sequence.fused import fused_supported, power_attention_fused
from accumbens.sequence.reference import power_attention_reference

IMPLS = ("auto", "reference", "chunked", "fused")
DEFAULT_CHUNK = 128
# Flip once the fused kernels beat the chunked form (issue 4 notes): "auto" then picks them on GPU.
AUTO_USES_FUSED = False


def _fused_ok(head_dim: int, degree: int, chunk: int) -> bool:
    return jax.default_backend() == "gpu" and fused_supported(head_dim, degree, chunk) is None


def power_attention(
    q: Array,
    k: Array,
    v: Array,
    log_g: Optional[Array] = None,
    *,
    degree: int = 2,
    scale: Optional[float] = None,
    chunk_size: Optional[int] = None,
    impl: str = "auto",
) -> Array:
    """Causal symmetric power attention.

    Args:
      q: ``(batch, time, q_heads, head_dim)`` queries (bfloat16, float16, float32 or float64).
      k, v: ``(batch, time, kv_heads, head_dim)``; ``q_heads`` a multiple of ``kv_heads``.
      log_g: optional ``(batch, time, kv_heads)`` log gates (float32 advised, ``<= 0``).
      degree: even power ``p`` (2, 4, ...). The fused kernel does ``p = 2``.
      scale: multiplies ``q . k`` before the power; falsy means ``1/sqrt(head_dim)``.
      chunk_size: chunk length of the chunked/fused forms (default 128). Any ``time`` works:
        a partial last chunk is padded and masked.
      impl: ``"auto"``, ``"reference"``, ``"chunked"`` or ``"fused"``.

    Returns:
      ``(batch, time, q_heads, head_dim)`` in ``q``'s dtype.

    Raises:
      ValueError: on inconsistent shapes or dtypes, an odd or non-positive degree, an unknown
        ``impl``, or ``impl="fused"`` with a shape the kernel does not support.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    _, _, _, _, d = check_inputs(q, k, v, log_g, degree)
    c = DEFAULT_CHUNK if chunk_size is None else chunk_size
    if not isinstance(c, int) or c < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if impl == "auto":
        impl = "fused" if AUTO_USES_FUSED and _fused_ok(d, degree, c) else "chunked"
    if impl == "reference":
        return power_attention_reference(q, k, v, log_g, degree=degree, scale=scale)
    if impl == "chunked":
        return power_attention_chunked(q, k, v, log_g, degree=degree, scale=scale, chunk_size=c)
    return power_attention_fused(q, k, v, log_g, degree=degree, scale=scale, chunk_size=c)
