"""Chunk-aligned recurrent form of power attention: acting that agrees with chunked training.

What. :func:`init_window_state` / :func:`window_step` advance power attention one token at a
time, like :mod:`accumbens.sequence.recurrent`, with constant memory and constant cost per token,
but they compute each output with the *same split* as the chunked training form
(:mod:`accumbens.sequence.chunked`) whose chunks start at the first token::

    y_i = ( sum_{j in chunk(i), j<=i} w_ij v_j  +  s^p exp(g_i) phi_q(q_i)^T S_n )
        / ( sum_{j in chunk(i), j<=i} w_ij      +  s^p exp(g_i) phi_q(q_i)^T z_n )

with ``w_ij = (s q_i.k_j)^p exp(g_i - g_j)`` computed in the attention form (``q.k`` raised to
the power), ``g`` the gate log-sum from the chunk start and ``(S_n, z_n)`` the expanded state of
the *completed* chunks only, gated up to the chunk boundary. The state carries

  * ``S, z``: the state of the completed chunks, ``(batch, kv_heads, D, d)`` and ``(..., D)``;
  * ``P, pz``: the same for the tokens of the current chunk, built token by token as the plain
    recurrent form builds its state; it is not read, only added to ``S, z`` (after the chunk's
    gate) when the chunk completes, and then cleared;
  * ``k, v, log_g``: a buffer of the current chunk's keys, values and log gates,
    ``(batch, chunk, kv_heads, d)`` and ``(batch, chunk, kv_heads)``;
  * ``position``: ``(batch,)`` int32, how many tokens of the current chunk are in the buffer.

A step costs ``O(D d + c d)``, the same at step 10 and at step 10,000; the chunk completion is a
per-sequence select, not a branch, so ``vmap`` and the compiled runner need no conditional, and
sequences of one batch may be at different points of their chunks (after ``reset_carry``). On
CPU an acting step of a 2-layer, 4-head, head_dim 16, chunk 64 encoder took 2x (batch 1) to
2.5x (batch 64) the plain recurrent form's time, and its carry is 2.9x larger (the partial state
and the buffer).

Why. The plain recurrent form scores every key, the current ones included, through the
expanded features: ``phi_q(q) . phi_k(k) = (q.k)^p`` is a sum of ``D`` terms of both signs of
size about ``|q|^p |k|^p``, so in float32 its absolute error is about ``1e-7 |q|^p |k|^p``. When a
query is nearly orthogonal to the keys (``(q.k)^p`` small against ``|q|^p |k|^p``) the weights,
and with them the normalised output, lose most of their digits; at the first token of an
episode, with a single key, ``y = v`` exactly in the attention form but not in the expanded one.
The chunked training form computes the keys of the current chunk in the attention form and
only the earlier chunks through the state. A recurrent form that scores *all* keys through the
state therefore differs from training by ~``1e-7 x`` the score conditioning of every key, which
on an unlucky draw of the encoder was 0.16 on a LayerNorm-ed feature
(``tests/sequence/test_encoder.py``): the agent acted on a different policy than it trained.

Accuracy argument. Acting and training here evaluate the same expression term by term:

  * the current chunk in the attention form, where both lose only the rounding of ``q.k``
    (relative error ~eps |q||k| / |q.k|, the square root of the expanded form's conditioning);
    the gate log-sums come from the same cumsum over ``c`` slots, so they are the same numbers;
  * the earlier chunks through the same state ``S_n`` (built in another order, so equal up to
    float32 rounding of its entries) read by the same product.

So the large gap between two *different* formulas is gone. What remains is rounding of the same
quantities in a different order, which matters only where the state read-out
``phi_q(q)^T z_n`` is itself ill-conditioned, i.e. a query nearly orthogonal to every key of the
*earlier* chunks. Then training's own value is off from exact arithmetic by ~eps x that
conditioning and acting differs from training by about as much (on float32 inputs built with
each query orthogonal to every earlier key, head_dim 8, chunk 4: both ~1e-2 at the two steps
after the first chunk). That needs a query orthogonal to many keys at once, rare for random
encoders; the case fixed here (few keys, early in an episode or chunk) is the common one. Over
random encoders the float32 gap went from up to 0.26 to ~1e-5 for degree 2
(``tests/sequence/test_encoder.py``). For episodes no longer than the chunk both forms are the
attention form throughout.

Chunk alignment. Acting equals the chunked form only if both start their chunks at the same
token. The acting state starts at the episode start; the encoder's parallel form rotates each
replay history so that its first valid step begins a chunk (:mod:`accumbens.sequence.masked`).

Example::

    state = init_window_state(batch=8, kv_heads=4, head_dim=32, degree=2, chunk_size=64)
    for t in range(T):
        state, y = window_step(state, q[:, t], k[:, t], v[:, t], log_g[:, t])
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

from accumbens.sequence._common import (
    Array, accum_dtype, check_degree, check_step_shapes, default_scale, expanded_dim, phi_key, phi_query,
    safe_divide,
)

_HIGHEST = jax.lax.Precision.HIGHEST


class WindowState(NamedTuple):
    """State of the chunk-aligned recurrent form (a pytree; works with jit/vmap/scan).

    Attributes:
      S: ``(batch, kv_heads, D, head_dim)`` state of the completed chunks, ``sum phi_k(k) v^T``
        with gates applied up to the last chunk boundary.
      z: ``(batch, kv_heads, D)`` its normaliser, ``sum phi_k(k)``.
      P, pz: as ``S, z`` for the tokens of the current chunk only, gated up to the last token
        (added to ``S, z`` when the chunk completes; not read before).
      k, v: ``(batch, chunk, kv_heads, head_dim)`` keys and values of the current chunk (slots
        ``>= position`` are stale and ignored).
      log_g: ``(batch, chunk, kv_heads)`` log gates of the current chunk's steps.
      position: ``(batch,)`` int32, tokens of the current chunk held in the buffer (0..chunk-1).
    """

    S: Array
    z: Array
    P: Array
    pz: Array
    k: Array
    v: Array
    log_g: Array
    position: Array

    @property
    def chunk_size(self) -> int:
        return self.k.shape[-3]

    @property
    def degree(self) -> int:
        d, D = self.S.shape[-1], self.S.shape[-2]
        for p in range(2, 64, 2):
            if expanded_dim(d, p) == D:
                return p
        raise ValueError(f"state of shape {self.S.shape} matches no even degree")


def init_window_state(
    batch: int, kv_heads: int, head_dim: int, degree: int = 2, chunk_size: int = 128, dtype=jnp.float32
) -> WindowState:
    """Empty state (no tokens seen); ``chunk_size`` must equal the training form's chunk length.

    ``dtype`` is the storage dtype (float32 as agents run; float64 for float64 checks).
    """
    check_degree(degree)
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    D = expanded_dim(head_dim, degree)
    c = chunk_size
    return WindowState(
        S=jnp.zeros((batch, kv_heads, D, head_dim), dtype),
        z=jnp.zeros((batch, kv_heads, D), dtype),
        P=jnp.zeros((batch, kv_heads, D, head_dim), dtype),
        pz=jnp.zeros((batch, kv_heads, D), dtype),
        k=jnp.zeros((batch, c, kv_heads, head_dim), dtype),
        v=jnp.zeros((batch, c, kv_heads, head_dim), dtype),
        log_g=jnp.zeros((batch, c, kv_heads), dtype),
        position=jnp.zeros((batch,), jnp.int32),
    )


def window_step(
    state: WindowState,
    q_t: Array,
    k_t: Array,
    v_t: Array,
    log_g_t: Optional[Array] = None,
    *,
    degree: Optional[int] = None,
    scale: Optional[float] = None,
) -> Tuple[WindowState, Array]:
    """Advance one token (module docstring).

    Args:
      state: from :func:`init_window_state` or a previous :func:`window_step`.
      q_t: ``(batch, q_heads, head_dim)``; ``q_heads`` a multiple of the state's ``kv_heads``.
      k_t, v_t: ``(batch, kv_heads, head_dim)``.
      log_g_t: optional ``(batch, kv_heads)`` log gate of this step (``<= 0`` for decay).
      degree: defaults to the degree the state was made with.
      scale: multiplies ``q . k`` before the power, as in the parallel forms (falsy:
        ``1/sqrt(head_dim)``). It cancels in exact arithmetic; pass the training form's value so
        that the rounding matches too.

    Returns:
      ``(new_state, y_t)`` with ``y_t`` of shape ``(batch, q_heads, head_dim)`` in ``q_t``'s dtype.
    """
    p = state.degree if degree is None else degree
    check_degree(p)
    check_step_shapes(state.S.shape, q_t, k_t, v_t, log_g_t, p)
    b, hk, D, d = state.S.shape
    c = state.chunk_size
    r = q_t.shape[1] // hk
    acc = accum_dtype(jnp.promote_types(q_t.dtype, state.S.dtype))
    s = default_scale(d, scale)

    # --- write this token into the chunk buffer ---
    pos = state.position
    slot = jax.nn.one_hot(pos, c, dtype=bool)  # (b, c)
    seen = jnp.arange(c)[None, :] <= pos[:, None]  # (b, c): slots of this chunk up to and including now
    lg = jnp.zeros((b, hk), acc) if log_g_t is None else log_g_t.astype(acc)
    kb = jnp.where(slot[:, :, None, None], k_t.astype(acc)[:, None], state.k.astype(acc))
    vb = jnp.where(slot[:, :, None, None], v_t.astype(acc)[:, None], state.v.astype(acc))
    ab = jnp.where(slot[:, :, None], lg[:, None], state.log_g.astype(acc))
    ab = jnp.where(seen[:, :, None], ab, 0.0)  # stale slots: no gate (they are also masked below)
    # Gate log-sums from the chunk start by the same cumsum over c slots as chunked.py, so that
    # they round alike: a prefix sum depends only on the entries up to it.
    gb = jnp.cumsum(ab, axis=1)  # (b, c, hk)
    g_now = jnp.take_along_axis(gb, pos[:, None, None], axis=1)[:, 0]  # (b, hk)
    S, z = state.S.astype(acc), state.z.astype(acc)

    # --- inside the chunk: attention form, as chunked.py ---
    qa = q_t.astype(acc).reshape(b, hk, r, d) * s
    scores = jnp.einsum("bhrd,bjhd->bhrj", qa, kb, precision=_HIGHEST)
    diff = g_now[:, :, None, None] - jnp.transpose(gb, (0, 2, 1))[:, :, None, :]  # (b, hk, 1, c)
    causal = seen[:, None, None, :]
    w = jnp.where(causal, scores**p * jnp.exp(jnp.where(causal, diff, 0)), 0)
    num = jnp.einsum("bhrj,bjhd->bhrd", w, vb, precision=_HIGHEST)
    den = jnp.einsum("bhrj->bhr", w)
    # --- before the chunk: read the completed chunks' state ---
    pq = phi_query(qa * jnp.exp(g_now / p)[:, :, None, None], p)  # (b, hk, r, D)
    num = num + jnp.einsum("bhrD,bhDd->bhrd", pq, S, precision=_HIGHEST)
    den = den + jnp.einsum("bhrD,bhD->bhr", pq, z, precision=_HIGHEST)
    y = safe_divide(num, den).reshape(b, hk * r, d).astype(q_t.dtype)

    # --- this token joins the current chunk's own state, which a completed chunk adds to (S, z) ---
    first = (pos == 0)[:, None]  # (b, 1): a new chunk starts from an empty partial state
    decay_t = jnp.exp(lg)  # (b, hk)
    pk = phi_key(k_t.astype(acc), p)  # (b, hk, D)
    P = jnp.where(first[:, :, None, None], 0.0, decay_t[:, :, None, None] * state.P.astype(acc))
    P = P + pk[..., None] * v_t.astype(acc)[:, :, None, :]
    pz = jnp.where(first[:, :, None], 0.0, decay_t[:, :, None] * state.pz.astype(acc)) + pk
    done = pos == c - 1  # (b,)
    decay = jnp.exp(g_now)[:, :, None]  # the whole chunk's gate
    S = jnp.where(done[:, None, None, None], decay[..., None] * S + P, S)
    z = jnp.where(done[:, None, None], decay * z + pz, z)
    dt = state.S.dtype
    new = WindowState(
        S=S.astype(dt),
        z=z.astype(dt),
        P=P.astype(dt),
        pz=pz.astype(dt),
        k=kb.astype(dt),
        v=vb.astype(dt),
        log_g=ab.astype(dt),
        position=jnp.where(done, 0, pos + 1).astype(jnp.int32),
    )
    return new, y
