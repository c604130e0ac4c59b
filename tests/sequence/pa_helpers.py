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
