"""Tabular discounted COP-TD: the sample-based learner against the closed form, and the gamma-hat -> 1 limit.

Two measurements on random MDPs (`tabular_cop_td.random_problem`: Dirichlet(1) transitions, a
near-greedy target policy (epsilon 0.1 around a random deterministic policy) and a random
behaviour policy):

1. Fixed-point error. For each gamma-hat, the sample-based learner (`learn_ratio`: trajectories of
   the behaviour policy, minibatch tabular TD with the discounted COP-TD target, Polyak averaging)
   is run from c = 1 with and without the soft normalisation penalty; the error is
   max_s |c_learned(s) - c_exact(s)|, c_exact = (1 - g)(I - g P_pi^T)^{-1} d_mu / d_mu.
2. The limit. max_s |c_exact,g(s) - d_pi(s)/d_mu(s)| for g = 1 - 10^-k (both sides exact), and
   the sample-based learner's distance to d_pi/d_mu at g = 0.999.

Prints a table, writes benchmarks/results/cop_td_tabular.json and cop_td_tabular.png.

    python benchmarks/cop_td_tabular.py                 # 10 MDPs, 8M transitions per run: about 5 minutes on one core
    python benchmarks/cop_td_tabular.py --num_mdps 3    # quicker
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from accumbens.agents import tabular_cop_td as tab

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
GAMMAS = (0.5, 0.8, 0.9, 0.95, 0.99)
BUDGETS = ((250, 1000), (1000, 1000), (4000, 2000))  # (iterations, chains): error against transitions at gamma_hat 0.99
LIMIT_EXPONENTS = (1, 2, 3, 4, 5, 6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_mdps", type=int, default=10)
    parser.add_argument("--num_states", type=int, default=6)
    parser.add_argument("--num_actions", type=int, default=3)
    parser.add_argument("--num_iterations", type=int, default=4000)
    parser.add_argument("--num_chains", type=int, default=2000)
    parser.add_argument("--output", default=os.path.join(RESULTS, "cop_td_tabular.json"))
    args = parser.parse_args()

    start = time.time()
    problems = [
        tab.random_problem(np.random.default_rng(seed), args.num_states, args.num_actions, behaviour="random")
        for seed in range(args.num_mdps)
    ]
    learner = dict(num_iterations=args.num_iterations, num_chains=args.num_chains)
    fixed_point = {"with_penalty": {}, "without_penalty": {}}
    for g in GAMMAS:
        for name, weight in (("with_penalty", 1.0), ("without_penalty", 0.0)):
            errors = []
            for seed, problem in enumerate(problems):
                result = tab.learn_ratio(problem, g, np.random.default_rng(1000 + seed), normalization_weight=weight, **learner)
                errors.append(float(np.max(np.abs(result.ratio - problem.fixed_point(g)))))
            fixed_point[name][str(g)] = errors
    limit = {}
    for k in LIMIT_EXPONENTS:
        g = 1.0 - 10.0**-k
        limit[str(k)] = [float(np.max(np.abs(p.fixed_point(g) - p.true_ratio))) for p in problems]
    sample_limit = []
    for seed, problem in enumerate(problems):
        result = tab.learn_ratio(problem, 0.999, np.random.default_rng(2000 + seed), normalization_weight=1.0, **learner)
        sample_limit.append(float(np.max(np.abs(result.ratio - problem.true_ratio))))
    shift = [float(np.max(np.abs(p.true_ratio - 1.0))) for p in problems]
    budgets = {}
    for iterations, chains in BUDGETS:
        if (iterations, chains) == (args.num_iterations, args.num_chains):
            budgets[str(iterations * chains)] = fixed_point["with_penalty"]["0.99"]
            continue
        budgets[str(iterations * chains)] = [
            float(np.max(np.abs(tab.learn_ratio(p, 0.99, np.random.default_rng(3000 + seed), num_iterations=iterations, num_chains=chains).ratio - p.fixed_point(0.99))))
            for seed, p in enumerate(problems)
        ]

    print(f"\nSample-based discounted COP-TD vs the closed form: max_s |c - c*| over {args.num_mdps} random MDPs "
          f"({args.num_states} states, {args.num_actions} actions, {args.num_iterations * args.num_chains:,} transitions each)")
    print(f"{'gamma_hat':>10} | {'penalty 1: median':>17} {'max':>8} | {'no penalty: median':>18} {'max':>8}")
    for g in GAMMAS:
        a, b = fixed_point["with_penalty"][str(g)], fixed_point["without_penalty"][str(g)]
        print(f"{g:>10} | {np.median(a):>17.4f} {np.max(a):>8.4f} | {np.median(b):>18.4f} {np.max(b):>8.4f}")
    print("\nError against the number of transitions (gamma_hat 0.99, penalty 1)")
    for n, errors in budgets.items():
        print(f"{int(n):>14,} | median {np.median(errors):.4f} max {np.max(errors):.4f}")
    print(f"\nClosed form vs d_pi/d_mu (covariate shift max_s |d_pi/d_mu - 1|: median {np.median(shift):.3f})")
    print(f"{'1 - gamma_hat':>14} | {'median':>10} {'max':>10}")
    for k in LIMIT_EXPONENTS:
        print(f"{10.0**-k:>14.0e} | {np.median(limit[str(k)]):>10.2e} {np.max(limit[str(k)]):>10.2e}")
    print(f"sample-based learner at gamma_hat = 0.999 vs d_pi/d_mu: median {np.median(sample_limit):.4f}, max {np.max(sample_limit):.4f}")

    record = {
        "benchmark": "cop_td_tabular",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.node(),
        "seconds": time.time() - start,
        "args": vars(args),
        "gammas": list(GAMMAS),
        "fixed_point_error": fixed_point,
        "limit_error_by_exponent": limit,
        "sample_learner_error_to_true_ratio_at_0.999": sample_limit,
        "covariate_shift_max_abs": shift,
        "error_by_transitions_at_0.99": budgets,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(record, f, indent=1)
    plot(record, os.path.splitext(args.output)[0] + ".png")
    print(f"\nwrote {args.output} and its .png ({record['seconds']:.0f} s)")


def plot(record: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    gammas = record["gammas"]
    for name, label, color in (("with_penalty", "soft normalisation, weight 1", "C0"), ("without_penalty", "no penalty", "C1")):
        errors = [record["fixed_point_error"][name][str(g)] for g in gammas]
        x = np.arange(len(gammas))
        left.plot(x, [np.median(e) for e in errors], "o-", color=color, label=f"{label} (median)")
        left.fill_between(x, [np.min(e) for e in errors], [np.max(e) for e in errors], color=color, alpha=0.2)
    left.axhline(1e-2, color="k", ls="--", lw=0.8, label="1e-2")
    left.set_xticks(np.arange(len(gammas)), [str(g) for g in gammas])
    left.set_yscale("log")
    left.set_xlabel("gamma_hat")
    left.set_ylabel("max_s |c_learned - c_closed form|")
    left.set_title("sample-based discounted COP-TD vs closed form")
    left.legend(fontsize=8)
    exps = sorted(int(k) for k in record["limit_error_by_exponent"])
    xs = [10.0**-k for k in exps]
    errs = [record["limit_error_by_exponent"][str(k)] for k in exps]
    right.loglog(xs, [np.median(e) for e in errs], "o-", label="closed form (median)")
    right.fill_between(xs, [np.min(e) for e in errs], [np.max(e) for e in errs], alpha=0.2)
    sample = record["sample_learner_error_to_true_ratio_at_0.999"]
    right.errorbar([1e-3], [np.median(sample)], yerr=[[np.median(sample) - np.min(sample)], [np.max(sample) - np.median(sample)]],
                   fmt="s", color="C3", label="sample-based, gamma_hat 0.999")
    right.invert_xaxis()
    right.set_xlabel("1 - gamma_hat")
    right.set_ylabel("max_s |c_gamma_hat - d_pi / d_mu|")
    right.set_title("approach to d_pi / d_mu as gamma_hat -> 1")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
