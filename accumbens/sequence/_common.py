"""Shared pieces of the power-attention implementations: argument checks and the
symmetric power embedding.

The symmetric power embedding
-----------------------------
For an even degree ``p`` and a vector ``x`` of size ``d``, ``x ⊗ x ⊗ ... ⊗ x`` (``p`` times)
has ``d**p`` entries but only ``D = C(d + p - 1, p)`` distinct ones: the entry at index
``(a_1, ..., a_p)`` depends only on the multiset ``{a_1, ..., a_p}``. Keeping one entry per
multiset ``m`` and weighting it by the number of orderings of ``m`` (the multinomial
coefficient ``p! / prod(count!)``) keeps inner products exact::

    sum_m  w_m * prod_{a in m} q_a * prod_{a in m} k_a  =  (q . k) ** p.

We put the weight ``w_m`` on the key side only (``phi_k(k) = w * prod k``, ``phi_q(q) = prod q``),
so no square roots enter and the identity holds to rounding. States built from keys carry
the weights; queries read them plainly.
"""
from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import Optional, Tuple

import jax.numpy as jnp
import numpy as np

Array = jnp.ndarray


def expanded_dim(head_dim: int, degree: int) -> int:
    """Size ``D = C(d + p - 1, p)`` of the symmetric power embedding."""
    return math.comb(head_dim + degree - 1, degree)


@lru_cache(maxsize=None)
def symmetric_indices(head_dim: int, degree: int) -> Tuple[np.ndarray, np.ndarray]:
    """Index table ``(D, p)`` of the multisets (sorted tuples) and their multinomial weights ``(D,)``."""
    combos = list(itertools.combinations_with_replacement(range(head_dim), degree))
    idx = np.asarray(combos, dtype=np.int32).reshape(len(combos), degree)
    fact = math.factorial(degree)
    weights = np.empty(len(combos), dtype=np.float64)
    for n, c in enumerate(combos):
        denom = 1
        for value in set(c):
            denom *= math.factorial(c.count(value))
        weights[n] = fact / denom
    return idx, weights


def phi_query(x: Array, degree: int) -> Array:
    """Unweighted symmetric power embedding ``prod_{a in m} x_a`` over the last axis: ``(..., D)``."""
    idx, _ = symmetric_indices(x.shape[-1], degree)
    out = x[..., idx[:, 0]]
    for i in range(1, degree):
        out = out * x[..., idx[:, i]]
    return out


def phi_key(x: Array, degree: int) -> Array:
    """Weighted symmetric power embedding ``w_m * prod_{a in m} x_a``: ``(..., D)``."""
    _, w = symmetric_indices(x.shape[-1], degree)
    return phi_query(x, degree) * jnp.asarray(w, dtype=x.dtype)


def accum_dtype(dtype) -> jnp.dtype:
    """Accumulation dtype: float64 for float64 inputs, else float32."""
    return jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32


def check_degree(degree: int) -> None:
    if not isinstance(degree, (int, np.integer)) or isinstance(degree, bool) or degree < 2 or degree % 2:
        raise ValueError(f"degree must be a positive even integer (2, 4, ...), got {degree!r}")


def check_inputs(q: Array, k: Array, v: Array, log_g: Optional[Array], degree: int) -> Tuple[int, int, int, int, int]:
    """Validate shapes of a parallel-form call; return ``(batch, time, q_heads, kv_heads, head_dim)``."""
    check_degree(degree)
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 4:
            raise ValueError(f"{name} must have shape (batch, time, heads, head_dim), got shape {x.shape}")
    b, t, hq, d = q.shape
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {k.shape} and {v.shape}")
    if k.shape[0] != b or k.shape[1] != t or k.shape[3] != d:
        raise ValueError(f"k/v shape {k.shape} does not match q shape {q.shape} in batch, time or head_dim")
    hk = k.shape[2]
    if hk == 0 or hq % hk:
        raise ValueError(f"q heads ({hq}) must be a multiple of kv heads ({hk})")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not jnp.issubdtype(q.dtype, jnp.floating):
        raise ValueError(f"q, k, v must be floating point, got {q.dtype}")
    if t == 0 or d == 0:
        raise ValueError(f"time and head_dim must be positive, got shape {q.shape}")
    if log_g is not None:
        if log_g.shape != (b, t, hk):
            raise ValueError(f"log_g must have shape (batch, time, kv_heads) = {(b, t, hk)}, got {log_g.shape}")
    return b, t, hq, hk, d


def default_scale(head_dim: int, scale: Optional[float]) -> float:
    """The package's rule: ``scale`` falsy (None or 0) means ``1 / sqrt(head_dim)``."""
    return float(scale) if scale else 1.0 / math.sqrt(head_dim)


def safe_divide(num: Array, den: Array) -> Array:
    """``num / den`` with rows whose weight sum is exactly zero (e.g. an all-zero query) giving 0, not NaN."""
    den_ok = jnp.where(den == 0, jnp.ones_like(den), den)
    return num / den_ok[..., None]


def check_step_shapes(state_shape: tuple, q_t: Array, k_t: Array, v_t: Array, log_g_t: Optional[Array], p: int) -> None:
    """Raises ValueError unless one decode step's inputs fit a state whose expanded-state array has
    shape ``state_shape = (batch, kv_heads, D, head_dim)`` and degree ``p``."""
    b, hk, D, d = state_shape
    if q_t.ndim != 3 or q_t.shape[0] != b or q_t.shape[2] != d or q_t.shape[1] % hk:
        raise ValueError(f"q_t must have shape (batch={b}, q_heads=r*{hk}, head_dim={d}), got {q_t.shape}")
    for name, x in (("k_t", k_t), ("v_t", v_t)):
        if x.shape != (b, hk, d):
            raise ValueError(f"{name} must have shape {(b, hk, d)}, got {x.shape}")
    if log_g_t is not None and log_g_t.shape != (b, hk):
        raise ValueError(f"log_g_t must have shape {(b, hk)}, got {log_g_t.shape}")
    if expanded_dim(d, p) != D:
        raise ValueError(f"state has D={D}, but degree {p} with head_dim {d} needs {expanded_dim(d, p)}")
