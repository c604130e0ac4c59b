"""Cross-check: the host runner on the minatar package against the compiled runner on gymnax.

One game (default Breakout), 3 seeds, DQN with exactly the settings of
`minatar_compiled.py --agents dqn_minatar_paper` (dqn/minatar.gin, the same iteration length),
trained by the multi-seed host runner (`--runner multi_seed`: the host `Runner`'s loop for each
seed, side by side in one process; N seeds give each seed's separate host run) on the `minatar`
package's own game (sticky actions 0.1), instead of the compiled runner on gymnax's.

The statistic: for every iteration both runs finished, the difference of the mean training
returns (host minus compiled) with a 95% bootstrap interval (seeds resampled within each side)
and Welch's t-test; and the same for the mean over all compared iterations. The two paths "agree
within seed noise" when the interval of the overall difference contains 0. The compiled side is
read from `benchmarks/results/reproduce_minatar.json` (run minatar_compiled.py first, or at the
same time on another machine); the host side goes to `benchmarks/results/reproduce_minatar_host.json`,
which also holds the comparison.

Device command (one H100, 16 cores; resumable: repeat it until the piece is complete):

    python benchmarks/reproduce/minatar_host.py --game breakout --iterations 2 --deadline_s 560

Expected runtime: unmeasured for 3 seeds; the host runner made 444 agent steps/s with one seed on
the H100 machine (README, compiled-runner table), so 2 iterations of 100k steps for 3 seeds in
lock step take roughly 8-12 minutes: two commands of --deadline_s 560 (the first stops after its
first finished iteration at the latest, the second resumes). The comparison needs the compiled
piece `breakout/dqn_minatar_paper` with at least as many iterations.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from accumbens.analysis import bootstrap_difference_ci

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import repro_common as common  # noqa: E402
from minatar_compiled import AGENTS, GAMES  # noqa: E402

RESULTS = os.path.join(common.RESULTS_DIR, "reproduce_minatar_host.json")
COMPILED_RESULTS = os.path.join(common.RESULTS_DIR, "reproduce_minatar.json")


def _finite_list(curves: np.ndarray, reduce) -> list:
    """`reduce` over seeds per iteration, None where no seed has a value (JSON has no NaN)."""
    out = []
    for column in curves.T:
        column = column[np.isfinite(column)]
        out.append(float(reduce(column)) if column.size else None)
    return out


def _welch_p(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return float("nan")
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def compare(host: dict, compiled: dict) -> dict:
    """Per-iteration and overall comparison of two pieces' training returns (see module docstring)."""
    n = min(host.get("iterations_done", 0), compiled.get("iterations_done", 0))
    out: dict = {"iterations_compared": n, "per_iteration": []}
    if n == 0:
        out["verdict"] = "no common finished iteration yet"
        return out

    def matrix(piece):
        rows = [[np.nan if v is None else v for v in curve[:n]] for curve in piece["train_return"]]
        return np.asarray(rows, np.float64)

    h, c = matrix(host), matrix(compiled)
    for i in range(n):
        a, b = h[:, i][np.isfinite(h[:, i])], c[:, i][np.isfinite(c[:, i])]
        if len(a) == 0 or len(b) == 0:
            continue
        diff, low, high, _ = bootstrap_difference_ci(a, b)
        out["per_iteration"].append(dict(iteration=i, host_mean=float(a.mean()), compiled_mean=float(b.mean()),
                                         difference=diff, ci=[low, high], welch_p=_welch_p(a, b)))
    a, b = np.nanmean(h, axis=1), np.nanmean(c, axis=1)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    diff, low, high, _ = bootstrap_difference_ci(a, b)
    out["overall"] = dict(host_mean=float(a.mean()), compiled_mean=float(b.mean()), difference=diff, ci=[low, high],
                          welch_p=_welch_p(a, b), host_seeds=int(len(a)), compiled_seeds=int(len(b)))
    agree = low <= 0.0 <= high
    out["verdict"] = ("agree within seed noise (the 95% interval of the difference contains 0)" if agree else
                      "differ beyond seed noise (the 95% interval of the difference excludes 0)")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="breakout", choices=GAMES)
    parser.add_argument("--agent", default="dqn_minatar_paper", choices=[a for a in AGENTS if not AGENTS[a]["prioritized"]])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--training_steps", type=int, default=None, help="default: the agent setting's (must match the compiled run)")
    parser.add_argument("--evaluation_steps", type=int, default=0, help="greedy evaluation steps per iteration (not compared)")
    parser.add_argument("--conv_impl", choices=("auto", "patches", "xla"), default="auto")
    parser.add_argument("--deadline_s", type=float, default=None)
    parser.add_argument("--runs_dir", default=os.path.join(common.REPO, "runs", "reproduce", "minatar_host"))
    parser.add_argument("--results", default=RESULTS)
    parser.add_argument("--compiled_results", default=COMPILED_RESULTS)
    parser.add_argument("--extra_bindings", nargs="*", default=[])
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    deadline = common.Deadline(args.deadline_s)
    device = common.device_description()
    conv_impl = args.conv_impl if args.conv_impl != "auto" else ("patches" if common.has_gpu() else "xla")
    spec = AGENTS[args.agent]
    steps = args.training_steps or spec["steps"]
    seeds = list(range(args.seeds))
    bindings = list(spec["bindings"]) + [
        f"create_environment.name = 'minatar:{args.game}'",
        f"MultiSeedRunner.seeds = ({', '.join(map(str, seeds))},)",
        f"Runner.num_iterations = {args.iterations}",
        f"Runner.training_steps = {steps}",
        f"Runner.evaluation_steps = {args.evaluation_steps}",
        f"MinAtarCNN.conv_impl = '{conv_impl}'",
        "MultiSeedRunner.tensorboard = False",
    ] + list(args.extra_bindings)
    results = common.load_results(args.results, "minatar_host", "MinAtar host runner (minatar package) vs compiled runner (gymnax)")
    results["command"] = " ".join(["python", "benchmarks/reproduce/minatar_host.py", *(argv if argv is not None else sys.argv[1:])])
    key = f"{args.game}/{args.agent}"
    meta = dict(game=args.game, agent=args.agent, seeds=seeds, iterations_planned=args.iterations, steps_per_iteration=steps,
                frames_per_step=1, source=spec["source"], device=device, conv_impl=conv_impl,
                environment="minatar package (sticky actions 0.1)")
    print(f"[reproduce] minatar_host on {device}: {key}, {args.seeds} seeds, {args.iterations} x {steps} steps", flush=True)
    if deadline.expired(margin=30):
        common.record_unrun(results, args.results, key, meta | dict(runner="multi_seed"), "not_run", "deadline reached before start")
    else:
        base_dir = os.path.join(args.runs_dir, args.agent, args.game)
        piece = common.run_piece(results, args.results, key, meta, "multi_seed", base_dir, spec["gin_files"], bindings,
                                 timeout=deadline.remaining(), echo=not args.quiet)
        print(f"[reproduce] {key}: {piece['status']}, {piece['iterations_done']}/{args.iterations} iterations", flush=True)

    comparison = {"compiled_results": os.path.relpath(args.compiled_results, common.REPO), "verdict": "compiled results not available"}
    if os.path.exists(args.compiled_results):
        compiled = common.load_results(args.compiled_results, "minatar_compiled", "")["pieces"].get(key)
        if compiled is not None and compiled.get("steps_per_iteration") != steps:
            comparison["verdict"] = (f"not comparable: the compiled piece has {compiled.get('steps_per_iteration')} steps per "
                                     f"iteration, this run {steps}")
        elif compiled is not None:
            comparison.update(compare(results["pieces"][key], compiled))
            curves = np.array([[np.nan if v is None else v for v in c] for c in compiled.get("train_return") or []], np.float64)
            if curves.size:  # the compiled run's band on the host run's figure (`accumbens.plot reproduce`)
                results.setdefault("reference_curves", {})[args.game] = {"compiled runner (gymnax)": {
                    "label": f"compiled runner, gymnax ({curves.shape[0]} seeds, mean, min..max)",
                    "iterations": list(range(curves.shape[1])), "frames_per_iteration": compiled["steps_per_iteration"],
                    "mean": _finite_list(curves, np.nanmean), "min": _finite_list(curves, np.nanmin),
                    "max": _finite_list(curves, np.nanmax)}}
    results["comparison"] = {key: comparison}
    common.save_results(args.results, results)
    print_comparison(key, comparison)
    return 0


def print_comparison(key: str, comparison: dict) -> None:
    print(f"\n{key}: host (minatar package) vs compiled (gymnax), training return")
    print(f"{'iteration':>9} {'host':>8} {'compiled':>9} {'difference [95% CI]':>28} {'Welch p':>8}")
    for row in comparison.get("per_iteration", []):
        ci = f"{row['difference']:.2f} [{row['ci'][0]:.2f}, {row['ci'][1]:.2f}]"
        print(f"{row['iteration']:>9} {row['host_mean']:>8.2f} {row['compiled_mean']:>9.2f} {ci:>28} {row['welch_p']:>8.3f}")
    if "overall" in comparison:
        o = comparison["overall"]
        ci = f"{o['difference']:.2f} [{o['ci'][0]:.2f}, {o['ci'][1]:.2f}]"
        print(f"{'all':>9} {o['host_mean']:>8.2f} {o['compiled_mean']:>9.2f} {ci:>28} {o['welch_p']:>8.3f}")
    print(f"verdict: {comparison['verdict']}")


if __name__ == "__main__":
    sys.exit(main())
