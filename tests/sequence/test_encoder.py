"""PowerAttentionEncoder: shapes, recurrent = parallel, masking at episode starts, equal parameters.

Tolerances. In float64 (parameters and inputs cast; this folder enables x64) the recurrent form
(one step at a time, carrying the state) and the parallel chunked form agree to 1e-10: they are
the same function. In float32, as agents run them, they agree to float32 rounding (~1e-6 on a
LayerNorm-ed feature), also where queries are nearly orthogonal to the keys: the acting state is
chunk-aligned (accumbens/sequence/windowed.py), so both forms score the current chunk in the
attention form and earlier chunks through the same state. The float32 tests bound the mean
error by 1e-4 and the worst by 2e-2, the bounds of the known issue this fixed (the earlier acting
form, which scored every key through the expanded state, gave 7.6e-3 and 0.16 on the recorded
draw below).
Everything is jitted: on this project's shared CPU, compiling one function is much cheaper than
the many small compilations of eager Flax.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from accumbens.agents.networks import MLP, MinAtarCNN
from accumbens.sequence.encoder import PowerAttentionEncoder, SequenceTorso, reset_carry, softmax_attention

TOL = dict(atol=1e-10, rtol=1e-10)  # float64
TOL32 = dict(atol=1e-4, rtol=1e-4)  # float32, well-conditioned cases
B, T, OBS = 3, 13, 3


def make_encoder(attention="power", **kwargs):
    settings = dict(num_layers=2, num_heads=2, head_dim=8, chunk_size=4, context_length=32)
    settings.update(kwargs)
    return PowerAttentionEncoder(torso=MLP(hidden_units=(16,)), attention=attention, **settings)


def run_recurrent(encoder, params, observations):
    """Features of the recurrent form over observations [B, T', obs] from a fresh carry: [B, T', dim]."""

    def scan_body(carry, observation):
        return encoder.apply(params, carry, observation, method=encoder.step)

    carry = encoder.initial_carry(observations.shape[0], observations.dtype)
    _, features = jax.lax.scan(scan_body, carry, jnp.swapaxes(observations, 0, 1))
    return jnp.swapaxes(features, 0, 1)


@pytest.mark.parametrize("attention", ["power", "softmax"])
def test_recurrent_equals_parallel_and_masking(attention, rng):
    encoder = make_encoder(attention)
    observations = jnp.asarray(rng.normal(size=(B, T, OBS)))
    starts = np.array([0, 5, T - 1])  # episode starts inside the window: earlier steps are padding
    mask = jnp.asarray(np.arange(T)[None, :] >= starts[:, None])
    params = jax.jit(encoder.init)(jax.random.PRNGKey(1), observations, mask)
    params = jax.tree.map(lambda x: x.astype(jnp.float64), params)
    parallel_fn = jax.jit(encoder.apply)
    parallel = parallel_fn(params, observations, mask)
    assert parallel.shape == (B, T, 16) and parallel.dtype == jnp.float64

    # Recurrent = parallel: each sequence run step by step from its episode start (T=13 steps are
    # 4 chunks of 4, so the chunked form carries its state across chunk boundaries too).
    recurrent = jax.jit(run_recurrent, static_argnums=0)
    for b, start in enumerate(starts):
        np.testing.assert_allclose(recurrent(encoder, params, observations[b:b + 1, start:])[0], parallel[b, start:], **TOL)

    # Masked steps before the episode start: their contents do not matter.
    scrambled = jnp.where(mask[..., None], observations, 10.0 * jnp.asarray(rng.normal(size=(B, T, OBS))))
    again = parallel_fn(params, scrambled, mask)
    np.testing.assert_allclose(np.where(mask[..., None], again, 0), np.where(mask[..., None], parallel, 0), **TOL)

    # The carry has a fixed size (power) and resets per sequence.
    step = jax.jit(lambda carry, x: encoder.apply(params, carry, x, method=encoder.step))
    carry = encoder.initial_carry(B, jnp.float64)
    shapes = jax.tree.map(lambda x: x.shape, carry)
    for t in range(3):
        carry, features = step(carry, observations[:, t])
    assert features.shape == (B, 16) and jax.tree.map(lambda x: x.shape, carry) == shapes
    if attention == "power":
        assert carry[0].S.shape == (B, 2, math.comb(9, 2), 8)  # D = C(d + 1, 2) per head
    initial = encoder.initial_carry(B, jnp.float64)
    fresh = reset_carry(carry, initial, jnp.array([True, False, False]))
    for new, old, init in zip(jax.tree.leaves(fresh), jax.tree.leaves(carry), jax.tree.leaves(initial)):
        np.testing.assert_array_equal(new[0], init[0])
        np.testing.assert_array_equal(new[1:], old[1:])


@pytest.mark.parametrize("attention", ["power", "softmax"])
def test_recurrent_close_to_parallel_in_float32(attention):
    # float32 throughout, as agents run (this folder turns x64 on). A well-conditioned draw: see the
    # next test for one that is not.
    with jax.enable_x64(False):
        error = _recurrent_minus_parallel_float32(attention, np.random.default_rng(0))
    assert error.mean() < 1e-4 and error.max() < 2e-2, (error.mean(), error.max())


def test_recurrent_close_to_parallel_in_float32_ill_conditioned_draw():
    # Formerly a strict xfail (mean 7.6e-3, max 0.16 with the all-state acting form): on this draw a
    # query is nearly orthogonal to the first key of an episode, whose score (q.k)^2 the expanded
    # state computed with most digits cancelled (the attention form gives y = v exactly there). The
    # chunk-aligned acting state scores the current chunk in the attention form, as training does.
    with jax.enable_x64(False):
        error = _recurrent_minus_parallel_float32("power", np.random.default_rng(1965294376))
    assert error.mean() < 1e-4 and error.max() < 2e-2, (error.mean(), error.max())


def _recurrent_minus_parallel_float32(attention, rng):
    encoder = make_encoder(attention)
    observations = jnp.asarray(rng.normal(size=(4, T, OBS)), jnp.float32)
    params = jax.jit(encoder.init)(jax.random.PRNGKey(2), observations)
    parallel = jax.jit(encoder.apply)(params, observations)
    recurrent = jax.jit(run_recurrent, static_argnums=0)(encoder, params, observations)
    assert parallel.dtype == recurrent.dtype == jnp.float32
    return np.abs(np.asarray(recurrent) - np.asarray(parallel))


def test_softmax_attention_matches_float64_numpy(rng):
    b, t, h, d = 2, 7, 2, 4
    q, k, v = (rng.normal(size=(b, t, h, d)) for _ in range(3))
    log_g = -rng.uniform(0, 0.5, size=(b, t, h))
    mask = np.arange(t)[None] >= np.array([[0], [3]])
    got = jax.jit(softmax_attention, static_argnums=5)(q, k, v, log_g, mask, 0.5)
    want = np.zeros((b, t, h, d))
    G = np.cumsum(log_g, axis=1)
    for bi in range(b):
        for hi in range(h):
            for i in range(t):
                js = [j for j in range(i + 1) if mask[bi, j]]
                if not js:
                    continue  # no valid key: zeros
                s = np.array([0.5 * q[bi, i, hi] @ k[bi, j, hi] + G[bi, i, hi] - G[bi, j, hi] for j in js])
                w = np.exp(s - s.max())
                want[bi, i, hi] = (w / w.sum()) @ v[bi, js, hi]
    np.testing.assert_allclose(got, want, atol=1e-12)  # float64 (x64 is on in this folder)


def test_power_and_softmax_have_equal_parameters():
    observations = jnp.zeros((1, 4, OBS), jnp.float32)
    shapes = [
        jax.tree.map(lambda x: x.shape, jax.eval_shape(make_encoder(a).init, jax.random.PRNGKey(0), observations))
        for a in ("power", "softmax")
    ]
    assert shapes[0] == shapes[1]


def test_sequence_torso_on_a_frame_stack_masks_leading_zero_frames(rng):
    """Any agent's frame stack [B, obs, L], zero-padded before the episode start, as a sequence."""
    encoder = make_encoder("power", num_layers=1)
    torso = SequenceTorso(encoder=encoder, observation_ndim=1)
    observations = jnp.asarray(rng.normal(size=(2, 6, OBS)), jnp.float32)
    stack = jnp.moveaxis(observations, 1, -1).at[1, :, :2].set(0.0)  # second: 2 padding frames
    params = jax.jit(torso.init)(jax.random.PRNGKey(0), stack)
    got = jax.jit(torso.apply)(params, stack)
    mask = jnp.asarray([[True] * 6, [False] * 2 + [True] * 4])
    want = jax.jit(encoder.apply)({"params": params["params"]["encoder"]}, observations, mask)[:, -1]
    np.testing.assert_allclose(got, want, **TOL32)  # the same float32 computation


def test_conv_torso_per_step_shapes():
    encoder = PowerAttentionEncoder(torso=MinAtarCNN(), num_layers=1, num_heads=2, head_dim=8)
    observations = jnp.zeros((2, 5, 10, 10, 4), jnp.uint8)
    params = jax.eval_shape(encoder.init, jax.random.PRNGKey(0), observations)
    assert jax.eval_shape(encoder.apply, params, observations).shape == (2, 5, 16)
    carry, features = jax.eval_shape(
        lambda p, x: encoder.apply(p, encoder.initial_carry(2), x, method=encoder.step), params, observations[:, 0]
    )
    assert features.shape == (2, 16)


def test_bad_arguments():
    observations = jnp.zeros((1, 4, OBS), jnp.float32)
    with pytest.raises(ValueError, match="attention must be one of"):
        jax.eval_shape(make_encoder("linear").init, jax.random.PRNGKey(0), observations)
    with pytest.raises(ValueError, match="mask shape"):
        jax.eval_shape(make_encoder().init, jax.random.PRNGKey(0), observations, jnp.ones((1, 3), bool))


def _acting_minus_training_over_draws(encoder, seeds, t, window, batch=3):
    """float32 |acting - training| per draw (params and observations from one seed), two ways,
    under one compilation for all draws:

      episode: training on the whole episode [batch, t] vs acting from the episode start;
      windows: the agent's case. Training reads the last step of the `window`-step history ending
        at step s, padded and masked before the episode start (accumbens/replay/sequence.py), vs
        acting at step s; over s < window.

    Returns (episode mean [n], episode max [n], windows mean [n], windows max [n])."""

    def one(seed):
        observations = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), 1), (batch, t, OBS))
        params = encoder.init(jax.random.PRNGKey(seed), observations)
        acting = run_recurrent(encoder, params, observations)
        episode = jnp.abs(acting - encoder.apply(params, observations))
        index = jnp.arange(window)[:, None] - (window - 1) + jnp.arange(window)[None, :]  # step at each slot
        mask = index >= 0
        histories = jnp.where(mask[..., None], observations[0][jnp.maximum(index, 0)], 0.0)
        windows = jnp.abs(acting[0, :window] - encoder.apply(params, histories, mask)[:, -1])
        return episode.mean(), episode.max(), windows.mean(), windows.max()

    return tuple(np.asarray(x) for x in jax.jit(jax.vmap(one))(jnp.asarray(seeds)))


@pytest.mark.parametrize(
    "settings,draws",
    [
        (dict(), 50),  # the recorded draw's shapes: the all-state acting form failed 4 of these 50
        (dict(head_dim=4, degree=4), 30),  # worse conditioned: it failed 10 of these 30
    ],
)
def test_acting_agrees_with_training_in_float32_over_random_draws(settings, draws):
    """float32 acting vs training on many random encoders and inputs, from the episode start and
    in the agent's padded replay windows (the parallel form starts its chunks at the episode
    start, as acting does). The known issue's bounds per draw; for degree 2 the worst error is
    ~1e-5 (we assert 1e-3)."""
    encoder = make_encoder("power", **settings)
    with jax.enable_x64(False):
        mean, worst, window_mean, window_worst = _acting_minus_training_over_draws(encoder, np.arange(draws), T, 10)
    for m, x in ((mean, worst), (window_mean, window_worst)):
        assert (m < 1e-4).all() and (x < 2e-2).all(), (m.max(), x.max())
    if settings.get("degree", 2) == 2:
        assert max(worst.max(), window_worst.max()) < 1e-3, (worst.max(), window_worst.max())
