"""DQN on Pong with Dopamine's JAX settings (dqn/atari.gin), 3 seeds, against Dopamine's curve.

`--agent rainbow` runs Dopamine's JAX Rainbow (rainbow/atari.gin) the same way, against Dopamine's
Rainbow curve (the issue's "if device time remains" study); both go to the same results file.

The three seeds run side by side in one process (`--runner multi_seed`: one batched forward pass
to act, vmapped updates) on ale-py's vector environment (`@create_vector_atari_environment`,
Dopamine's preprocessing, sticky actions 0.25), with the overlapped schedule
(`MultiSeedRunner.act_before_update = True`: on an update step the action comes from the
parameters before that step's update; `--dopamine_order` turns it off).

Dopamine's iteration is 250k agent steps. The runner checkpoints after every iteration, and one
device command runs for at most 10 minutes, so the run is split into chunks of `--chunk_steps`
agent steps (default 125k, two per Dopamine iteration) run as runner iterations without an
evaluation phase (Dopamine's curve is the training return); a command stopped by `--deadline_s`
loses only its unfinished chunk, and the same command run again resumes. The chunks of one
Dopamine iteration are merged into its mean training return weighted by their episode counts
(the same statistic as Dopamine's: the mean return of the episodes that ended in the iteration).
The replay (1M frames per seed, ~7 GB each) stays on the machine's disk and memory only, so the
whole run must finish within one lease; checkpoints keep only the newest copy.

Comparison: per Dopamine iteration, our seeds' returns and mean against the 5 seeds of Dopamine's
DQN in benchmarks/reference/dopamine_pong.json (a copy of ../shared/baselines/dopamine/pong_CNN.json; min..max = "Dopamine's seed spread"); written
to `benchmarks/results/reproduce_pong_dqn.json` with the raw per-chunk curves.

Device command (one H100, 16 cores; repeat it while the machine is held until 4 iterations are done):

    python benchmarks/reproduce/pong_dqn.py --iterations 4 --deadline_s 570

Expected runtime: 4 Dopamine iterations = 1M agent steps per seed. Measured on the H100 machine
(benchmarks/results/atari_throughput.json, DQN on Pong, 3 seeds, overlapped): 697 agent steps/s in
aggregate = 232 lock-step ticks/s, so 1M ticks take ~72 minutes, more than one 30-minute lease.
It fits only if the multi-seed loop reaches ~2,000 aggregate steps/s (issue 11's goal: ~25
minutes); measure with `python benchmarks/atari_throughput.py` first. A 125k-step chunk takes ~9
minutes at 232 ticks/s (just inside --deadline_s 570) and ~3 minutes at the goal rate.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import repro_common as common  # noqa: E402

RESULTS = os.path.join(common.RESULTS_DIR, "reproduce_pong_dqn.json")
# Dopamine's DQN and Rainbow curves on Pong, copied from ../shared/baselines/dopamine/pong_CNN.json.
DOPAMINE_CURVES = os.path.join(common.REFERENCE_DIR, "dopamine_pong.json")
DOPAMINE_ITERATION = 250_000
# Our agent setting -> (gin file, Dopamine's agent name in its baselines).
AGENTS = {"dqn": ("dqn/atari", "DQN"), "rainbow": ("rainbow/atari", "Rainbow")}


def dopamine_curve(path: str, agent: str = "DQN") -> dict[int, list[float]]:
    """{iteration: [value per seed]} of Dopamine's published training returns for `agent`, from a
    Dopamine baselines file (a list of {"Iteration", "Value", "Agent"} records) or its copy in
    benchmarks/reference/dopamine_pong.json (the same records under "records")."""
    with open(path) as f:
        records = json.load(f)
    if isinstance(records, dict):
        records = records["records"]
    curve: dict[int, list[float]] = {}
    for r in records:
        if r["Agent"] == agent:
            curve.setdefault(int(r["Iteration"]), []).append(float(r["Value"]))
    if not curve:
        raise ValueError(f"{path} has no records for agent {agent!r}")
    return curve


def merge_chunks(returns: list, episodes: list, chunks_per_iteration: int) -> list:
    """Per-chunk mean returns and episode counts of one seed -> per-iteration mean returns,
    weighted by episodes (None where no episode ended); only whole iterations."""
    merged = []
    for start in range(0, len(returns) - chunks_per_iteration + 1, chunks_per_iteration):
        total, count = 0.0, 0
        for r, n in zip(returns[start:start + chunks_per_iteration], episodes[start:start + chunks_per_iteration]):
            if r is not None and n:
                total += r * n
                count += n
        merged.append(total / count if count else None)
    return merged


def compare(ours: list[list], dopamine: dict[int, list[float]]) -> list[dict]:
    """Per iteration: our seeds' values and mean vs Dopamine's seeds' min..max and mean."""
    rows = []
    for i in range(max((len(c) for c in ours), default=0)):
        values = [c[i] for c in ours if i < len(c) and c[i] is not None]
        if not values or i not in dopamine:
            continue
        ref = dopamine[i]
        low, high = min(ref), max(ref)
        mean = float(np.mean(values))
        rows.append(dict(
            iteration=i, ours=values, ours_mean=mean, dopamine_mean=float(np.mean(ref)), dopamine_min=low, dopamine_max=high,
            mean_within_spread=bool(low <= mean <= high), seeds_within_spread=int(sum(low <= v <= high for v in values)),
        ))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=4, help="Dopamine iterations (250k agent steps each)")
    parser.add_argument("--chunk_steps", type=int, default=125_000, help="agent steps per runner iteration (divides 250k)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--game", default="Pong")
    parser.add_argument("--agent", choices=tuple(AGENTS), default="dqn",
                        help="dqn (dqn/atari.gin) or rainbow (rainbow/atari.gin, Dopamine's JAX Rainbow), each against its Dopamine curve")
    parser.add_argument("--dopamine_order", action="store_true", help="learn, then act (no overlap; slower)")
    parser.add_argument("--host_environments", action="store_true", help="AtariEnv list instead of ale-py's vector env")
    parser.add_argument("--deadline_s", type=float, default=None)
    parser.add_argument("--runs_dir", default=os.path.join(common.REPO, "runs", "reproduce", "pong_dqn"))
    parser.add_argument("--results", default=RESULTS)
    parser.add_argument("--dopamine_curves", default=DOPAMINE_CURVES)
    parser.add_argument("--iteration_steps", type=int, default=DOPAMINE_ITERATION, help=argparse.SUPPRESS)  # tests
    parser.add_argument("--extra_bindings", nargs="*", default=[])
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.iteration_steps % args.chunk_steps:
        raise SystemExit(f"--chunk_steps ({args.chunk_steps}) must divide the iteration length ({args.iteration_steps})")
    chunks = args.iteration_steps // args.chunk_steps
    seeds = list(range(args.seeds))

    deadline = common.Deadline(args.deadline_s)
    device = common.device_description()
    bindings = [
        f"create_environment.name = 'atari:{args.game}'",
        f"MultiSeedRunner.seeds = ({', '.join(map(str, seeds))},)",
        f"MultiSeedRunner.act_before_update = {not args.dopamine_order}",
        f"Runner.num_iterations = {args.iterations * chunks}",
        f"Runner.training_steps = {args.chunk_steps}",
        "Runner.evaluation_steps = 0",
        "Runner.checkpoints_to_keep = 1",
        "MultiSeedRunner.tensorboard = False",
    ]
    if not args.host_environments:
        bindings.append("MultiSeedRunner.create_batched_environment_fn = @create_vector_atari_environment")
    bindings += list(args.extra_bindings)
    results = common.load_results(args.results, "pong_dqn", "DQN (dqn/atari.gin) and Rainbow (rainbow/atari.gin) on Pong vs Dopamine's published curves")
    results["command"] = " ".join(["python", "benchmarks/reproduce/pong_dqn.py", *(argv if argv is not None else sys.argv[1:])])
    gin_file, dopamine_agent = AGENTS[args.agent]
    key = f"{args.game}/{args.agent}"
    meta = dict(game=args.game, agent=args.agent, seeds=seeds, iterations_planned=args.iterations * chunks,
                steps_per_iteration=args.chunk_steps, chunks_per_dopamine_iteration=chunks, frames_per_step=4,
                source=f"Dopamine JAX {dopamine_agent} ({gin_file}.gin); reference curve benchmarks/reference/dopamine_pong.json",
                device=device, schedule="Dopamine order" if args.dopamine_order else "act_before_update (overlapped)")
    print(f"[reproduce] pong_dqn on {device}: {args.seeds} seeds, {args.iterations} Dopamine iterations "
          f"as {args.iterations * chunks} chunks of {args.chunk_steps} steps", flush=True)
    if deadline.expired(margin=30):
        common.record_unrun(results, args.results, key, meta | dict(runner="multi_seed"), "not_run", "deadline reached before start")
    else:
        base_dir = os.path.join(args.runs_dir, args.agent, args.game)
        common.run_piece(results, args.results, key, meta, "multi_seed", base_dir, (gin_file,), bindings,
                         timeout=deadline.remaining(), echo=not args.quiet)
    piece = results["pieces"][key]
    merged = [merge_chunks(r, e, chunks) for r, e in zip(piece.get("train_return") or [], piece.get("train_episodes") or [])]
    piece["dopamine_iteration_return"] = merged
    comparison = compare(merged, dopamine_curve(args.dopamine_curves, dopamine_agent)) if os.path.exists(args.dopamine_curves) else []
    results.setdefault("comparison", {})[key] = comparison
    if os.path.exists(args.dopamine_curves):  # the reference band, for `python -m accumbens.plot reproduce`
        reference = dopamine_curve(args.dopamine_curves, dopamine_agent)
        shown = [i for i in sorted(reference) if i < max(args.iterations + 2, 10)]
        results.setdefault("reference_curves", {}).setdefault(args.game, {})[f"Dopamine {dopamine_agent}"] = {
            "label": f"Dopamine {dopamine_agent}, 5 seeds (mean, min..max)", "source": os.path.relpath(args.dopamine_curves, common.REPO),
            "iterations": shown, "frames_per_iteration": DOPAMINE_ITERATION * 4,
            "mean": [float(np.mean(reference[i])) for i in shown], "min": [min(reference[i]) for i in shown],
            "max": [max(reference[i]) for i in shown]}
    common.save_results(args.results, results)

    print(f"\n{'iteration':>9} {'ours (mean)':>12} {'Dopamine mean':>14} {'Dopamine min..max':>18} {'within':>7}  per seed")
    for row in comparison:
        spread = f"{row['dopamine_min']:.1f}..{row['dopamine_max']:.1f}"
        seeds_text = ", ".join(f"{v:.1f}" for v in row["ours"])
        print(f"{row['iteration']:>9} {row['ours_mean']:>12.2f} {row['dopamine_mean']:>14.2f} {spread:>18} "
              f"{'yes' if row['mean_within_spread'] else 'no':>7}  {seeds_text}")
    print(f"[reproduce] {piece['status']}: {piece.get('iterations_done', 0)}/{meta['iterations_planned']} chunks; "
          f"results: {os.path.relpath(args.results, common.REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
