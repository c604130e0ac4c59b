"""Shared helpers for the power-attention tests."""
import jax.numpy as jnp
import numpy as np


def make_inputs(rng, b, t, hq, hk, d, gate=True, dtype=jnp.float64):
    q = jnp.asarray(rng.standard_normal((b, t, hq, d)), dtype)
    k = jnp.asarray(rng.standard_normal((b, t, hk, d)), dtype)
    v = jnp.asarray(rng.standard_normal((b, t, hk, d)), dtype)
    lg = None
    if gate:
        # log-sigmoid of a normal, as the package's own test inputs
        lg = jnp.asarray(-np.logaddexp(0.0, -rng.standard_normal((b, t, hk))), jnp.float32)
    return q, k, v, lg


def rel_err(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def f64(x):
    return None if x is None else jnp.asarray(x, jnp.float64)


def score_condition(q, k, p):
    """Largest ratio, over query rows, of sum_j |q_t|^p |k_j|^p to sum_j (q_t . k_j)^p (causal).

    Forms that score through the expanded features phi(q) . phi(k) (recurrent, state path)
    sum terms of both signs whose total is (q.k)^p, so their relative error is about
    machine epsilon times this ratio; the attention form raises q.k itself and does not lose it.
    """
    q = np.asarray(q, np.float64)
    k = np.asarray(k, np.float64)
    t, r = q.shape[1], q.shape[2] // k.shape[2]
    k = np.repeat(k, r, axis=2)
    dots = np.einsum("bthd,bshd->bhts", q, k)
    norms = np.einsum("bth,bsh->bhts", np.linalg.norm(q, axis=-1), np.linalg.norm(k, axis=-1))
    causal = np.tril(np.ones((t, t), bool))
    return float((np.where(causal, norms**p, 0).sum(-1) / np.where(causal, dots**p, 0).sum(-1)).max())
