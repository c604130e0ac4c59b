"""Does the compiled runner learn like the host runner? DQN on gymnax MinAtar Breakout, 5 seeds each.

    python benchmarks/compiled_equivalence.py                       # the device run (~8 min)
    python benchmarks/compiled_equivalence.py --seeds 2 --iterations 2 --training_steps 300 \
        --evaluation_steps 100 --capacity 1000 --min_replay_history 100 --output /tmp/eq.json   # tiny CPU check

Issue 7's equivalence check: with one seed, one environment and the same hyperparameters, the
compiled runner's DQN and the host runner's DQN on gymnax Breakout follow the same learning curve
within seed noise. The *only* difference between the two arms is the runner:

  host arm      `Runner` (the Dopamine-style host loop, `HostAgent`, NumPy replay), one process per
                seed, on `GymnaxHostEnv('minatar:breakout')` -- the very gymnax game (all 6 actions,
                sticky actions 0.1, same episode cap) that the compiled runner steps, driven from
                the host one step at a time. Each process runs on CPU (`--host_platform cpu`, the
                default, pinned to its own cores when there are enough), leaving the GPU to:
  compiled arm  `CompiledRunner` with `num_seeds` seeds in one program (vmap; seed i computes
                what a one-seed run would), one environment per seed.

Both use `dqn/minatar.gin` (the MinAtar paper's DQN: update every step, batch 32, RMSProp 2.5e-4,
replay 100k, target period 1000, epsilon 1 -> 0.1 over 100k frames after 5000 random frames;
Young & Tian 2019), the same iteration length and evaluation budget, and the same episode cap
(`--max_steps_per_episode`, 10,000 here instead of the gin file's 100,000, so that a greedy
evaluation episode stuck in a loop cannot eat the host arm's budget). Their random streams differ
(different PRNG use), so equal curves can only mean "equal in distribution over seeds".

Statistics (per runner, over seeds): per iteration the mean training return (the MinAtar paper's
measure) and greedy evaluation return with a 95% percentile bootstrap interval
(`accumbens.analysis.bootstrap_ci`); and two tests of "no difference", each as Welch's t-test
(scipy) and a bootstrap test of the difference of means: `final` (per seed, the mean of the last
`--final_window` compared iterations) and `curve` (per seed, the mean over all compared
iterations, i.e. the area under the curve). The verdict `same_within_seed_noise` is Welch p > 0.05
for both tests on the training return; the evaluation return is a secondary check
(`eval_same_within_seed_noise`); bootstrap intervals are descriptive (too narrow with 5 seeds).
The iterations compared are those that every seed of both arms completed. Known small
differences by design (see `accumbens/runners/compiled.py`): the compiled runner's phases are a
fixed number of steps and count the episodes that ended in them, the host runner's run whole
episodes; the compiled arm evaluates on `--num_eval_envs` environments for
`evaluation_steps / num_eval_envs` steps each and drops episodes still running at the end.

Budget: the host runner is the slow arm (~450 steps/s per process measured on the H100 machine's
host loop; on CPU it depends on the cores). `--deadline_s` bounds the whole command: each arm
stops before an iteration it cannot finish in time (and host processes still running at the
deadline are stopped); the comparison then uses the iterations completed by all seeds.
Resumable: run directories live under `--root` with a checkpoint after every iteration; the same
command again continues both arms where they stopped (only while `--root` survives).
Partial results: the JSON and the PNG are rewritten every `--report_every_s` seconds and at the end.

Results: a table on stdout, `--output` (JSON) and the same name with `.png` (curves, 95% bands).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]  # don't shadow modules

from accumbens.atomic import atomic_write  # noqa: E402
RESULTS = os.path.join(HERE, "results", "compiled_equivalence.json")
ARMS = ("host", "compiled")
METRICS = ("train_return_mean", "eval_return_mean")


# ----------------------------------------------------------------------------- configuration
def _bindings(args) -> list[str]:
    bindings = [f"create_environment.name = 'minatar:{args.game}'", f"MinAtarCNN.conv_impl = '{args.conv_impl}'"]
    if args.max_steps_per_episode is not None:
        bindings.append(f"Runner.max_steps_per_episode = {args.max_steps_per_episode}")
    if args.capacity is not None:
        bindings.append(f"ReplayBuffer.capacity = {args.capacity}")
    if args.min_replay_history is not None:
        bindings.append(f"DQNAgent.min_replay_history = {args.min_replay_history}")
    return bindings + list(args.bindings)


def _configure(args) -> int:
    """Parses dqn/minatar.gin and the bindings; returns the episode cap (`Runner.max_steps_per_episode`)."""
    import gin

    from accumbens import train

    train.parse_config(["dqn/minatar"], _bindings(args))
    return int(gin.query_parameter("Runner.max_steps_per_episode"))


def _arm_dir(args, arm: str, seed: int) -> str:
    return os.path.join(args.root, "host", f"seed_{seed}") if arm == "host" else os.path.join(args.root, "compiled", f"seed_{seed}")


# ----------------------------------------------------------------------------- the two arms
def run_host_seed(args, seed: int) -> None:
    """One host-runner seed (a worker process): `Runner` on `GymnaxHostEnv`, until done or the deadline."""
    from accumbens.environments.gymnax_host import GymnaxHostEnv
    from accumbens.runners.deadline import DeadlineReached, with_deadline
    from accumbens.runners.runner import Runner

    max_steps = _configure(args)
    runner_cls = with_deadline(Runner, args._deadline_at)
    runner = runner_cls(
        _arm_dir(args, "host", seed),
        create_environment_fn=lambda: GymnaxHostEnv(f"minatar:{args.game}", max_episode_steps=max_steps),
        num_iterations=args.iterations,
        training_steps=args.training_steps,
        evaluation_steps=args.evaluation_steps,
        seed=seed,
        checkpoints_to_keep=2,
        progress_bar=False,
        tensorboard=False,
    )
    try:
        runner.run_experiment()
    except DeadlineReached:
        print(f"[host seed {seed}] stopped before the deadline", flush=True)


def run_compiled(args, deadline_at: float) -> dict:
    """All compiled seeds in one program (this process, default JAX device)."""
    from accumbens.runners.compiled import CompiledRunner
    from accumbens.runners.deadline import DeadlineReached, with_deadline

    _configure(args)
    runner_cls = with_deadline(CompiledRunner, deadline_at)
    start = time.time()
    runner = runner_cls(
        os.path.join(args.root, "compiled"),
        environment_name=f"minatar:{args.game}",
        num_iterations=args.iterations,
        training_steps=args.training_steps,
        evaluation_steps=args.evaluation_steps,
        seed=0,
        num_seeds=args.seeds,
        num_envs=1,
        num_eval_envs=args.num_eval_envs,
        checkpoint_every=5,  # each is ~80 MB per seed (replay); the deadline stop checkpoints too
        checkpoints_to_keep=2,
        tensorboard=False,
    )
    stopped = False
    try:
        runner.run_experiment()
    except DeadlineReached:
        stopped = True
        print("[compiled] stopped before the deadline", flush=True)
    return {"seconds": time.time() - start, "stopped_by_deadline": stopped}


def _host_command(argv: list[str], seed: int, deadline_at: float) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), *argv, "--_host_seed", str(seed), "--_deadline_at", repr(deadline_at)]


def _host_environment(args, index: int) -> dict:
    env = dict(os.environ)
    if args.host_platform == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.dirname(HERE), env.get("PYTHONPATH", "")) if p)
    return env


def _host_cpus(args, index: int) -> list[int] | None:
    """Cores for host seed `index`: `--host_cpus_per_seed` of them, disjoint, leaving core 0 to the
    compiled arm; None (no pinning) when the machine has too few cores."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    per_seed = args.host_cpus_per_seed or (len(cores) - 1) // max(args.seeds, 1)
    if per_seed < 1 or 1 + per_seed * args.seeds > len(cores):
        return None
    return cores[1 + index * per_seed : 1 + (index + 1) * per_seed]


# ----------------------------------------------------------------------------- analysis
def _curves(args, arm: str) -> dict:
    """{'steps': [S, I], metric: [S, I]} over the iterations every seed of `arm` has logged."""
    from accumbens.runners.logging import read_records

    per_seed = []
    for seed in range(args.seeds):
        path = _arm_dir(args, arm, seed)
        try:
            per_seed.append(read_records(path))
        except FileNotFoundError:
            per_seed.append([])
    count = min(len(r) for r in per_seed)
    out = {"iterations_per_seed": [len(r) for r in per_seed]}

    def column(key):
        return np.array([[np.nan if r.get(key) is None else float(r[key]) for r in records[:count]] for records in per_seed], np.float64).reshape(
            args.seeds, count
        )

    out["steps"] = column("total_train_steps")
    out["train_steps_per_second"] = column("train_steps_per_second")
    for metric in METRICS:
        out[metric] = column(metric)
    return out


def _nanmean(x, axis=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def _bootstrap_difference(a: np.ndarray, b: np.ndarray, resamples: int = 20000, seed: int = 0) -> dict:
    """Difference of means b - a with a 95% percentile interval, resampling each group's seeds
    independently; p: two-sided bootstrap p-value (`accumbens.analysis.bootstrap_difference_ci`)."""
    from accumbens.analysis import bootstrap_difference_ci

    difference, low, high, p = bootstrap_difference_ci(b, a, resamples=resamples, seed=seed)
    return {"difference": difference, "low": low, "high": high, "p": p}


def _test(host: np.ndarray, compiled: np.ndarray) -> dict:
    """Welch's t-test and a bootstrap test of compiled - host over seeds (NaN seeds dropped)."""
    from scipy.stats import ttest_ind

    a, b = host[np.isfinite(host)], compiled[np.isfinite(compiled)]
    result = {"host_mean": float(a.mean()) if a.size else None, "compiled_mean": float(b.mean()) if b.size else None,
              "host_seeds": int(a.size), "compiled_seeds": int(b.size)}
    if a.size >= 2 and b.size >= 2:
        welch = ttest_ind(b, a, equal_var=False)
        result["welch_t"] = None if not np.isfinite(welch.statistic) else float(welch.statistic)
        result["welch_p"] = None if not np.isfinite(welch.pvalue) else float(welch.pvalue)
        result["bootstrap"] = _bootstrap_difference(a, b)
    return result


def analyse(args) -> dict:
    """Per-iteration means with 95% bootstrap intervals per arm, and the tests of no difference."""
    from accumbens.analysis import bootstrap_ci

    curves = {arm: _curves(args, arm) for arm in ARMS}
    compared = min(curves[arm]["steps"].shape[1] for arm in ARMS)
    result = {"iterations_compared": compared, "iterations_done": {arm: curves[arm]["iterations_per_seed"] for arm in ARMS}}
    per_iteration = []
    for i in range(compared):
        row = {"iteration": i}
        for arm in ARMS:
            c = curves[arm]
            row[f"{arm}_steps"] = float(_nanmean(c["steps"][:, i]))
            for metric in METRICS:
                values = c[metric][:, i]
                values = values[np.isfinite(values)]
                if values.size:
                    mean, low, high = bootstrap_ci(values)
                    row[f"{arm}_{metric}"] = [mean, low, high]
                else:
                    row[f"{arm}_{metric}"] = None
        per_iteration.append(row)
    result["per_iteration"] = per_iteration
    result["per_seed_curves"] = {
        arm: {k: np.where(np.isfinite(v), v, None).tolist() for k, v in curves[arm].items() if k != "iterations_per_seed"} for arm in ARMS
    }
    tests = {}
    if compared:
        window = max(1, min(args.final_window, compared))
        for metric in METRICS:
            h, c = curves["host"][metric][:, :compared], curves["compiled"][metric][:, :compared]
            tests[metric] = {
                "final": {"iterations": list(range(compared - window, compared)),
                          **_test(_nanmean(h[:, -window:], 1), _nanmean(c[:, -window:], 1))},
                "curve": {"iterations": [0, compared - 1], **_test(_nanmean(h, 1), _nanmean(c, 1))},
            }
    result["tests"] = tests
    rates = {arm: _nanmean(curves[arm]["train_steps_per_second"][:, 1:]) if curves[arm]["steps"].shape[1] > 1 else float("nan") for arm in ARMS}
    result["train_steps_per_second_per_seed_after_first_iteration"] = {arm: None if not np.isfinite(v) else float(v) for arm, v in rates.items()}
    # The decision, fixed before the run: Welch's test on the training return (the MinAtar paper's
    # measure), final and whole curve, both p > 0.05. The evaluation return is reported the same
    # way as a secondary check. The bootstrap intervals are descriptive: with 5 seeds a percentile
    # bootstrap is too narrow (by about sqrt((n-1)/n) and from its few distinct resamples).
    def passes(metric):
        ps = [t.get("welch_p") for t in tests.get(metric, {}).values()]
        return bool(ps) and all(p is not None and p > 0.05 for p in ps)

    result["same_within_seed_noise"] = passes("train_return_mean")
    result["eval_same_within_seed_noise"] = passes("eval_return_mean")
    return result


def _cell(value) -> str:
    return "-" if value is None else f"{value[0]:6.2f} [{value[1]:5.2f},{value[2]:5.2f}]"


def table(result: dict) -> str:
    header = f"{'iter':>4} {'steps':>8} | {'host train':>22} {'compiled train':>22} | {'host eval':>22} {'compiled eval':>22}"
    lines = [header, "-" * len(header)]
    for row in result["per_iteration"]:
        lines.append(
            f"{row['iteration']:>4} {row['compiled_steps']:>8.0f} | {_cell(row['host_train_return_mean']):>22} "
            f"{_cell(row['compiled_train_return_mean']):>22} | {_cell(row['host_eval_return_mean']):>22} {_cell(row['compiled_eval_return_mean']):>22}"
        )
    for metric, by_kind in result["tests"].items():
        for kind, t in by_kind.items():
            if "welch_p" not in t:
                lines.append(f"{metric} {kind}: too few seeds for a test")
                continue
            b = t["bootstrap"]
            welch_p = "nan" if t["welch_p"] is None else f"{t['welch_p']:.3f}"
            lines.append(
                f"{metric} {kind} (iterations {t['iterations'][0]}..{t['iterations'][-1]}): host {t['host_mean']:.2f}, compiled "
                f"{t['compiled_mean']:.2f}; compiled - host {b['difference']:+.2f} [95% {b['low']:+.2f}, {b['high']:+.2f}], "
                f"bootstrap p {b['p']:.3f}, Welch p {welch_p}"
            )
    rates = result["train_steps_per_second_per_seed_after_first_iteration"]
    def rate(value):
        return "-" if value is None else f"{value:.0f}"

    lines.append(f"training steps/s per seed (after the first iteration): host {rate(rates['host'])}, compiled {rate(rates['compiled'])}")
    lines.append(f"same learning curve within seed noise (training return, final and curve, Welch p > 0.05): {result['same_within_seed_noise']}")
    lines.append(f"secondary, evaluation return (final and curve, Welch p > 0.05): {result['eval_same_within_seed_noise']}")
    return "\n".join(lines)


def plot(result: dict, output: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["per_iteration"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, label in zip(axes, METRICS, ("training return (epsilon-greedy)", "evaluation return (greedy)")):
        for arm, colour in zip(ARMS, ("tab:blue", "tab:orange")):
            points = [(r[f"{arm}_steps"], *r[f"{arm}_{metric}"]) for r in rows if r[f"{arm}_{metric}"] is not None]
            if not points:
                continue
            x, mean, low, high = (np.array(v) for v in zip(*points))
            ax.plot(x, mean, marker="o", color=colour, label=f"{arm} runner")
            ax.fill_between(x, low, high, color=colour, alpha=0.2)
        t = result["tests"].get(metric, {}).get("final", {})
        if t.get("welch_p") is not None:
            ax.set_title(f"{label}\nfinal: Welch p {t['welch_p']:.2f}, bootstrap p {t['bootstrap']['p']:.2f}", fontsize=10)
        else:
            ax.set_title(label, fontsize=10)
        ax.set_xlabel("training agent steps per seed")
        ax.set_ylabel("return")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="seeds per arm (0 .. seeds-1)")
    parser.add_argument("--game", default="breakout", help="MinAtar game (gymnax port)")
    parser.add_argument("--iterations", type=int, default=30, help="iterations (the deadline may cut the host arm short)")
    parser.add_argument("--training_steps", type=int, default=5_000, help="training agent steps per iteration and seed")
    parser.add_argument("--evaluation_steps", type=int, default=1_000, help="greedy evaluation steps per iteration and seed")
    parser.add_argument("--num_eval_envs", type=int, default=1,
                        help="evaluation environments per seed (compiled arm); 1 is the closest to the host arm's one "
                             "stream of whole episodes (only the last, unfinished episode is dropped)")
    parser.add_argument("--final_window", type=int, default=2, help="iterations averaged per seed for the 'final' test")
    parser.add_argument("--capacity", type=int, default=None, help="replay capacity (default: dqn/minatar.gin's 100k)")
    parser.add_argument("--max_steps_per_episode", type=int, default=10_000,
                        help="episode cap of both arms (dqn/minatar.gin: 100k); bounds what a greedy evaluation "
                             "episode stuck in a loop costs the host arm's budget")
    parser.add_argument("--min_replay_history", type=int, default=None, help="default: dqn/minatar.gin's 5000")
    parser.add_argument("--conv_impl", default="patches", choices=("xla", "patches"),
                        help="MinAtarCNN.conv_impl for both arms (the same convolution; 'patches' is faster under vmap on GPUs)")
    parser.add_argument("--bindings", nargs="*", default=[], help="extra gin bindings for both arms")
    parser.add_argument("--host_platform", default="cpu", choices=("cpu", "default"), help="JAX platform of the host-runner processes")
    parser.add_argument("--host_cpus_per_seed", type=int, default=0, help="cores pinned per host process (0: (cores-1) // seeds)")
    parser.add_argument("--deadline_s", type=float, default=450.0, help="wall-clock budget of the whole command")
    parser.add_argument("--report_every_s", type=float, default=30.0, help="partial JSON/PNG every this many seconds")
    parser.add_argument("--root", default=os.path.join("/tmp", "accumbens_compiled_equivalence"), help="run directories")
    parser.add_argument("--no_host", action="store_true", help="only the compiled arm (e.g. when the host arm is complete)")
    parser.add_argument("--output", default=RESULTS)
    parser.add_argument("--_host_seed", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_deadline_at", type=float, default=math.inf, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.seeds < 1 or args.iterations < 1 or args.training_steps < 1 or args.evaluation_steps < 1:
        raise SystemExit("--seeds, --iterations, --training_steps and --evaluation_steps must be >= 1")
    args.root = os.path.abspath(args.root)
    if args._host_seed is not None:  # a worker process
        run_host_seed(args, args._host_seed)
        return 0

    started = time.time()
    deadline_at = started + args.deadline_s
    output = os.path.abspath(args.output)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    os.makedirs(os.path.join(args.root, "host"), exist_ok=True)
    payload = {
        "benchmark": "compiled_equivalence",
        "case": f"dqn/minatar.gin on gymnax MinAtar {args.game}: host Runner (GymnaxHostEnv) vs CompiledRunner",
        "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "bindings": _bindings(args),
        "python": sys.version.split()[0],
        "machine": platform.node(),
        "cpu_count": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
    }

    def report(final: bool) -> dict:
        payload["result"] = analyse(args)
        payload["elapsed_s"] = time.time() - started
        payload["complete"] = final
        atomic_write(output, lambda f: json.dump(payload, f, indent=1), text=True)
        if payload["result"]["iterations_compared"]:
            plot(payload["result"], os.path.splitext(output)[0] + ".png",
                 f"DQN (MinAtar paper settings), gymnax MinAtar {args.game}: host vs compiled runner\n"
                 f"{args.seeds} seeds each, mean and 95% bootstrap band over seeds")
        return payload["result"]

    # Host arm: one worker process per seed, started first (it is the slow arm).
    margin = 5.0  # seconds kept for the final report
    workers = []
    if not args.no_host:
        worker_argv = [a for a in argv]
        for seed in range(args.seeds):
            log = open(os.path.join(args.root, "host", f"seed_{seed}.log"), "a")
            cpus = _host_cpus(args, seed)
            preexec = (lambda cpus=cpus: os.sched_setaffinity(0, cpus)) if cpus else None
            workers.append((seed, log, subprocess.Popen(
                _host_command(worker_argv, seed, deadline_at - margin), stdout=log, stderr=subprocess.STDOUT,
                env=_host_environment(args, seed), preexec_fn=preexec)))
        print(f"started {len(workers)} host-runner processes (logs: {args.root}/host/seed_<n>.log)", flush=True)

    def stop_workers() -> None:
        for seed, log, process in workers:
            if process.poll() is None:
                print(f"host seed {seed}: still running at the deadline, stopped", flush=True)
                process.send_signal(signal.SIGTERM)
        for seed, log, process in workers:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
            if process.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
                with open(os.path.join(args.root, "host", f"seed_{seed}.log")) as f:
                    tail = f.read()[-2000:]
                print(f"host seed {seed} failed (exit {process.returncode}); the end of its log:\n{tail}", flush=True)

    try:
        # Compiled arm, in this process (on the default device: the GPU when there is one).
        import jax

        device = jax.devices()[0]
        payload["compiled_device"] = f"{device.platform} {getattr(device, 'device_kind', '')}"
        payload["host_device"] = "cpu" if args.host_platform == "cpu" else payload["compiled_device"]
        payload["compiled_run"] = run_compiled(args, deadline_at - margin)
        print(f"compiled arm: {payload['compiled_run']['seconds']:.1f} s", flush=True)

        # Wait for the host arm, reporting partial results; stop it at the deadline.
        last_report = 0.0
        while any(p.poll() is None for _, _, p in workers) and time.time() < deadline_at - margin:
            if time.time() - last_report >= args.report_every_s:
                partial = report(final=False)
                print(f"[{time.time() - started:5.0f} s] host iterations done per seed: {partial['iterations_done']['host']}", flush=True)
                last_report = time.time()
            time.sleep(2.0)
    finally:  # also when the compiled arm fails: no host process outlives the command
        stop_workers()
    payload["host_exit_codes"] = [p.returncode for _, _, p in workers]
    result = report(final=True)
    print(f"DQN, gymnax MinAtar {args.game}, {args.seeds} seeds per runner; compiled on {payload['compiled_device']}, host on "
          f"{payload['host_device']}; {result['iterations_compared']} iteration(s) of {args.training_steps} steps compared; "
          "mean [95% bootstrap interval] over seeds")
    print(table(result))
    print(f"wrote {output} and {os.path.splitext(output)[0]}.png ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
