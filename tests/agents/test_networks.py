"""The network library: PatchConv computes nn.Conv's function with nn.Conv's parameters."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn

from accumbens.agents import networks


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
@pytest.mark.parametrize("kernel_size", [(3, 3), (2, 4)])
def test_patch_conv_equals_flax_conv(padding, kernel_size):
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 10, 9, 6))
    conv = nn.Conv(7, kernel_size, padding=padding)
    params = conv.init(jax.random.PRNGKey(1), x)
    patch = networks.PatchConv(7, kernel_size, padding=padding, kernel_init=nn.initializers.lecun_normal())
    patch_params = patch.init(jax.random.PRNGKey(1), x)
    # Same parameter tree and the same initial values.
    chex_shapes = jax.tree.map(jnp.shape, params)
    assert chex_shapes == jax.tree.map(jnp.shape, patch_params)
    np.testing.assert_array_equal(params["params"]["kernel"], patch_params["params"]["kernel"])
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
    expected = np.asarray(conv.apply(params, x), np.float64)
    np.testing.assert_allclose(patch.apply(params, x), expected, rtol=1e-5, atol=1e-5)


def test_minatar_cnn_conv_impls_share_parameters_and_outputs():
    x = jax.random.bernoulli(jax.random.PRNGKey(0), 0.3, (4, 10, 10, 4, 1))
    xla = networks.MinAtarCNN(conv_impl="xla")
    patches = networks.MinAtarCNN(conv_impl="patches")
    params = xla.init(jax.random.PRNGKey(3), x)
    np.testing.assert_allclose(patches.apply(params, x), xla.apply(params, x), rtol=1e-5, atol=1e-5)
    # Under vmap over parameter sets (seeds), as the compiled runner runs them.
    stacked = jax.vmap(lambda k: xla.init(k, x))(jax.random.split(jax.random.PRNGKey(4), 3))
    np.testing.assert_allclose(
        jax.vmap(patches.apply, (0, None))(stacked, x), jax.vmap(xla.apply, (0, None))(stacked, x), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="conv_impl"):
        networks.MinAtarCNN(conv_impl="fft").init(jax.random.PRNGKey(0), x)
