"""The chunk-aligned recurrent form (accumbens/sequence/windowed.py) against the parallel forms.

float64: it is the same function as the reference and the chunked form (1e-12), for any time,
chunk, degree, grouped heads, with and without gates. float32: it agrees with the chunked form
(training) to float32 rounding even where the plain recurrent form (all keys through the
expanded state) loses most digits, on queries built to be nearly orthogonal to the keys.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from accumbens.sequence import init_state, step
from accumbens.sequence.chunked import power_attention_chunked
from accumbens.sequence.reference import power_attention_reference
from accumbens.sequence.windowed import WindowState, init_window_state, window_step
from pa_helpers import make_inputs, rel_err


def run_window(q, k, v, lg, degree, chunk_size, scale=None):
    """Outputs of window_step scanned over time from an empty state: (final state, [b, t, hq, d])."""
    b, _, hk, d = k.shape
    state = init_window_state(b, hk, d, degree, chunk_size, dtype=q.dtype)
    xs = tuple(jnp.moveaxis(x, 1, 0) for x in (q, k, v) + (() if lg is None else (lg,)))

    def body(s, x):
        return window_step(s, *x, degree=degree, scale=scale)

    final, ys = jax.jit(lambda s, xs: jax.lax.scan(body, s, xs))(state, xs)
    return final, jnp.moveaxis(ys, 0, 1)


@pytest.mark.parametrize(
    "t,chunk,hq,hk,d,p,gate",
    [
        (11, 4, 2, 2, 3, 2, True),  # partial last chunk
        (12, 4, 4, 2, 3, 2, True),  # whole chunks, grouped heads
        (5, 8, 2, 1, 4, 2, True),  # shorter than one chunk: pure attention form
        (9, 3, 2, 2, 3, 4, False),  # degree 4, no gate
        (7, 1, 1, 1, 2, 2, True),  # chunk of one: every key through the state
    ],
)
def test_window_step_equals_chunked_and_reference_float64(t, chunk, hq, hk, d, p, gate, rng):
    q, k, v, lg = make_inputs(rng, 2, t, hq, hk, d, gate=gate)
    want = power_attention_reference(q, k, v, lg, degree=p)
    chunked = power_attention_chunked(q, k, v, lg, degree=p, chunk_size=chunk)
    final, got = run_window(q, k, v, lg, p, chunk)
    assert got.shape == want.shape and got.dtype == jnp.float64
    assert rel_err(got, chunked) < 1e-12
    assert rel_err(got, want) < 1e-10
    np.testing.assert_array_equal(final.position, np.full(2, t % chunk))
    assert final.S.shape == (2, hk, init_state(1, hk, d, p).S.shape[2], d)


def _nearly_orthogonal_inputs(rng, b, t, h, d, dtype=jnp.float32):
    """Queries nearly orthogonal to every key of their chunk's first two steps (the bad case of
    the expanded-state form: (q.k)^p tiny against |q|^p |k|^p), float32."""
    q, k, v, lg = make_inputs(rng, b, t, h, h, d, dtype=jnp.float64)
    q, k = np.array(q), np.array(k)
    for i in range(t):
        basis = k[:, max(0, i - 1): i + 1]  # (b, m, h, d): this and the previous key
        for bi in range(b):
            for hi in range(h):
                kk = basis[bi, :, hi]
                proj = kk.T @ np.linalg.lstsq(kk @ kk.T, kk @ q[bi, i, hi], rcond=None)[0]
                q[bi, i, hi] = q[bi, i, hi] - proj + 1e-3 * rng.standard_normal(d)
    return tuple(jnp.asarray(x, dtype) for x in (q, k, v)) + (lg,)


def test_window_step_float32_agrees_with_chunked_on_near_orthogonal_queries(rng):
    b, t, h, d, c = 3, 10, 2, 8, 4
    q, k, v, lg = _nearly_orthogonal_inputs(rng, b, t, h, d)
    with jax.enable_x64(False):
        chunked = np.asarray(jax.jit(lambda *a: power_attention_chunked(*a, chunk_size=c))(q, k, v, lg))
        _, windowed = run_window(q, k, v, lg, 2, c)
        state = init_state(b, h, d)
        _, plain = jax.jit(lambda s, xs: jax.lax.scan(lambda s, x: step(s, *x), s, xs))(
            state, tuple(jnp.moveaxis(x, 1, 0) for x in (q, k, v, lg))
        )
    truth = np.asarray(power_attention_reference(*(x.astype(jnp.float64) for x in (q, k, v)), lg))
    plain = np.moveaxis(np.asarray(plain), 0, 1)
    windowed = np.asarray(windowed)
    # The inputs are ill-conditioned for the expanded state: the plain recurrent form is far off
    # (19 on this draw, so the test tells the forms apart). The chunk-aligned form differs from
    # training (9e-5 here) by about as much as training differs from exact arithmetic (6e-4; over
    # 12 seeds the two ranged 2e-5..2e-3 and 4e-5..6e-3): q.k itself is ill-conditioned here, a
    # relative error ~1e3 eps, which no float32 form avoids.
    assert np.abs(plain - chunked).max() > 1.0
    assert np.abs(windowed - chunked).max() < 1e-2
    assert np.abs(chunked - truth).max() < 1e-2
    assert np.abs(windowed[:, :c] - truth[:, :c]).max() < 1e-2  # first chunk: the attention form


def test_sequences_at_different_chunk_phases_in_one_batch(rng):
    """Sequence 1 restarts at step 3 (as reset_carry does at an episode start): each sequence
    folds its own chunks at its own steps, and equals the chunked form on its own history."""
    b, t, h, d, c = 2, 11, 2, 3, 4
    q, k, v, lg = make_inputs(rng, b, t, h, h, d)
    fresh = init_window_state(b, h, d, 2, c, dtype=jnp.float64)
    state, outs = fresh, []
    step_fn = jax.jit(window_step)
    for i in range(t):
        if i == 3:
            state = jax.tree.map(lambda s, f: s.at[1].set(f[1]), state, fresh)
        state, y = step_fn(state, q[:, i], k[:, i], v[:, i], lg[:, i])
        outs.append(y)
    got = jnp.stack(outs, axis=1)
    want0 = power_attention_chunked(q[:1], k[:1], v[:1], lg[:1], chunk_size=c)
    want1 = power_attention_chunked(q[1:, 3:], k[1:, 3:], v[1:, 3:], lg[1:, 3:], chunk_size=c)
    assert rel_err(got[:1], want0) < 1e-12
    assert rel_err(got[1:, 3:], want1) < 1e-12
    np.testing.assert_array_equal(state.position, [t % c, (t - 3) % c])


def test_vmap_jit_and_fixed_state_size(rng):
    q, k, v, lg = make_inputs(rng, 2, 6, 2, 2, 3)
    state = init_window_state(1, 2, 3, 2, 4, dtype=jnp.float64)
    shapes = jax.tree.map(jnp.shape, state)

    def run(q, k, v, lg):  # one sequence [t, h, d]
        def body(s, x):
            return window_step(s, *(a[None] for a in x))

        s, ys = jax.lax.scan(body, state, (q, k, v, lg))
        return s, ys[:, 0]

    final, got = jax.jit(jax.vmap(run))(q, k, v, lg)
    assert rel_err(got, power_attention_chunked(q, k, v, lg, chunk_size=4)) < 1e-12
    assert jax.tree.map(lambda x: x.shape[1:], final) == shapes  # vmap adds the leading axis only
    assert isinstance(final, WindowState) and final.chunk_size == 4 and final.degree == 2


def test_bad_arguments_raise(rng):
    with pytest.raises(ValueError, match="chunk_size"):
        init_window_state(1, 2, 4, 2, 0)
    with pytest.raises(ValueError, match="even"):
        init_window_state(1, 2, 4, 3, 4)
    state = init_window_state(1, 2, 4, 2, 4)
    q, k, v, lg = make_inputs(rng, 1, 2, 2, 2, 4, dtype=jnp.float32)
    with pytest.raises(ValueError, match="q_t"):
        window_step(state, q[:, 0, :, :3], k[:, 0], v[:, 0])
    with pytest.raises(ValueError, match="k_t"):
        window_step(state, q[:, 0], k[:, 0, :1], v[:, 0])
    with pytest.raises(ValueError, match="log_g_t"):
        window_step(state, q[:, 0], k[:, 0], v[:, 0], lg[:, 0, :1])
    with pytest.raises(ValueError, match="degree 4"):
        window_step(state, q[:, 0], k[:, 0], v[:, 0], degree=4)


def test_state_round_trips_through_msgpack_and_resumes(rng):
    """A checkpointed acting state (flax msgpack, no pickle) resumes mid-chunk exactly."""
    from flax import serialization

    q, k, v, lg = make_inputs(rng, 1, 7, 2, 2, 3)
    state = init_window_state(1, 2, 3, 2, 4, dtype=jnp.float64)
    step_fn = jax.jit(window_step)
    outs = []
    for i in range(7):
        if i == 5:  # mid-chunk: position 1
            blob = serialization.msgpack_serialize(serialization.to_state_dict(state))
            state = serialization.from_state_dict(state, serialization.msgpack_restore(blob))
            assert isinstance(state, WindowState) and int(state.position[0]) == 1
        state, y = step_fn(state, q[:, i], k[:, i], v[:, i], lg[:, i])
        outs.append(y)
    _, want = run_window(q, k, v, lg, 2, 4)
    np.testing.assert_allclose(jnp.stack(outs, axis=1), want, rtol=1e-12, atol=1e-12)
