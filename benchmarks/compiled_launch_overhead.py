"""Where the compiled runner's small-seed-count time goes on a GPU: XLA flags and concurrent processes.

    python benchmarks/compiled_launch_overhead.py                    # on the device GPU, ~4 minutes
    python benchmarks/compiled_launch_overhead.py --steps 200 --cases c51:1 --concurrent 2   # CPU smoke test

With few seeds, one compiled training step (an update plus `update_period` vectorised environment
steps) is a chain of a hundred or more tiny GPU kernels inside an XLA while loop, so its cost is
kernel launches and loop bookkeeping, not arithmetic. Two levers that need no code change:

  flags        XLA command buffers (CUDA graphs) for while loops and conditionals
               (`--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL`): the loop body is replayed
               as one graph instead of launched kernel by kernel.
  concurrency  several independent runs as separate processes on the same GPU, filling each
               other's launch gaps.

Each case is a fresh subprocess (XLA flags are read once per process) that times one training
phase after a warm-up phase (`compiled_throughput.compiled_case`) for DQN (`dqn/minatar.gin`, an
update every step) and for the C51 core of the research agents (`hyperbolic/minatar.gin` with one
head, an update every 4 steps). Reported: agent steps per second per seed. The concurrency case
runs `--concurrent` copies of the C51 case at once and reports each copy's rate and their sum.
Writes `benchmarks/results/compiled_launch_overhead.json` (or `--output`).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "compiled_launch_overhead.json")
FLAG_SETS = {
    "default": "",
    "command_buffer_while": "--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL",
}
AGENT_BINDINGS = {
    "dqn": (["dqn/minatar"], []),
    "c51": (["hyperbolic/minatar"], ["HyperbolicAgent.num_gammas = 1", "Runner.evaluation_steps = 0"]),
}


def worker(agent: str, seeds: int, steps: int, conv_impl: str) -> dict:
    """Runs in the subprocess: one case, printed as a JSON line."""
    sys.path.insert(0, HERE)
    import compiled_throughput as ct

    gin_files, bindings = AGENT_BINDINGS[agent]
    result = ct.compiled_case(seeds, steps, 20_000, 1, 1, conv_impl, tuple(bindings), tuple(gin_files))
    result["agent"] = agent
    return result


def run_case(flags: str, agent: str, seeds: int, steps: int, conv_impl: str, copies: int = 1) -> list[dict]:
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip())
    if copies > 1:
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.8 / copies:.2f}"
    command = [sys.executable, os.path.abspath(__file__), "--worker", agent, "--seeds", str(seeds),
               "--steps", str(steps), "--conv_impl", conv_impl]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(copies)]
    results = []
    for process in processes:
        out, err = process.communicate()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if process.returncode or not lines:
            results.append({"error": (err or out)[-800:]})
        else:
            results.append(json.loads(lines[-1]))
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cases", default="dqn:1,dqn:64,c51:3", help="agent:seeds pairs")
    parser.add_argument("--seeds", default="1", help=argparse.SUPPRESS)  # the worker's seed count
    parser.add_argument("--steps", type=int, default=8000, help="timed agent steps per seed")
    parser.add_argument("--conv_impl", default="patches")
    parser.add_argument("--concurrent", type=int, default=4, help="copies of the 3-seed C51 case run at once (0: skip)")
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, int(args.seeds), args.steps, args.conv_impl)), flush=True)
        return 0

    rows = []

    def save():
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump({"benchmark": "compiled_launch_overhead", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "args": vars(args), "flag_sets": FLAG_SETS, "rows": rows}, f, indent=1)

    print(f"{'flags':<22} {'agent':<5} {'seeds':>5} {'copies':>6} {'steps/s per seed':>17} {'aggregate':>11}")
    pairs = [case.split(":") for case in args.cases.split(",")]
    cases = [(f, agent, int(seeds), 1) for f in FLAG_SETS for agent, seeds in pairs]
    if args.concurrent > 1:
        cases += [(f, "c51", 3, args.concurrent) for f in FLAG_SETS]
    for flags, agent, seeds, copies in cases:
        results = run_case(FLAG_SETS[flags], agent, seeds, args.steps, args.conv_impl, copies)
        for r in results:
            if "error" in r:
                print(f"{flags:<22} {agent:<5} {seeds:>5} {copies:>6} error: {r['error'][-300:]}", flush=True)
        ok = [r for r in results if "error" not in r]
        per_seed = [r["steps_per_second_per_seed"] for r in ok]
        row = {"flags": flags, "agent": agent, "seeds": seeds, "copies": copies, "results": results,
               "steps_per_second_per_seed": per_seed, "aggregate": sum(r["steps_per_second_aggregate"] for r in ok)}
        rows.append(row)
        save()
        shown = ", ".join(f"{v:,.0f}" for v in per_seed) or "-"
        print(f"{flags:<22} {agent:<5} {seeds:>5} {copies:>6} {shown:>17} {row['aggregate']:>11,.0f}", flush=True)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
