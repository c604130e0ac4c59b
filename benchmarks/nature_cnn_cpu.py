"""Cost of the Nature CNN on this CPU under the installed jax: one greedy act, one batch-32 gradient.

    python benchmarks/nature_cnn_cpu.py                                   # accumbens' jax
    ~/.cache/accumbens/dopamine-venv/bin/python benchmarks/nature_cnn_cpu.py   # Dopamine's jax 0.6.2

Uses only jax, flax and numpy, so it runs in either environment. Each run prints one table row
and merges it (keyed by jax version) into `benchmarks/results/nature_cnn_cpu.json`. It explains
the Atari row of `benchmarks/throughput.py`: the DQN loop on Pong is bound by this gradient.
"""
import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "nature_cnn_cpu.json")


class NatureCNN(nn.Module):
    """The Nature DQN network (Mnih et al. 2015), written out so this file needs no accumbens."""

    @nn.compact
    def __call__(self, x):
        x = x.astype(jnp.float32) / 255.0
        x = nn.relu(nn.Conv(32, (8, 8), strides=(4, 4))(x))
        x = nn.relu(nn.Conv(64, (4, 4), strides=(2, 2))(x))
        x = nn.relu(nn.Conv(64, (3, 3), strides=(1, 1))(x))
        x = nn.relu(nn.Dense(512)(x.reshape(x.shape[:-3] + (-1,))))
        return nn.Dense(6)(x)


def median_ms(fn, calls: int, repeats: int = 5) -> float:
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - start) / calls * 1e3)
    return float(np.median(rounds))


def main() -> None:
    net = NatureCNN()
    frame = np.zeros((1, 84, 84, 4), np.uint8)
    batch = np.random.default_rng(0).integers(0, 255, (32, 84, 84, 4)).astype(np.uint8)
    params = net.init(jax.random.PRNGKey(0), frame)
    act = jax.jit(lambda p, x: jnp.argmax(net.apply(p, x)))
    grad = jax.jit(jax.grad(lambda p, x: jnp.mean(net.apply(p, x) ** 2)))
    int(act(params, frame))
    jax.block_until_ready(grad(params, batch))
    row = {
        "jax": jax.__version__,
        "act_ms": median_ms(lambda: int(act(params, frame)), 50),
        "grad32_ms": median_ms(lambda: jax.block_until_ready(grad(params, batch)), 5),
        "loadavg": os.getloadavg(),
    }
    print(f"{'jax':>8} {'act (ms)':>10} {'grad, batch 32 (ms)':>20}")
    print(f"{row['jax']:>8} {row['act_ms']:>10.2f} {row['grad32_ms']:>20.1f}")
    results = {}
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            results = json.load(f)
    results[row["jax"]] = row
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
