"""Fixtures shared across test modules."""
import gin
import numpy as np
import pytest

from accumbens import train
from accumbens.runners.runner import Runner


@pytest.fixture(autouse=True)
def _fresh_gin_config():
    """Every test starts from an empty gin configuration: bindings parsed by an earlier test in the
    same worker (e.g. create_optimizer.eps) must not leak into code that reads gin defaults."""
    gin.clear_config()
    yield


@pytest.fixture
def make_runner(tmp_path):
    """`make_runner(gin_file, bindings)`: a quiet host Runner in tmp_path from a packaged config."""

    def make(gin_file, bindings=()):
        train.parse_config([gin_file], list(bindings))
        return Runner(base_dir=str(tmp_path), tensorboard=False, progress_bar=False)

    return make


@pytest.fixture
def assert_learns():
    """`assert_learns(runner, target)`: runs iterations until the evaluation return reaches target.

    Fails, naming the best return reached, if `runner.num_iterations` iterations pass first.
    """

    def check(runner, target):
        best = -np.inf
        for iteration in range(runner.num_iterations):
            best = max(best, runner.run_iteration(iteration)["eval_return_mean"])
            if best >= target:
                return
        pytest.fail(f"best evaluation return {best:.1f} after {runner.num_iterations} iterations (target {target})")

    return check
