"""Fixtures for the power-attention tests: float64 enabled only inside these tests."""
import jax
import pytest


def x64_context():
    """Context manager enabling float64 (jax.enable_x64 on new JAX, jax.experimental.enable_x64 on old)."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # pragma: no cover

    return enable_x64()


@pytest.fixture(autouse=True)
def _x64():
    with x64_context():
        yield


@pytest.fixture
def rng(request):
    import numpy as np

    # fresh inputs per test, reproducible per test name
    import zlib

    # crc32, not hash(): str hashes are salted per process, which made failures unreproducible
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
