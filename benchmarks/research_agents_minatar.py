"""Hyperbolic, multi-horizon and DeepMDP agents against C51 on MinAtar (issue 14), compiled runner.

    python benchmarks/research_agents_minatar.py                          # full settings below
    python benchmarks/research_agents_minatar.py --games breakout --agents c51,hyperbolic \
        --seeds 2 --iterations 2 --training_steps 2000 --evaluation_steps 500   # smoke test

Every agent runs with the same C51 core and budget, so that the only difference is the agent's
own idea (a shared setting list, `COMMON`, overrides whatever the agents' gin files say about the
core):
  c51            hyperbolic/minatar.gin with one head (`num_gammas = 1`, gamma 0.99): exactly C51
  hyperbolic     10 heads, acting on the hyperbolic Q-values (k = 0.01, gamma_max = 0.99)
  multi_horizon  10 heads, acting on the largest gamma's head (extra heads as an auxiliary task)
  deepmdp        C51 plus the DeepMDP reward and latent-transition losses and gradient penalty
All seeds of one (game, agent) run in one compiled program (`CompiledRunner`, gymnax MinAtar with
all 6 actions). Results: per-iteration mean evaluation return per seed, written after each
(game, agent) to benchmarks/results/research_agents_minatar.json (a cut-short run keeps what it
finished and is resumed by re-running: finished pairs are skipped). The table shows the final
iteration's mean over seeds with a 95% bootstrap interval, and the figure the curves.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]  # don't shadow modules

from accumbens.atomic import atomic_write  # noqa: E402
RESULTS = os.path.join(HERE, "results", "research_agents_minatar.json")
GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")

# The C51 core every agent shares (Dopamine's MinAtar schedule with C51's switches).
COMMON = (
    "create_optimizer.learning_rate = 0.00025",
    "create_optimizer.eps = 0.0003125",
    "MinAtarCNN.conv_impl = 'patches'",  # same function as nn.Conv, faster for vmapped seeds
)
AGENTS = {
    "c51": (["hyperbolic/minatar"], ["HyperbolicAgent.num_gammas = 1"]),
    "hyperbolic": (["hyperbolic/minatar"], []),
    "multi_horizon": (["hyperbolic/minatar_multi_horizon"], []),
    "deepmdp": (["deepmdp/minatar"], ["DeepMDPAgent.base_agent = 'c51'", "DeepMDPAgent.update_horizon = 1"]),
}


def run_pair(game: str, agent: str, args) -> dict:
    from accumbens import train
    from accumbens.runners.compiled import CompiledRunner

    gin_files, bindings = AGENTS[agent]
    train.parse_config(gin_files, [*bindings, *COMMON, f"create_environment.name = 'minatar:{game}'", *args.bindings])
    with tempfile.TemporaryDirectory() as tmp:
        runner = CompiledRunner(
            tmp, num_seeds=args.seeds, num_iterations=args.iterations, training_steps=args.training_steps,
            evaluation_steps=args.evaluation_steps, tensorboard=False, num_eval_envs=args.eval_envs,
        )
        start = time.perf_counter()
        records = runner.run_experiment()
        seconds = time.perf_counter() - start
    eval_returns = [[r["eval_return_mean"] for r in iteration] for iteration in records]  # [I, S]
    train_returns = [[r["train_return_mean"] for r in iteration] for iteration in records]
    steps = [records[i][0]["total_train_steps"] for i in range(len(records))]
    return {"game": game, "agent": agent, "seeds": args.seeds, "steps": steps, "eval_return": eval_returns,
            "train_return": train_returns, "seconds": seconds}


def table(results: list[dict]) -> str:
    from accumbens.analysis import bootstrap_ci

    lines = [f"{'game':<15} {'agent':<14} {'seeds':>5} {'steps':>9} {'final eval return (95% CI)':>30} {'minutes':>8}"]
    for r in results:
        final = np.asarray(r["eval_return"][-1], np.float64)
        point, low, high = bootstrap_ci(final[np.isfinite(final)]) if np.isfinite(final).any() else (np.nan,) * 3
        lines.append(f"{r['game']:<15} {r['agent']:<14} {r['seeds']:>5} {r['steps'][-1]:>9} "
                     f"{point:>10.2f} [{low:7.2f}, {high:7.2f}] {r['seconds'] / 60:>8.1f}")
    return "\n".join(lines)


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    games = sorted({r["game"] for r in results})
    fig, axes = plt.subplots(1, len(games), figsize=(4 * len(games), 3.2), squeeze=False)
    for ax, game in zip(axes[0], games):
        for r in (r for r in results if r["game"] == game):
            y = np.asarray(r["eval_return"], np.float64)  # [I, S]
            x = np.asarray(r["steps"]) / 1e6
            mean = np.nanmean(y, axis=1)
            ax.plot(x, mean, label=r["agent"])
            if y.shape[1] > 1:
                sem = np.nanstd(y, axis=1, ddof=1) / np.sqrt(y.shape[1])
                ax.fill_between(x, mean - sem, mean + sem, alpha=0.2)
        ax.set_title(f"MinAtar {game}")
        ax.set_xlabel("agent steps (M)")
    axes[0][0].set_ylabel("evaluation return (mean ± s.e.m. over seeds)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", default=",".join(GAMES))
    parser.add_argument("--agents", default=",".join(AGENTS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--training_steps", type=int, default=100_000)
    parser.add_argument("--evaluation_steps", type=int, default=10_000)
    parser.add_argument("--eval_envs", type=int, default=8)
    parser.add_argument("--bindings", nargs="*", default=[])
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args(argv)
    unknown = set(args.agents.split(",")) - set(AGENTS)
    if unknown:
        parser.error(f"unknown agents {sorted(unknown)}; known: {sorted(AGENTS)}")

    if "freeway" in args.games.split(",") and args.evaluation_steps / args.eval_envs < 2500:
        print(f"[research_agents_minatar] warning: {args.evaluation_steps} evaluation steps over {args.eval_envs} "
              "environments is shorter than a Freeway episode (2500 steps): Freeway's evaluation returns will be "
              "NaN (no episode completes); its training returns are still reported", flush=True)

    import jax

    results, settings = [], {k: v for k, v in vars(args).items() if k not in ("games", "agents", "output")}
    if os.path.exists(args.output):
        with open(args.output) as f:
            previous = json.load(f)
        if previous.get("settings") == settings:
            results = previous["results"]
    done = {(r["game"], r["agent"]) for r in results}
    device = jax.devices()[0]
    for game in args.games.split(","):
        for agent in args.agents.split(","):
            if (game, agent) in done:
                continue
            print(f"[research_agents_minatar] {game} / {agent}: {args.seeds} seeds x {args.iterations} x {args.training_steps} steps", flush=True)
            results.append(run_pair(game, agent, args))
            payload = {"benchmark": "research_agents_minatar", "device": f"{device.platform} {device.device_kind}",
                       "settings": settings, "common_bindings": list(COMMON),
                       "agents": {k: {"gin_files": v[0], "bindings": v[1]} for k, v in AGENTS.items()},
                       "results": results}
            os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
            atomic_write(args.output, lambda f: json.dump(payload, f, indent=1), text=True)
            print(table(results[-1:]), flush=True)
    print(table(results))
    plot(results, os.path.splitext(args.output)[0] + ".png")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
