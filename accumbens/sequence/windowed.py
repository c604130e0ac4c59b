"""Chunk-aligned recurrent form of power attention: acting that agrees with chunked training.

What. :func:`init_window_state` / :func:`window_step` advance power attention one token at a
time, like :mod:`accumbens.sequence.recurrent`, with constant memory and constant cost per token,
but they compute each output with the *same split* as the chunked training form
(:mod:`accumbens.sequence.chunked`) whose chunks start at the first token::

    y_i = ( sum_{j in chunk(i), j<=i} w_ij v_j  +  s^p exp(g_i) phi_q(q_i)^T S_n )
        / ( sum_{j in chunk(i), j<=i} w_ij      +  s^p exp(g_i) phi_q(q_i)^T z_n )

with ``w_ij = (s q_i.k_j)^p exp(g_i - g_j)`` computed in the attention form (``q.k`` raised to
the power), ``g`` the gate log-sum from the chunk start and ``(S_n, z_n)`` the expanded state of
the *completed* chunks only, decayed to the chunk boundary. The state carries

  * ``S, z``: the state of the completed chunks, ``(batch, kv_heads, D, d)`` and ``(..., D)``;
  * ``k, v, log_g``: a buffer of the current chunk's keys, values and log gates,
    ``(batch, chunk, kv_heads, d)`` and ``(batch, chunk, kv_heads)``;
  * ``position``: ``(batch,)`` int32, how many tokens of the current chunk are in the buffer.

When a chunk completes, its tokens are folded into ``(S, z)`` exactly as the chunked form folds
them (same formula, same order of operations) and the buffer starts over. A step costs
``O(D d + c d)`` to read plus ``O(c D d)`` to fold; the fold is computed at every step and
selected per sequence (branch-free, so ``vmap`` and the compiled runner pay no conditional), so
the cost is the same at step 10 and at step 10,000.

Why. The plain recurrent form scores every key, the current ones included, through the
expanded features: ``phi_q(q) . phi_k(k) = (q.k)^p`` is a sum of ``D`` terms of both signs of
size about ``|q|^p |k|^p``, so in float32 its absolute error is about ``1e-7 |q|^p |k|^p``. When a
query is nearly orthogonal to the keys (``(q.k)^p`` small against ``|q|^p |k|^p``) the weights,
and with them the normalised output, lose most of their digits; at the first token of an
episode, with a single key, ``y = v`` exactly in the attention form but not in the expanded one.
The chunked training form computes the keys of the current chunk in the attention form and
only the earlier chunks through the state. A recurrent form that scores *all* keys through the
state therefore differs from training by ~``1e-7 x`` (the score conditioning of every key), which
on an unlucky draw of the encoder was 0.16 on a LayerNorm-ed feature
(``tests/sequence/test_encoder.py``): the agent acted on a different policy than it trained.

Accuracy argument. Acting and training here evaluate the same expression term by term:

  * the current chunk in the attention form, where both lose only the rounding of ``q.k``
    (relative error ~eps |q||k| / |q.k|, the square root of the expanded form's conditioning);
  * the earlier chunks through a state built by the same fold from the same inputs (bitwise the
    same state on CPU in our checks, gate cumsum included) and read by the same product.

So the large gap between two *different* formulas is gone. What remains is the rounding of the
same formulas evaluated in a different order (a dot product for one query instead of a matrix
product for ``c``): where a query is nearly orthogonal to the keys of *earlier* chunks, the state
read-out ``phi_q(q)^T z`` is itself ill-conditioned, training's own value is then off from exact
arithmetic by ~eps x that conditioning, and acting differs from training by about as much
(on float32 inputs built with each query orthogonal to every earlier key, head_dim 8, chunk 4,
both were ~1e-2 at the two steps after the first chunk, the read-out's two forms ~3e-3 apart). That case needs a query orthogonal to every key of the earlier chunks, which is rare
for random encoders, whereas the case fixed here (few keys, early in an episode or chunk) is the
common one. Over random encoders the float32 gap went from up to 0.26 to ~1e-5 for degree 2
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
    Array, accum_dtype, check_degree, default_scale, expanded_dim, phi_key, phi_query, safe_divide,
)

_HIGHEST = jax.lax.Precision.HIGHEST


class WindowState(NamedTuple):
    """State of the chunk-aligned recurrent form (a pytree; works with jit/vmap/scan).

    Attributes:
      S: ``(batch, kv_heads, D, head_dim)`` state of the completed chunks, ``sum phi_k(k) v^T``
        with gates applied up to the last chunk boundary.
      z: ``(batch, kv_heads, D)`` its normaliser, ``sum phi_k(k)``.
      k, v: ``(batch, chunk, kv_heads, head_dim)`` keys and values of the current chunk (slots
        ``>= position`` are stale and ignored).
      log_g: ``(batch, chunk, kv_heads)`` log gates of the current chunk's steps.
      position: ``(batch,)`` int32, tokens of the current chunk held in the buffer (0..chunk-1).
    """

    S: Array
    z: Array
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
        k=jnp.zeros((batch, c, kv_heads, head_dim), dtype),
        v=jnp.zeros((batch, c, kv_heads, head_dim), dtype),
        log_g=jnp.zeros((batch, c, kv_heads), dtype),
        position=jnp.zeros((batch,), jnp.int32),
    )


def _check_step_shapes(state: WindowState, q_t: Array, k_t: Array, v_t: Array, log_g_t: Optional[Array], p: int):
    b, hk, D, d = state.S.shape
    if q_t.ndim != 3 or q_t.shape[0] != b or q_t.shape[2] != d or q_t.shape[1] % hk:
        raise ValueError(f"q_t must have shape (batch={b}, q_heads=r*{hk}, head_dim={d}), got {q_t.shape}")
    for name, x in (("k_t", k_t), ("v_t", v_t)):
        if x.shape != (b, hk, d):
            raise ValueError(f"{name} must have shape {(b, hk, d)}, got {x.shape}")
    if log_g_t is not None and log_g_t.shape != (b, hk):
        raise ValueError(f"log_g_t must have shape {(b, hk)}, got {log_g_t.shape}")
    if expanded_dim(d, p) != D:
        raise ValueError(f"state has D={D}, but degree {p} with head_dim {d} needs {expanded_dim(d, p)}")


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
    _check_step_shapes(state, q_t, k_t, v_t, log_g_t, p)
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

    # --- a completed chunk is folded into the state, as chunked.py folds it ---
    done = pos == c - 1  # (b,)
    kg = kb * jnp.exp((g_now[:, None, :] - gb) / p)[..., None]
    pk = phi_key(kg, p)  # (b, c, hk, D)
    decay = jnp.exp(g_now)
    S_fold = decay[:, :, None, None] * S + jnp.einsum("bjhD,bjhd->bhDd", pk, vb, precision=_HIGHEST)
    z_fold = decay[:, :, None] * z + jnp.sum(pk, axis=1)
    S = jnp.where(done[:, None, None, None], S_fold, S)
    z = jnp.where(done[:, None, None], z_fold, z)
    dt = state.S.dtype
    new = WindowState(
        S=S.astype(dt),
        z=z.astype(dt),
        k=kb.astype(dt),
        v=vb.astype(dt),
        log_g=ab.astype(dt),
        position=jnp.where(done, 0, pos + 1).astype(jnp.int32),
    )
    return new, y
