"""The tabular sweeps of Buckman, Gelada & Bellemare (2020), Fig. 2: pessimism on random gridworlds.

Two sweeps, as in the paper's code (jbuckman/tiopifdpo, tabular/experiment_performance_comparison.py
and tabular/experiment_various_explorations.py):
  size:    data from epsilon-greedy(optimal), epsilon = 0.5, states from that policy's stationary
           distribution; dataset sizes log-spaced up to 200,000 transitions (25 points; the datasets
           of one MDP are nested prefixes of one stream, as in the paper);
  epsilon: 2,000 transitions, states uniform, epsilon in linspace(0, 1, 25); a fresh dataset per point.
Algorithms (accumbens.agents.tabular_fdpo): naive, imitation, uncertainty-aware (alpha = 1) and
proximal (alpha = 1) FDPO; references: uniform random and optimal. The score is the true expected
discounted return from the uniform start distribution, computed exactly.

Each seed draws its own `--mdps` random 8x8 torus gridworlds (Beta(1, 3) reward means, slip 0.2,
gamma 0.99). A seed's score at a point is the mean over its MDPs; the table and plot give the mean
over seeds with a 95% t-interval across the seed means.

    python benchmarks/fdpo_gridworld.py                  # 10 seeds x 100 MDPs per point (minutes)
    python benchmarks/fdpo_gridworld.py --seeds 2 --mdps 5 --points 4 --out /tmp/x   # smoke run
Writes fdpo_gridworld.json and fdpo_gridworld.png under benchmarks/results/ (or --out).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from scipy import stats

from accumbens.agents import tabular_fdpo as fdpo

ALGORITHMS = ("random", "optimal", "imitation", "naive", "uncertainty_aware", "proximal")
LABELS = {
    "random": "uniform random",
    "optimal": "optimal",
    "imitation": "imitation",
    "naive": "naive FDPO",
    "uncertainty_aware": "UA pessimistic FDPO",
    "proximal": "proximal pessimistic FDPO",
}
STYLES = {
    "random": dict(color="0.5", linestyle="--"),
    "optimal": dict(color="k", linestyle="--"),
    "imitation": dict(color="tab:green"),
    "naive": dict(color="tab:red"),
    "uncertainty_aware": dict(color="tab:blue"),
    "proximal": dict(color="tab:purple"),
}


def log_spaced_sizes(points: int, largest: int) -> list[int]:
    """The paper's `exponential_interpolate`: distinct ints of exp(log(largest) * k / points)."""
    return sorted({int(x) for x in np.exp(np.log(largest) * (np.arange(points) + 1) / points)})


def score_all(
    rng: np.random.Generator,
    mdp: fdpo.TabularMDP,
    dataset: fdpo.TabularDataset,
    references: dict,
) -> dict:
    """Mean (over the batch of MDPs) true return of each algorithm's policy on `dataset`."""
    unvisited = rng.uniform(0.0, 1.0, dataset.counts.shape)  # the paper's random fill-in reward
    policies = {
        "imitation": fdpo.imitation(dataset),
        "naive": fdpo.naive_fdpo(dataset, mdp.gamma, unvisited),
        "uncertainty_aware": fdpo.uncertainty_aware_fdpo(dataset, mdp.gamma, unvisited, fdpo.UNCERTAINTY_ALPHA),
        "proximal": fdpo.proximal_fdpo(dataset, mdp.gamma, unvisited, fdpo.PROXIMAL_ALPHA),
    }
    scores = {name: float(np.mean(mdp.returns(policy))) for name, policy in policies.items()}
    scores.update(references)
    return scores


def run_seed(seed: int, num_mdps: int, sizes: list[int], epsilons: np.ndarray, size_epsilon: float, eps_size: int):
    """Both sweeps for one seed: {'size': [scores per size], 'epsilon': [scores per epsilon]}."""
    rng = np.random.default_rng(seed)
    mdp = fdpo.random_gridworlds(rng, num_mdps)
    optimal, _ = fdpo.policy_iteration(mdp.rewards, mdp.transitions, mdp.gamma)
    uniform = np.full(optimal.shape, 1.0 / mdp.num_actions)
    references = {"random": float(np.mean(mdp.returns(uniform))), "optimal": float(np.mean(mdp.returns(optimal)))}

    size_scores = []
    behaviour = fdpo.epsilon_greedy(optimal, size_epsilon)
    stationary = fdpo.stationary_distribution(mdp.transitions, behaviour)
    dataset, collected = None, 0
    for size in sizes:
        fresh = fdpo.collect_dataset(rng, mdp, behaviour, size - collected, stationary)
        dataset = fresh if dataset is None else dataset + fresh
        collected = size
        size_scores.append(score_all(rng, mdp, dataset, references))

    eps_scores = []
    for epsilon in epsilons:
        behaviour = fdpo.epsilon_greedy(optimal, float(epsilon))
        dataset = fdpo.collect_dataset(rng, mdp, behaviour, eps_size, mdp.initial)
        eps_scores.append(score_all(rng, mdp, dataset, references))
    return {"size": size_scores, "epsilon": eps_scores}


def summarise(per_seed: list[list[dict]]) -> dict:
    """{algorithm: {'mean': [...], 'ci95': [...], 'per_seed': [[...]]}} over the points of a sweep."""
    out = {}
    num_seeds = len(per_seed)
    t = stats.t.ppf(0.975, num_seeds - 1) if num_seeds > 1 else float("nan")
    for name in ALGORITHMS:
        values = np.array([[point[name] for point in seed] for seed in per_seed])  # [seeds, points]
        half = t * values.std(0, ddof=1) / np.sqrt(num_seeds) if num_seeds > 1 else np.full(values.shape[1], np.nan)
        out[name] = {"mean": values.mean(0).tolist(), "ci95": half.tolist(), "per_seed": values.tolist()}
    return out


def print_table(title: str, xs, key: str, summary: dict) -> None:
    print(f"\n{title}")
    header = f"{key:>10} " + " ".join(f"{name[:13]:>15}" for name in ALGORITHMS)
    print(header)
    for i, x in enumerate(xs):
        row = f"{x:>10.3g} " + " ".join(
            f"{summary[name]['mean'][i]:>8.2f}±{summary[name]['ci95'][i]:<6.2f}" for name in ALGORITHMS
        )
        print(row)


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    panels = [
        ("size", result["sizes"], "dataset size (transitions)", f"data from ε-greedy(optimal), ε = {result['size_epsilon']}"),
        ("epsilon", result["epsilons"], "ε of the ε-greedy(optimal) behaviour", f"{result['epsilon_sweep_size']} transitions"),
    ]
    for ax, (sweep, xs, xlabel, title) in zip(axes, panels):
        for name in ALGORITHMS:
            mean = np.array(result[sweep][name]["mean"])
            ci = np.array(result[sweep][name]["ci95"])
            ax.plot(xs, mean, label=LABELS[name], **STYLES[name])
            ax.fill_between(xs, mean - ci, mean + ci, alpha=0.2, color=STYLES[name]["color"])
        if sweep == "size":
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("true return of the learned policy")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"Tabular FDPO on random 8x8 torus gridworlds ({result['num_seeds']} seeds x {result['mdps_per_seed']} MDPs; "
        "95% CI over seeds)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--mdps", type=int, default=100, help="random MDPs per seed (per point)")
    parser.add_argument("--points", type=int, default=25, help="points per sweep (the paper's 25)")
    parser.add_argument("--largest", type=int, default=200_000, help="largest dataset of the size sweep")
    parser.add_argument("--size-epsilon", type=float, default=0.5)
    parser.add_argument("--eps-size", type=int, default=2000)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()

    sizes = log_spaced_sizes(args.points, args.largest)
    epsilons = np.linspace(0.0, 1.0, args.points)
    start = time.time()
    runs = []
    for seed in range(args.seeds):
        runs.append(run_seed(seed, args.mdps, sizes, epsilons, args.size_epsilon, args.eps_size))
        print(f"seed {seed + 1}/{args.seeds} done, {time.time() - start:.0f} s", flush=True)
    result = {
        "paper": "Buckman, Gelada, Bellemare 2020, arXiv:2009.06799, Fig. 2 (tabular)",
        "num_seeds": args.seeds,
        "mdps_per_seed": args.mdps,
        "size_epsilon": args.size_epsilon,
        "epsilon_sweep_size": args.eps_size,
        "alpha_uncertainty": fdpo.UNCERTAINTY_ALPHA,
        "alpha_proximal": fdpo.PROXIMAL_ALPHA,
        "sizes": sizes,
        "epsilons": epsilons.tolist(),
        "size": summarise([run["size"] for run in runs]),
        "epsilon": summarise([run["epsilon"] for run in runs]),
        "seconds": time.time() - start,
    }
    print_table("Dataset-size sweep (ε = %.2g)" % args.size_epsilon, sizes, "size", result["size"])
    print_table("ε sweep (%d transitions)" % args.eps_size, epsilons, "epsilon", result["epsilon"])
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "fdpo_gridworld.json"), "w") as f:
        json.dump(result, f, indent=1)
    plot(result, os.path.join(args.out, "fdpo_gridworld.png"))
    print(f"\nwrote {args.out}/fdpo_gridworld.json and .png ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
