"""Deep FDPO on MinAtar: naive, uncertainty-aware, proximal and imitation on fixed datasets.

Buckman, Gelada & Bellemare (2020), Sec. 6, on the paper's four MinAtar games (Asterix, Breakout,
Freeway, SpaceInvaders), with the gin configs in accumbens/configs/pessimistic/ and the offline
runner. Each (game, algorithm, seed) is one `python -m accumbens.train` process in
`<runs>/<game>/<dataset>/<algorithm>/seed_<k>`; a finished run is skipped and an interrupted one
resumes, so the sweep can be spread over several commands. The score of a run is the mean online
evaluation return of its last `--final_iterations` iterations; the table gives, per game and
algorithm, the mean over seeds with a 95% t-interval across seeds, next to the behaviour policy's
own mean episode return in the dataset (complete episodes).

Datasets come from the offline helper's build command (`python -m accumbens.build_datasets`,
epsilon-greedy rollouts of a partly trained DQN); `--build` runs it for missing games first
(see `build_command`).

    # tiny CPU check (minutes): tiny datasets, 2 iterations of 100 updates, batch 32
    python benchmarks/offline_minatar.py --tiny --runs /tmp/fdpo_tiny --datasets /tmp/fdpo_tiny/data --build
    # the GPU sweep (4 games x 4 algorithms x 3 seeds)
    python benchmarks/offline_minatar.py --build --workers 8
Writes offline_minatar.json and offline_minatar.png under benchmarks/results/ (or --out).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time

import numpy as np

GAMES = ("asterix", "breakout", "freeway", "space_invaders")
ALGORITHMS = ("naive", "uncertainty", "proximal", "imitation")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_command(game: str, args: argparse.Namespace) -> list[str]:
    """`python -m accumbens.build_datasets` for one game: trains the behaviour DQN for
    `--train_frames` steps, then writes <datasets>/<game>/eps_<e> for each of `--build_epsilons`."""
    return [
        sys.executable, "-m", "accumbens.build_datasets",
        "--output_dir", args.datasets,
        "--games", game,
        "--epsilons", *[f"{e:g}" for e in args.build_epsilons],
        "--num_steps", str(args.dataset_steps),
        "--train_frames", str(args.train_frames),
        "--seed", "0",
        "--no-progress_bar",
        *(["--random"] if any(split_spec(spec)[0] == "random" for spec in args.dataset) else []),
        *(["--gin_bindings", *args.build_bindings] if args.build_bindings else []),
    ]


INTERRUPTED = -999  # return code of a job stopped at --deadline_s (it resumes on the next call)
_DEADLINE = [float("inf")]  # wall-clock time (time.time()) after which jobs are stopped


def call_until_deadline(argv: list[str], log_path: str) -> int:
    """Runs argv with output to log_path; stops it (SIGTERM, then SIGKILL) at the deadline.

    Returns its exit code, or INTERRUPTED. Jobs write checkpoints per iteration, so a stopped
    one resumes from its last complete iteration on the next call of this script."""
    if time.time() >= _DEADLINE[0]:
        return INTERRUPTED
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")  # several processes share one GPU
    with open(log_path, "a") as log:
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        while True:
            try:
                return process.wait(timeout=max(0.1, min(5.0, _DEADLINE[0] - time.time())))
            except subprocess.TimeoutExpired:
                if time.time() >= _DEADLINE[0]:
                    process.terminate()
                    try:
                        process.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
                    return INTERRUPTED


def build(game: str, args: argparse.Namespace) -> tuple[str, float, int]:
    """Builds a game's datasets unless all of them exist (the build command itself resumes)."""
    wanted = [dataset_dir(args.datasets, game, name) for name in args.dataset]
    if all(os.path.exists(os.path.join(d, "manifest.json")) for d in wanted):
        return game, 0.0, 0
    os.makedirs(os.path.join(args.datasets, game), exist_ok=True)
    start = time.time()
    code = call_until_deadline(build_command(game, args), os.path.join(args.datasets, game, "build.log"))
    return game, time.time() - start, code


def split_spec(spec: str) -> tuple[str, int | None]:
    """'eps_0.1' -> ('eps_0.1', None); 'eps_0.1:10000' -> ('eps_0.1', 10000): the first 10,000 steps."""
    name, _, size = spec.partition(":")
    return name, (int(size) if size else None)


def dataset_dir(datasets: str, game: str, spec: str) -> str:
    return os.path.join(datasets, game, split_spec(spec)[0])


def run_command(game: str, dataset: str, algorithm: str, seed: int, args: argparse.Namespace) -> tuple[str, list[str]]:
    """(base_dir, argv) of one offline run."""
    name, max_steps = split_spec(dataset)
    folder = name if max_steps is None else f"{name}_first{max_steps}"
    base_dir = os.path.join(args.runs, game, folder, algorithm, f"seed_{seed}")
    bindings = [
        f"create_environment.name = 'minatar:{game}'",
        f"OfflineRunner.dataset_dir = '{dataset_dir(args.datasets, game, dataset)}'",
        f"OfflineRunner.num_iterations = {args.iterations}",
        f"OfflineRunner.training_steps = {args.training_steps}",
        f"OfflineRunner.evaluation_steps = {args.evaluation_steps}",
        f"OfflineRunner.seed = {seed}",
        "OfflineRunner.progress_bar = False",
        "OfflineRunner.tensorboard = False",
        f"OfflineRunner.updates_per_call = {args.updates_per_call}",
        f"PessimisticAgent.batch_size = {args.batch_size}",
        f"PessimisticAgent.target_update_period = {args.target_update_period}",
        *([f"FixedReplayBuffer.max_steps = {max_steps}"] if max_steps is not None else []),
    ]
    argv = [
        sys.executable, "-m", "accumbens.train",
        "--base_dir", base_dir,
        "--gin_files", f"pessimistic/{algorithm}_minatar",
        "--gin_bindings", *bindings,
    ]
    return base_dir, argv


def read_records(base_dir: str) -> list[dict]:
    path = os.path.join(base_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def execute(job: tuple[str, list[str]], iterations: int) -> tuple[str, float, int]:
    """Runs one job unless it already finished; returns (base_dir, seconds, return code)."""
    base_dir, argv = job
    if len(read_records(base_dir)) >= iterations:
        return base_dir, 0.0, 0
    os.makedirs(base_dir, exist_ok=True)
    start = time.time()
    code = call_until_deadline(argv, os.path.join(base_dir, "stdout.log"))
    return base_dir, time.time() - start, code


def behaviour_return(directory: str, max_steps: int | None = None) -> float:
    """Mean undiscounted return of the dataset's episodes (the last one may be cut at the dataset's end; NaN if none)."""
    from accumbens.replay import dataset as dataset_lib

    data = dataset_lib.load_dataset(directory, ["reward", "terminated", "truncated", "is_final"])
    if max_steps is not None:  # the first max_steps steps (and the final slots among them)
        steps = np.flatnonzero(~data["is_final"])
        if max_steps < steps.size:
            data = {k: v[: steps[max_steps - 1] + 1] for k, v in data.items()}
    ends = np.flatnonzero((data["terminated"] | data["truncated"]) & ~data["is_final"])
    if ends.size == 0:
        return float("nan")
    cumulative = np.concatenate([[0.0], np.cumsum(data["reward"].astype(np.float64))])
    starts = np.concatenate([[0], ends[:-1] + 2])  # each end is followed by a final-observation slot
    return float(np.mean(cumulative[ends + 1] - cumulative[starts]))


def t_interval(values: np.ndarray) -> float:
    from scipy import stats

    if values.size < 2:
        return float("nan")
    return float(stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size))


def collect(args: argparse.Namespace) -> dict:
    """{'settings', 'results': {dataset: {game: {'behaviour_return', algorithm: {...}}}}}."""
    settings = {k: getattr(args, k) for k in (
        "iterations", "training_steps", "evaluation_steps", "batch_size", "target_update_period",
        "final_iterations", "seeds", "train_frames", "dataset_steps", "updates_per_call")}
    result = {"paper": "Buckman, Gelada, Bellemare 2020, arXiv:2009.06799, Sec. 6 (MinAtar)",
              "settings": settings, "results": {}}
    for dataset in args.dataset:
        per_game = {}
        for game in args.games:
            entry = {}
            try:
                entry["behaviour_return"] = behaviour_return(dataset_dir(args.datasets, game, dataset),
                                                             split_spec(dataset)[1])
            except Exception as e:  # noqa: BLE001 - reported, not fatal
                entry["behaviour_return"] = float("nan")
                entry["behaviour_error"] = str(e)
            for algorithm in args.algorithms:
                scores = []
                for seed in args.seeds:
                    base_dir, _ = run_command(game, dataset, algorithm, seed, args)
                    records = [r for r in read_records(base_dir) if "eval_return_mean" in r]
                    if len(records) >= args.iterations:
                        scores.append(float(np.mean([r["eval_return_mean"] for r in records[-args.final_iterations:]])))
                values = np.array(scores)
                entry[algorithm] = {
                    "per_seed": scores,
                    "mean": float(values.mean()) if values.size else float("nan"),
                    "ci95": t_interval(values),
                }
            per_game[game] = entry
        result["results"][dataset] = per_game
    return result


def print_table(result: dict, algorithms) -> None:
    for dataset, per_game in result["results"].items():
        print(f"\ndataset {dataset}: final online return, mean ± 95% CI over seeds (number of seeds)")
        print(f"{'game':<15}{'behaviour':>11}" + "".join(f"{a:>22}" for a in algorithms))
        for game, entry in per_game.items():
            row = f"{game:<15}{entry['behaviour_return']:>11.2f}"
            for algorithm in algorithms:
                cell = entry[algorithm]
                row += f"{cell['mean']:>12.2f} ± {cell['ci95']:<5.2f}({len(cell['per_seed'])})"
            print(row)


def plot(result: dict, algorithms, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(result["results"])
    games = list(result["results"][datasets[0]])
    fig, axes = plt.subplots(len(datasets), len(games), figsize=(3.2 * len(games), 3.4 * len(datasets)), squeeze=False)
    colors = {"naive": "tab:red", "uncertainty": "tab:blue", "proximal": "tab:purple", "imitation": "tab:green"}
    for row, dataset in enumerate(datasets):
        for ax, game in zip(axes[row], games):
            entry = result["results"][dataset][game]
            means = [entry[a]["mean"] for a in algorithms]
            errors = [0.0 if np.isnan(entry[a]["ci95"]) else entry[a]["ci95"] for a in algorithms]
            ax.bar(range(len(algorithms)), means, yerr=errors, capsize=3,
                   color=[colors.get(a, "0.5") for a in algorithms])
            for index, algorithm in enumerate(algorithms):
                seeds = entry[algorithm]["per_seed"]
                ax.scatter([index] * len(seeds), seeds, color="k", s=8, zorder=3)
            if np.isfinite(entry["behaviour_return"]):
                ax.axhline(entry["behaviour_return"], color="k", linestyle="--", linewidth=1, label="behaviour (data)")
            ax.set_xticks(range(len(algorithms)))
            ax.set_xticklabels(algorithms, rotation=30, fontsize=8)
            ax.set_title(f"{game}, {dataset}", fontsize=9)
        axes[row][0].set_ylabel("final online return")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Offline MinAtar FDPO: mean and 95% CI over {len(result['settings']['seeds'])} seeds (dots: seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _status(code: int, log: str) -> str:
    if code == 0:
        return "ok"
    if code == INTERRUPTED:
        return "stopped at the deadline (run the same command again to resume)"
    return f"FAILED (exit {code}; see {log})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--games", nargs="+", default=list(GAMES), choices=GAMES)
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--datasets", default=os.path.join(REPO, "datasets", "minatar"), help="root of the datasets")
    parser.add_argument("--dataset", nargs="+", default=["eps_0.1", "eps_0.5"],
                        help="datasets of each game: folder names (eps_0.1, random), optionally ':N' for "
                             "the first N steps only (eps_0.1:10000), a smaller dataset from the same build")
    parser.add_argument("--runs", default=os.path.join(REPO, "runs", "offline_minatar"))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--training_steps", type=int, default=5000, help="gradient steps per iteration")
    parser.add_argument("--evaluation_steps", type=int, default=5000)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--target_update_period", type=int, default=1000, help="in gradient steps")
    parser.add_argument("--updates_per_call", type=int, default=1,
                        help="gradient steps per compiled call (lax.scan); larger saves host round trips on a GPU")
    parser.add_argument("--final_iterations", type=int, default=3, help="iterations averaged for the final score")
    parser.add_argument("--workers", type=int, default=1, help="runs (and builds) in parallel")
    parser.add_argument("--build", action="store_true", help="build missing datasets first")
    parser.add_argument("--build_epsilons", nargs="+", type=float, default=[0.1, 0.5])
    parser.add_argument("--dataset_steps", type=int, default=100_000, help="steps per dataset")
    parser.add_argument("--train_frames", type=int, default=250_000, help="behaviour DQN's online training steps")
    parser.add_argument("--build_bindings", nargs="*", default=[], help="gin bindings for the behaviour DQN")
    parser.add_argument("--deadline_s", type=float, default=None,
                        help="stop every job after this many seconds (they resume on the next call)")
    parser.add_argument("--collect_only", action="store_true", help="only tabulate finished runs")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke size: overrides the budget flags")
    args = parser.parse_args()
    if args.tiny:
        args.iterations, args.training_steps, args.evaluation_steps = 2, 100, 300
        args.batch_size, args.target_update_period, args.final_iterations = 32, 50, 1
        args.dataset_steps, args.train_frames = 2000, 300
        args.build_epsilons = [0.5]
        if args.dataset == parser.get_default("dataset"):
            args.dataset = ["eps_0.5"]
        args.build_bindings = ["DQNAgent.min_replay_history = 150", "MinAtarCNN.hidden_units = (32,)",
                               "Runner.evaluation_steps = 50"]
    start = time.time()
    if args.deadline_s is not None:
        _DEADLINE[0] = start + args.deadline_s
    if not args.collect_only:
        with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
            if args.build:
                for game, seconds, code in pool.map(lambda g: build(g, args), args.games):
                    status = _status(code, f"{args.datasets}/{game}/build.log")
                    print(f"datasets {game}: {status}, {seconds:.0f} s [{time.time() - start:.0f} s elapsed]", flush=True)
            ready = [(g, d) for d in args.dataset for g in args.games
                     if os.path.exists(os.path.join(dataset_dir(args.datasets, g, d), "manifest.json"))]
            for d in args.dataset:
                for g in args.games:
                    if (g, d) not in ready:
                        print(f"no dataset {dataset_dir(args.datasets, g, d)}: its runs are skipped (use --build)")
            jobs = [run_command(g, d, a, s, args) for g, d in ready for a in args.algorithms for s in args.seeds]
            for base_dir, seconds, code in pool.map(lambda job: execute(job, args.iterations), jobs):
                status = _status(code, f"{base_dir}/stdout.log")
                print(f"{os.path.relpath(base_dir, args.runs)}: {status}, {seconds:.0f} s "
                      f"[{time.time() - start:.0f} s elapsed]", flush=True)
    result = collect(args)
    result["seconds"] = time.time() - start
    print_table(result, args.algorithms)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "offline_minatar.json"), "w") as f:
        json.dump(result, f, indent=1)
    plot(result, args.algorithms, os.path.join(args.out, "offline_minatar.png"))
    print(f"wrote {args.out}/offline_minatar.json and .png")


if __name__ == "__main__":
    main()
