"""Pathworld check of hyperbolic discounting (Fedus et al. 2019): do the learned heads' Riemann
sums approach the true hyperbolic values, and does a single exponential discount fail to?

    python benchmarks/hyperbolic_pathworld.py            # full sweep (~15 min on a busy 2-core CPU)
    python benchmarks/hyperbolic_pathworld.py --quick    # two grids, few updates (a smoke test)

World: `accumbens.environments.pathworld` with its default paths, delays d = 1, 2, 4, 8, 16 and
rewards r = 1, 1.6, 2.6, 4, 6, and an exponential hazard prior of mean k = 0.5. Its true values at
the start state are r / (1 + k d) = 0.667, 0.8, 0.867, 0.8, 0.667 (the Monte Carlo column checks
the environment against this closed form).

Agent: the hyperbolic agent's own pure `update` (`accumbens.agents.hyperbolic.make_hyperbolic`)
with tabular C51 heads (one-hot observations, no hidden layer; 21 atoms on [0, 6.5]), trained on
every transition of the hazard-free world at once (what uniform replay of hazard-free experience
converges to), Adam (lr 0.05), a target sync every 5 updates, 1000 updates. Each head h learns
Q_h(start, p) = r_p gamma_h^d_p; the hyperbolic estimate is sum_h w_h Q_h (lower sum). For each
gamma_max and number of heads N the table gives the worst error over the paths of
  learned     the Riemann sum of the learned heads vs r / (1 + k d)
  truncation  the same sum over the exact head values vs r / (1 + k d): the grid's error alone
  learning    learned vs exact sum: the agent's error alone
N = 1 is the exponential agent with discount gamma_max. `best single gamma` is the smallest worst
error that any exponential discount r gamma^d reaches (a fine grid over gamma).

Results: benchmarks/results/hyperbolic_pathworld.json and .png.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]  # don't shadow modules

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from accumbens.agents import hyperbolic, networks  # noqa: E402
from accumbens.agents.dqn import create_optimizer  # noqa: E402
from accumbens.environments import pathworld  # noqa: E402

RESULTS = os.path.join(_HERE, "results")
K = 0.5
NUM_ATOMS, VMAX = 21, 6.5


def monte_carlo(k: float, episodes: int, seed: int = 0) -> dict:
    """Mean return of each path under the exponential hazard prior, with its standard error."""
    env = pathworld.PathworldEnv(hazard_prior="exponential", hazard_k=k)
    out = {"mean": [], "stderr": []}
    for path in range(env.action_space.n):
        returns = []
        for episode in range(episodes):
            env.reset(seed=seed + 100_000 * path + episode)
            total, done, action = 0.0, False, path
            while not done:
                _, reward, terminated, truncated, _ = env.step(action)
                total, done, action = total + reward, terminated or truncated, 0
            returns.append(total)
        returns = np.asarray(returns)
        out["mean"].append(float(returns.mean()))
        out["stderr"].append(float(returns.std() / np.sqrt(episodes)))
    return out


def fit_heads(gamma_max: float, num_gammas: int, k: float, updates: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """Trains tabular C51 heads on hazard-free Pathworld; returns (Q_h(start, p) [N, P], seconds)."""
    env = pathworld.PathworldEnv(hazard_prior="none")
    gammas = hyperbolic.head_gammas(gamma_max, num_gammas, k)
    weights = hyperbolic.riemann_weights(hyperbolic.integration_points(gamma_max, num_gammas, k))
    num_actions = env.action_space.n
    network = networks.RainbowNetwork(
        torso=networks.MLP(hidden_units=(), observation_ndim=1),
        num_actions=num_gammas * num_actions,
        num_atoms=NUM_ATOMS,
        vmax=VMAX,
        vmin=0.0,
    )
    agent = hyperbolic.make_hyperbolic(
        network, create_optimizer("adam", 0.05, eps=1e-8), gammas=gammas, weights=weights,
        target_update_period=5, update_period=1,
    )
    # The discount is gamma_max where the path goes on: one head (the exponential agent) uses it
    # as it is; several heads only read where it is 0 (see hyperbolic.head_rewards_and_discounts).
    batch = env.all_transitions(stack_size=1, gamma=gamma_max)
    state = agent.init(jax.random.PRNGKey(seed), batch.observation.shape[1:], num_actions)

    def step(state, i):
        state, metrics = agent.update(state.replace(env_steps=i), batch, jax.random.PRNGKey(0))
        return state, metrics["loss"]

    start = time.time()
    state, loss = jax.jit(lambda s: jax.lax.scan(step, s, jnp.arange(updates, dtype=jnp.int32)))(state)
    jax.block_until_ready(loss)
    seconds = time.time() - start
    observation = jnp.asarray(env.observation_of(0)[None, :, None])
    q = np.asarray(network.apply(state.params, observation).q_values, np.float64).reshape(num_gammas, num_actions)
    return q, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two grids, 300 updates, 500 Monte Carlo episodes")
    parser.add_argument("--updates", type=int, default=None, help="updates per grid (default 1000; quick: 300)")
    parser.add_argument("--output", default=os.path.join(RESULTS, "hyperbolic_pathworld"), help="path without extension")
    args = parser.parse_args()
    updates = args.updates or (300 if args.quick else 1000)
    grids = [(0.99, 1), (0.99, 20)] if args.quick else [
        (g, n) for g in (0.9, 0.99, 0.999) for n in (1, 5, 10, 20, 50)
    ] + [(0.999, 100)]
    delays = np.asarray(pathworld.DEFAULT_DELAYS, np.float64)
    rewards = np.asarray(pathworld.DEFAULT_REWARDS, np.float64)
    truth = pathworld.hyperbolic_values(delays, rewards, K)

    mc = monte_carlo(K, 500 if args.quick else 5000)
    print(f"Pathworld, delays {pathworld.DEFAULT_DELAYS}, rewards {pathworld.DEFAULT_REWARDS}, k = {K}")
    print("| path delay | r / (1 + k d) | Monte Carlo return (+- s.e.) |")
    print("|---|---|---|")
    for d, t, m, s in zip(delays, truth, mc["mean"], mc["stderr"]):
        print(f"| {int(d)} | {t:.3f} | {m:.3f} +- {s:.3f} |")

    gamma_grid = np.linspace(0.5, 1.0, 5001)
    single_errors = [np.max(np.abs(pathworld.exponential_values(delays, rewards, g) - truth)) for g in gamma_grid]
    best_gamma = float(gamma_grid[int(np.argmin(single_errors))])
    best_single = float(np.min(single_errors))

    rows = []
    print(f"\nworst error over the paths (k = {K}; {updates} updates per grid); best single gamma "
          f"{best_gamma:.3f} misses by {best_single:.3f}")
    print("| gamma_max | heads N | learned | truncation | learning | seconds |")
    print("|---|---|---|---|---|---|")
    for gamma_max, num_gammas in grids:
        q, seconds = fit_heads(gamma_max, num_gammas, K, updates)
        gammas = hyperbolic.head_gammas(gamma_max, num_gammas, K)
        weights = hyperbolic.riemann_weights(hyperbolic.integration_points(gamma_max, num_gammas, K))
        exact_heads = rewards * gammas[:, None] ** delays[None, :]
        learned, exact = weights @ q, weights @ exact_heads
        row = {
            "gamma_max": gamma_max,
            "num_gammas": num_gammas,
            "learned_values": learned.tolist(),
            "exact_riemann_values": exact.tolist(),
            "error_learned": float(np.max(np.abs(learned - truth))),
            "error_truncation": float(np.max(np.abs(exact - truth))),
            "error_learning": float(np.max(np.abs(learned - exact))),
            "head_error": float(np.max(np.abs(q - exact_heads))),
            "seconds": seconds,
        }
        rows.append(row)
        print(f"| {gamma_max} | {num_gammas} | {row['error_learned']:.3f} | {row['error_truncation']:.3f} | "
              f"{row['error_learning']:.3f} | {seconds:.1f} |", flush=True)

    result = {
        "benchmark": "hyperbolic_pathworld",
        "k": K,
        "delays": delays.tolist(),
        "rewards": rewards.tolist(),
        "true_values": truth.tolist(),
        "monte_carlo": mc,
        "best_single_gamma": best_gamma,
        "best_single_gamma_error": best_single,
        "best_single_gamma_values": pathworld.exponential_values(delays, rewards, best_gamma).tolist(),
        "updates": updates,
        "agent": {"num_atoms": NUM_ATOMS, "vmax": VMAX, "optimizer": "adam lr 0.05", "target_update_period": 5,
                  "integral_estimate": "lower", "network": "tabular (one-hot, no hidden layer)"},
        "rows": rows,
        "machine": {"platform": platform.platform(), "jax": jax.__version__, "load_average": os.getloadavg()},
    }
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output + ".json", "w") as f:
        json.dump(result, f, indent=2)
    plot(result, args.output + ".png")
    print(f"\nwrote {args.output}.json and .png")


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    delays, truth = np.asarray(result["delays"]), np.asarray(result["true_values"])
    rows = result["rows"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.plot(delays, truth, "k-o", lw=2, label="true hyperbolic value r/(1+kd)")
    left.errorbar(delays, result["monte_carlo"]["mean"], yerr=2 * np.asarray(result["monte_carlo"]["stderr"]),
                  fmt="none", ecolor="grey", capsize=3, label="Monte Carlo return under the hazard prior (2 s.e.)")
    best = max((r for r in rows if r["num_gammas"] > 1), key=lambda r: (r["num_gammas"], -r["error_learned"]))
    left.plot(delays, best["learned_values"], "C0-s",
              label=f"learned Riemann sum, N={best['num_gammas']}, gamma_max={best['gamma_max']}")
    for r in rows:
        if r["num_gammas"] == 1:
            left.plot(delays, r["learned_values"], "--", marker="x", label=f"learned exponential, gamma={r['gamma_max']}")
    left.plot(delays, result["best_single_gamma_values"], ":", color="C3",
              label=f"best single gamma ({result['best_single_gamma']:.3f}), exact")
    left.set_xscale("log", base=2)
    left.set_xlabel("path delay d")
    left.set_ylabel("value of the path at the start state")
    left.set_title(f"Pathworld values, k = {result['k']}")
    left.legend(fontsize=7)

    for i, gamma_max in enumerate(sorted({r["gamma_max"] for r in rows})):
        sel = sorted((r for r in rows if r["gamma_max"] == gamma_max), key=lambda r: r["num_gammas"])
        n = [r["num_gammas"] for r in sel]
        right.plot(n, [r["error_learned"] for r in sel], "-o", color=f"C{i}", label=f"learned, gamma_max={gamma_max}")
        right.plot(n, [r["error_truncation"] for r in sel], "--", color=f"C{i}", alpha=0.7,
                   label=f"grid truncation alone, gamma_max={gamma_max}")
    right.axhline(result["best_single_gamma_error"], color="C3", ls=":", label="best single gamma (exact)")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("heads N (N = 1: one exponential discount gamma_max)")
    right.set_ylabel("worst |estimate - r/(1+kd)| over the paths")
    right.set_title("error against the true hyperbolic values")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
