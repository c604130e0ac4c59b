"""masked_power_attention (accumbens/sequence/masked.py): valid steps see only valid steps, and its
chunks start at the episode start, so that training splits keys as the acting state does."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from accumbens.sequence.masked import masked_power_attention, rotate_time
from accumbens.sequence.reference import power_attention_reference
from accumbens.sequence.windowed import init_window_state, window_step
from pa_helpers import make_inputs, rel_err


def test_valid_steps_equal_attention_over_the_valid_suffix_float64(rng):
    b, t, h, d = 3, 10, 2, 3
    q, k, v, lg = make_inputs(rng, b, t, h, h, d)
    starts = [0, 3, 9]
    mask = jnp.asarray(np.arange(t)[None] >= np.array(starts)[:, None])
    # padding contents must not matter: scramble them
    noise = jnp.asarray(rng.normal(size=(b, t, h, d))) * 50
    pad = ~mask[:, :, None, None]
    q, k, v = (jnp.where(pad, noise, x) for x in (q, k, v))
    lg = jnp.where(pad[..., 0], -3.0, lg)
    for align in (True, False):
        got = jax.jit(lambda *a: masked_power_attention(*a, chunk_size=4, align=align))(q, k, v, lg, mask)
        for row, s in enumerate(starts):
            want = power_attention_reference(*(x[row:row + 1, s:] for x in (q, k, v, lg)))
            assert rel_err(got[row:row + 1, s:], want) < 1e-12


def test_rotate_time_and_its_inverse():
    x = jnp.arange(2 * 5).reshape(2, 5)
    shift = jnp.array([2, 0])
    np.testing.assert_array_equal(rotate_time(x, shift), [[2, 3, 4, 0, 1], [5, 6, 7, 8, 9]])
    np.testing.assert_array_equal(rotate_time(rotate_time(x, shift), -shift), x)


def _orthogonal_to_all_earlier_keys(rng, t, d):
    """float32 inputs [1, t, 1, d] whose query i is orthogonal (up to 1e-3 noise) to keys 0..i,
    t <= d: every weight (q.k)^2 is tiny against |q|^2 |k|^2, the expanded state's bad case."""
    q, k, v, lg = make_inputs(rng, 1, t, 1, 1, d)
    q, k = np.array(q), np.array(k)
    for i in range(t):
        basis, _ = np.linalg.qr(k[0, : i + 1, 0].T)  # (d, i+1)
        q[0, i, 0] -= basis @ (basis.T @ q[0, i, 0])
        q[0, i, 0] += 1e-3 * rng.standard_normal(d)
    return tuple(jnp.asarray(x, jnp.float32) for x in (q, k, v)) + (lg,)


def test_training_windows_split_keys_as_acting_does_float32(rng):
    """Training reads the last step of the L-step history ending at each step s (padding before
    the episode start); acting runs window_step from the episode start. The episode fits in one
    chunk, so acting scores every key in the attention form. With the alignment so does training;
    without it, a history whose episode starts mid-chunk scores its first keys through the
    expanded state, and on these inputs that loses most digits."""
    t, d, c, window = 4, 8, 4, 6
    q, k, v, lg = _orthogonal_to_all_earlier_keys(rng, t, d)
    index = np.arange(t)[:, None] - (window - 1) + np.arange(window)[None, :]  # [s, slot]: step held
    mask = jnp.asarray(index >= 0)

    def histories(x):
        return jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 2)), x[0][np.maximum(index, 0)], 0)

    with jax.enable_x64(False):
        state = init_window_state(1, 1, d, 2, c)
        steps = tuple(jnp.moveaxis(x, 1, 0) for x in (q, k, v, lg))
        _, acting = jax.lax.scan(lambda s, x: window_step(s, *x), state, steps)
        acting = np.asarray(acting[:, 0])  # [t, h, d]
        errors = {}
        for align in (True, False):
            training = jax.jit(lambda *a: masked_power_attention(*a, chunk_size=c, align=align))(
                *(histories(x) for x in (q, k, v, lg)), mask
            )
            errors[align] = np.abs(np.asarray(training[:, -1]) - acting).max()
    assert errors[True] < 1e-3 and errors[False] > 1e-1, errors


def test_mask_shape_is_checked(rng):
    q, k, v, lg = make_inputs(rng, 1, 4, 1, 1, 2)
    with pytest.raises(ValueError, match="mask shape"):
        masked_power_attention(q, k, v, lg, jnp.ones((1, 3), bool))
