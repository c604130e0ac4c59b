"""The README's sweep: DQN on the five MinAtar games x 10 seeds with the compiled runner, one command, one plot.

    python benchmarks/compiled_sweep.py --games all --seeds 10                     # the device run (~8 min)
    python benchmarks/compiled_sweep.py --games breakout,asterix --seeds 2 --iterations 2 \
        --training_steps 200 --evaluation_steps 100 --capacity 1000 --min_replay_history 100 \
        --root /tmp/sweep --output /tmp/sweep/sweep.json                           # tiny CPU check

For each game, one `CompiledRunner` program trains all seeds (`jax.vmap` over seeds, sharded over
every visible GPU) with `dqn/minatar.gin` (the MinAtar paper's DQN, Young & Tian 2019: update
every step, batch 32, RMSProp 2.5e-4, replay 100k, target period 1000, epsilon 1 -> 0.1 over 100k
frames after 5000 random frames) on the gymnax port of the game (`minatar:<game>`: all 6
actions, sticky actions 0.1). Each game writes the standard run directories under one root,
`<root>/<game>/seed_<n>/metrics.{csv,jsonl}` plus `<root>/<game>/config.gin` and checkpoints, so
`python -m accumbens.plot <root>/*/seed_*` reads them too.

Budget: the paper trains 5M frames per run; the defaults here are a reduced budget
(`--iterations 8 --training_steps 20000`: 160k frames per seed) that fits ~8 minutes for all five
games on one H100 (compilation included; `MinAtarCNN.conv_impl = 'patches'`, the faster
convolution under vmap, is the default). `--deadline_s` bounds the whole command: every game gets
an equal share of the time left when it starts, and stops at an iteration boundary before its
share runs out (checkpointing first), so a slow game cannot starve the ones after it.
Resumable per game: the same command again skips finished games and continues a stopped one from
its checkpoint (`--root` must survive; give `--iterations` larger to extend a finished sweep).

Evaluation: greedy, on `--num_eval_envs` environments per seed for `evaluation_steps /
num_eval_envs` steps each; the default (5200 steps on 2 environments) lets Freeway's fixed
2501-step episodes finish (an episode still running at the end of a phase is not counted).

Plot: one panel per game, the mean over seeds of the training return (the paper's measure; or
`--metric eval_return_mean`) per iteration with a 95% percentile bootstrap band over seeds
(`accumbens.plot.load_curve` to read, `accumbens.analysis.bootstrap_ci` for the band).
Results: a table on stdout, `--output` (JSON) and the same name with `.png`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]  # don't shadow modules

from accumbens.atomic import atomic_write  # noqa: E402
RESULTS = os.path.join(HERE, "results", "compiled_sweep.json")
GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
METRICS = ("train_return_mean", "eval_return_mean")


def _games(spec: str) -> list[str]:
    if spec == "all":
        return list(GAMES)
    games = [g.strip().lower().replace("-", "_") for g in spec.split(",") if g.strip()]
    unknown = [g for g in games if g not in GAMES]
    if unknown or not games:
        raise SystemExit(f"unknown game(s) {unknown or spec!r}; valid: all or a comma-separated subset of {', '.join(GAMES)}")
    return games


def _bindings(args, game: str) -> list[str]:
    bindings = [f"create_environment.name = 'minatar:{game}'", f"MinAtarCNN.conv_impl = '{args.conv_impl}'"]
    if args.capacity is not None:
        bindings.append(f"ReplayBuffer.capacity = {args.capacity}")
    if args.min_replay_history is not None:
        bindings.append(f"DQNAgent.min_replay_history = {args.min_replay_history}")
    return bindings + list(args.bindings)


def _done_iterations(game_dir: str, seeds: int) -> int:
    """Iterations that every seed of a game has logged (0 if none)."""
    from accumbens.runners.logging import read_records

    counts = []
    for seed in range(seeds):
        try:
            counts.append(len(read_records(os.path.join(game_dir, f"seed_{seed}"))))
        except FileNotFoundError:
            return 0
    return min(counts)


def run_game(args, game: str, deadline_at: float) -> dict:
    """Trains (or resumes) all seeds of one game; returns its timing."""
    from accumbens import train
    from accumbens.runners.compiled import CompiledRunner
    from accumbens.runners.deadline import DeadlineReached, with_deadline

    game_dir = os.path.join(args.root, game)
    if _done_iterations(game_dir, args.seeds) >= args.iterations:
        return {"status": "already complete", "seconds": 0.0}
    train.parse_config(["dqn/minatar"], _bindings(args, game))
    start = time.time()
    runner = with_deadline(CompiledRunner, deadline_at)(
        game_dir,
        environment_name=f"minatar:{game}",
        num_iterations=args.iterations,
        training_steps=args.training_steps,
        evaluation_steps=args.evaluation_steps,
        seed=0,
        num_seeds=args.seeds,
        num_envs=1,
        num_eval_envs=args.num_eval_envs,
        checkpoint_every=args.checkpoint_every or args.iterations,
        checkpoints_to_keep=1,
        tensorboard=False,
    )
    status = "complete"
    try:
        runner.run_experiment()
    except DeadlineReached:
        status = "stopped at its deadline share"
    return {"status": status, "seconds": time.time() - start}


def summarise(args, game: str) -> dict:
    """Per-iteration mean and 95% bootstrap interval over seeds, per metric, from the run files."""
    from accumbens.analysis import bootstrap_ci
    from accumbens.plot import load_curve

    game_dir = os.path.join(args.root, game)
    count = _done_iterations(game_dir, args.seeds)
    out = {"game": game, "iterations_done": count, "seeds": args.seeds}
    if not count:
        return out
    for metric in METRICS:
        curves = [load_curve(os.path.join(game_dir, f"seed_{seed}"), metric) for seed in range(args.seeds)]
        steps = curves[0][0][:count]
        values = np.stack([y[:count] for _, y in curves])  # [S, I]
        rows = []
        for i in range(count):
            column = values[:, i][np.isfinite(values[:, i])]
            rows.append(list(bootstrap_ci(column)) if column.size else None)
        out["steps"] = steps.tolist()
        out[metric] = rows
        out[f"{metric}_per_seed"] = np.where(np.isfinite(values), values, None).tolist()
    from accumbens.runners.logging import read_records

    records = read_records(os.path.join(game_dir, "seed_0"))[:count]
    rates = [r["train_steps_per_second"] * args.seeds for r in records[1:] if r.get("train_steps_per_second")]
    out["train_steps_per_second_all_seeds"] = float(np.median(rates)) if rates else None
    out["first_iteration_seconds_incl_compile"] = records[0].get("train_seconds")
    return out


def plot(summaries: list[dict], output: str, metric: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    shown = [s for s in summaries if s.get("iterations_done")]
    if not shown:
        return
    columns = min(3, len(shown))
    rows = math.ceil(len(shown) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    for ax, s in zip(axes.flat, shown):
        points = [(x, *v) for x, v in zip(s["steps"], s[metric]) if v is not None]
        if points:
            x, mean, low, high = (np.array(v) for v in zip(*points))
            ax.plot(x, mean, marker=".", color="tab:blue")
            ax.fill_between(x, low, high, color="tab:blue", alpha=0.25)
        ax.set_title(f"{s['game']} ({s['seeds']} seeds)", fontsize=10)
        ax.set_xlabel("training frames per seed")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:g}k"))
        ax.set_ylabel(metric.replace("_mean", "").replace("_", " "))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)


def _cell(value) -> str:
    return "-" if not value else f"{value[0]:6.2f} [{value[1]:6.2f},{value[2]:6.2f}]"


def table(summaries: list[dict], runs: dict) -> str:
    header = (f"{'game':<15} {'iters':>5} {'frames/seed':>11} {'final train return':>24} {'final eval return':>24} "
              f"{'seconds':>8} {'steps/s (all seeds)':>19}  status")
    lines = [header, "-" * len(header)]
    for s in summaries:
        done = s.get("iterations_done", 0)
        final_train = s["train_return_mean"][-1] if done else None
        final_eval = s["eval_return_mean"][-1] if done else None
        frames = s["steps"][-1] if done else 0
        rate = s.get("train_steps_per_second_all_seeds")
        run = runs.get(s["game"], {})
        lines.append(
            f"{s['game']:<15} {done:>5} {frames:>11.0f} {_cell(final_train):>24} {_cell(final_eval):>24} "
            f"{run.get('seconds', float('nan')):>8.1f} {'-' if rate is None else f'{rate:,.0f}':>19}  {run.get('status', 'not run')}"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", default="all", help="'all' or a comma-separated subset of " + ",".join(GAMES))
    parser.add_argument("--seeds", type=int, default=10, help="seeds per game (0 .. seeds-1), one program per game")
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--training_steps", type=int, default=20_000, help="training frames per iteration and seed (paper: 5M in total)")
    parser.add_argument("--evaluation_steps", type=int, default=5_200, help="greedy evaluation steps per iteration and seed, over all eval envs")
    parser.add_argument("--num_eval_envs", type=int, default=2)
    parser.add_argument("--capacity", type=int, default=None, help="replay capacity per seed (default: dqn/minatar.gin's 100k)")
    parser.add_argument("--min_replay_history", type=int, default=None, help="default: dqn/minatar.gin's 5000")
    parser.add_argument("--conv_impl", default="patches", choices=("xla", "patches"))
    parser.add_argument("--bindings", nargs="*", default=[], help="extra gin bindings for every game")
    parser.add_argument("--checkpoint_every", type=int, default=0, help="iterations between checkpoints (0: only at the end or the deadline)")
    parser.add_argument("--metric", default="train_return_mean", choices=METRICS, help="what the plot shows")
    parser.add_argument("--deadline_s", type=float, default=450.0, help="wall-clock budget of the whole command")
    parser.add_argument("--root", default=os.path.join("runs", "minatar_dqn_sweep"), help="run directories, one per game")
    parser.add_argument("--output", default=RESULTS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    games = _games(args.games)
    if args.seeds < 1 or args.iterations < 1 or args.training_steps < 1 or args.evaluation_steps < 1:
        raise SystemExit("--seeds, --iterations, --training_steps and --evaluation_steps must be >= 1")
    args.root = os.path.abspath(args.root)
    started = time.time()
    deadline_at = started + args.deadline_s
    margin = 5.0  # kept for the plot and the report
    output = os.path.abspath(args.output)
    os.makedirs(os.path.dirname(output), exist_ok=True)

    import jax

    device = jax.devices()[0]
    payload = {
        "benchmark": "compiled_sweep",
        "case": "dqn/minatar.gin, CompiledRunner, gymnax MinAtar games",
        "settings": vars(args),
        "device": f"{device.platform} {getattr(device, 'device_kind', '')}",
        "device_count": len(jax.devices()),
        "jax": jax.__version__,
        "machine": platform.node(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "runs": {},
    }
    title = (f"DQN (MinAtar paper settings), compiled runner, {args.seeds} seeds per game, "
             f"{args.iterations} x {args.training_steps:,} frames\nmean over seeds and 95% bootstrap band")

    def report() -> list[dict]:
        summaries = [summarise(args, game) for game in games]
        payload["games"] = summaries
        payload["elapsed_s"] = time.time() - started
        atomic_write(output, lambda f: json.dump(payload, f, indent=1), text=True)
        plot(summaries, os.path.splitext(output)[0] + ".png", args.metric, title)
        return summaries

    for index, game in enumerate(games):
        left = deadline_at - margin - time.time()
        if left <= 0:
            payload["runs"][game] = {"status": "not started: deadline", "seconds": 0.0}
            continue
        share = left / (len(games) - index)
        print(f"== {game}: up to {share:.0f} s", flush=True)
        payload["runs"][game] = run_game(args, game, time.time() + share)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            report()  # partial results after every game
    summaries = report()
    print(f"DQN, MinAtar paper settings, compiled runner on {payload['device']} x{payload['device_count']}, {args.seeds} seeds per game; "
          "final iteration: mean [95% bootstrap interval] over seeds")
    print(table(summaries, payload["runs"]))
    print(f"run directories: {args.root}/<game>/seed_<n>; wrote {output} and {os.path.splitext(output)[0]}.png "
          f"({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
