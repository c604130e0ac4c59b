"""Discounted COP-TD vs the same agent without the correction, in the paper's off-policy setting, on MinAtar.

Gelada & Bellemare (AAAI 2019) evaluate discounted COP-TD where the target policy is greedy and the
data comes from a more exploratory behaviour policy. Here: `configs/cop_td/minatar.gin` (C51 value
learner with a ratio head; behaviour epsilon-greedy with epsilon decaying from 1 to
`--behaviour_epsilon`, target policy epsilon_eval = 0.001-greedy), trained twice per seed:

  cop_td       the value loss weighted by the learned ratio c(s) (COPTDAgent.ratio_weighting = True)
  uncorrected  the same agent, ratio head still trained, value loss unweighted (ratio_weighting = False)

Both run under the compiled runner (`--runner compiled`: whole loop under jit, all seeds in one
program, vmapped; GPU-friendly). Reported: greedy evaluation return per iteration, mean over seeds
with a 95% bootstrap confidence interval, and the final-iteration difference between the two.
Writes a table, `<output>.json` and `<output>.png`.

  CPU smoke test (minutes, numbers meaningless):
    python benchmarks/cop_td_offpolicy.py --tiny
  GPU (one H100; estimated 5 to 8 minutes, not yet measured):
    python benchmarks/cop_td_offpolicy.py --game breakout --seeds 32 --iterations 5 \
        --training_steps 40000 --evaluation_steps 4000 --num_eval_envs 8 --scan_unroll 4 --fresh
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time

import numpy as np

from accumbens.analysis import bootstrap_ci, bootstrap_difference_ci

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
VARIANTS = {"cop_td": True, "uncorrected": False}


def _finite(values) -> np.ndarray:
    """The seeds' values that are finite (a seed with no completed evaluation episode is NaN)."""
    values = np.asarray(values, np.float64)
    return values[np.isfinite(values)]


def finite_mean_ci(values) -> tuple[float, float, float]:
    """(mean, low, high) over the seeds with a finite value: 95% percentile bootstrap (NaN if none)."""
    values = _finite(values)
    return bootstrap_ci(values, resamples=10000) if values.size else (float("nan"),) * 3


def run_variant(args, name: str, weighting: bool) -> dict:
    """Trains one variant for all seeds under the compiled runner; returns per-seed records."""
    from accumbens import train
    from accumbens.runners.compiled import CompiledRunner
    from accumbens.runners.logging import read_records

    bindings = [
        f"create_environment.name = 'minatar:{args.game}'",
        f"Runner.num_iterations = {args.iterations}",
        f"Runner.training_steps = {args.training_steps}",
        f"Runner.evaluation_steps = {args.evaluation_steps}",
        f"COPTDAgent.ratio_weighting = {weighting}",
        f"COPTDAgent.epsilon_train = {args.behaviour_epsilon}",
        f"COPTDAgent.epsilon_decay_period = {args.epsilon_decay_period}",
        f"COPTDAgent.gamma_hat = {args.gamma_hat}",
        f"COPTDAgent.normalization_weight = {args.normalization_weight}",
    ]
    if args.tiny:
        bindings += ["COPTDAgent.min_replay_history = 100", "ReplayBuffer.capacity = 1000"]
    train.parse_config(["cop_td/minatar"], bindings)
    base_dir = os.path.join(args.work_dir, name)
    if args.fresh and os.path.isdir(base_dir):
        shutil.rmtree(base_dir)
    start = time.time()
    runner = CompiledRunner(
        base_dir,
        num_seeds=args.seeds,
        num_eval_envs=args.num_eval_envs,
        tensorboard=False,
        scan_unroll=args.scan_unroll,
        checkpoint_every=args.iterations,  # one checkpoint, at the end: each holds every seed's replay
    )
    runner.run_experiment()
    seconds = time.time() - start
    records = {seed: read_records(os.path.join(base_dir, f"seed_{seed}")) for seed in runner.seeds}
    return {"seconds": seconds, "bindings": bindings, "records": {str(k): v for k, v in records.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--game", default="breakout", help="a MinAtar game: asterix, breakout, freeway, seaquest, space_invaders")
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--training_steps", type=int, default=40000)
    parser.add_argument("--evaluation_steps", type=int, default=4000)
    parser.add_argument("--num_eval_envs", type=int, default=8)
    parser.add_argument("--behaviour_epsilon", type=float, default=0.5)
    parser.add_argument("--epsilon_decay_period", type=int, default=50000)
    parser.add_argument("--gamma_hat", type=float, default=0.99)
    parser.add_argument("--normalization_weight", type=float, default=0.0)
    parser.add_argument("--scan_unroll", type=int, default=1, help="4 on GPUs (see benchmarks/compiled_throughput.py)")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test: 2 seeds, 2 iterations of 400 steps")
    parser.add_argument("--fresh", action="store_true", help="delete earlier runs in work_dir first (else they resume)")
    parser.add_argument("--work_dir", default="/tmp/cop_td_offpolicy")
    parser.add_argument("--output", default=None, help="JSON path (default benchmarks/results/cop_td_offpolicy[_tiny].json)")
    args = parser.parse_args()
    if args.tiny:
        args.seeds, args.iterations, args.training_steps, args.evaluation_steps, args.num_eval_envs = 2, 2, 400, 100, 1
        args.epsilon_decay_period = 200
    if args.output is None:
        args.output = os.path.join(RESULTS, "cop_td_offpolicy_tiny.json" if args.tiny else f"cop_td_offpolicy_{args.game}.json")

    import jax

    device = jax.devices()[0]
    results = {}
    for name, weighting in VARIANTS.items():
        results[name] = run_variant(args, name, weighting)
        record = summarise(args, results, f"{device.platform} {device.device_kind}", jax.__version__)
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:  # after each variant, so a run cut short keeps what it did
            json.dump(record, f, indent=1)

    print(f"\nMinAtar {args.game}: greedy evaluation return, mean over {args.seeds} seeds [95% bootstrap CI]")
    print(f"behaviour epsilon 1 -> {args.behaviour_epsilon} over {args.epsilon_decay_period} steps; target epsilon_eval-greedy; "
          f"{args.iterations} x {args.training_steps} training steps; device: {record['device']}")
    curves = record["curves_mean_ci95"]
    print(f"{'iteration':>9} | " + " | ".join(f"{name:>26}" for name in VARIANTS))
    for i in range(args.iterations):
        cells = [f"{m:8.2f} [{lo:7.2f}, {hi:7.2f}]" for m, lo, hi in (curves[name][i] for name in VARIANTS)]
        print(f"{i:>9} | " + " | ".join(f"{c:>26}" for c in cells))
    difference = record["final_difference_mean_ci95"]
    print(f"final difference cop_td - uncorrected: {difference[0]:.2f} [{difference[1]:.2f}, {difference[2]:.2f}]")
    for name, result in results.items():
        print(f"{name}: {result['seconds']:.0f} s (including compilation)")
    plot(record, os.path.splitext(args.output)[0] + ".png")
    print(f"wrote {args.output} and its .png")


def summarise(args, results: dict, device: str, jax_version: str) -> dict:
    """The JSON record: per-iteration mean and CI per variant, final returns, their difference."""
    curves, final = {}, {}
    for name, result in results.items():
        per_seed = [[np.nan if r["eval_return_mean"] is None else r["eval_return_mean"] for r in recs] for recs in result["records"].values()]
        returns = np.array(per_seed, np.float64)  # [seeds, iterations]
        curves[name] = [finite_mean_ci(returns[:, i]) for i in range(returns.shape[1])]
        final[name] = returns[:, -1].tolist()
    difference = [float("nan")] * 3
    if len(final) == len(VARIANTS):
        a, b = _finite(final["cop_td"]), _finite(final["uncorrected"])
        if a.size and b.size:
            difference = list(bootstrap_difference_ci(a, b, resamples=10000)[:3])
    return {
        "benchmark": "cop_td_offpolicy",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.node(),
        "device": device,
        "jax": jax_version,
        "args": vars(args),
        "curves_mean_ci95": curves,
        "final_eval_returns": final,
        "final_difference_mean_ci95": difference,
        "runs": results,
    }


def plot(record: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args = record["args"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, color in zip(VARIANTS, ("C0", "C1")):
        curve = np.array(record["curves_mean_ci95"][name], np.float64)
        steps = (np.arange(len(curve)) + 1) * args["training_steps"]
        ax.plot(steps, curve[:, 0], "o-", color=color, label=name)
        ax.fill_between(steps, curve[:, 1], curve[:, 2], color=color, alpha=0.2)
    ax.set_xlabel("training steps per seed")
    ax.set_ylabel("greedy evaluation return")
    ax.set_title(f"MinAtar {args['game']}, behaviour eps -> {args['behaviour_epsilon']}, {args['seeds']} seeds (95% CI)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
