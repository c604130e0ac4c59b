"""Agent steps per second of the full host loop, accumbens against Dopamine, in one run.

    python benchmarks/throughput.py                       # all cases, both frameworks
    python benchmarks/throughput.py --cases dqn-minatar --steps 10000 --repeats 3
    python benchmarks/throughput.py --no-dopamine         # accumbens only

"Full loop" means what a training phase does: environment step, acting, storing in replay and a
gradient update every `update_period` agent steps (learning is on for the whole timed window),
target syncs. Each framework runs with the *same* hyperparameters: Dopamine's published gin
settings for that case (see CASES), bound on accumbens' own names.

Each measurement runs in a fresh subprocess (so JIT caches and thread pools do not leak), the
frameworks alternate within each repeat (so a noisy machine hits both alike), and the table
reports the median over repeats, the ratio of the medians accumbens / Dopamine, and the median of
the per-repeat ratios ("paired": each repeat runs both back to back, under the same load). Results go to
`benchmarks/results/throughput.json`.

Dopamine runs in its own virtual environment (it needs jax 0.6.2 and TensorFlow): make it once
with `benchmarks/dopamine/setup_venv.sh`; its Python is found at `$DOPAMINE_PYTHON` or
`~/.cache/accumbens/dopamine-venv/bin/python`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "throughput.json")
DEFAULT_DOPAMINE_PYTHON = os.path.expanduser("~/.cache/accumbens/dopamine-venv/bin/python")

# Dopamine's settings per case, as accumbens gin bindings. Sources (google/dopamine):
#   dqn-minatar:  dopamine/labs/environments/minatar/dqn_breakout.gin (+ JaxDQNAgent defaults)
#   rainbow-minatar: dopamine/labs/environments/minatar/rainbow_breakout.gin
#   dqn-pong:     dopamine/jax/agents/dqn/configs/dqn.gin (min_replay_history lowered to 1000
#                 on both sides so that a short window is all learning)
_DQN_MINATAR = [
    "create_environment.name = 'minatar:breakout'",
    "DQNAgent.stack_size = 1",
    "DQNAgent.min_replay_history = 1000",
    "DQNAgent.update_period = 4",
    "DQNAgent.target_update_period = 1000",
    "DQNAgent.epsilon_train = 0.01",
    "DQNAgent.epsilon_eval = 0.001",
    "DQNAgent.epsilon_decay_period = 250000",
    "DQNAgent.loss_type = 'mse'",
    "DQNAgent.batch_size = 32",
    "create_torso.name = 'minatar'",
    "MinAtarCNN.padding = 'SAME'",  # Dopamine's MinatarDQNNetwork: conv 16 SAME, no hidden layer
    "MinAtarCNN.hidden_units = ()",
    "create_optimizer.name = 'adam'",
    "create_optimizer.learning_rate = 0.00025",
    "create_optimizer.eps = 3.125e-4",
    "ReplayBuffer.capacity = 100000",
    "Runner.max_steps_per_episode = 100000000",
]
CASES = {
    "dqn-minatar": {
        "gin_files": ["dqn/minatar"],
        "bindings": _DQN_MINATAR,
        "dopamine": ["--agent", "dqn", "--env", "minatar:breakout"],
        "steps": 10000,
    },
    "dqn-pong": {
        "gin_files": ["dqn/atari"],
        "bindings": ["create_environment.name = 'atari:Pong'", "DQNAgent.min_replay_history = 1000"],
        "dopamine": ["--agent", "dqn", "--env", "atari:Pong", "--min_replay_history", "1000"],
        "steps": 2000,
    },
}


def register_rainbow_case() -> None:
    """Adds the Rainbow MinAtar case when the Rainbow agent is available."""
    CASES["rainbow-minatar"] = {
        "gin_files": ["rainbow/minatar"],
        "bindings": [
            "create_environment.name = 'minatar:breakout'",
            "RainbowAgent.stack_size = 1",
            "RainbowAgent.num_atoms = 51",
            "RainbowAgent.vmax = 100.0",
            "RainbowAgent.gamma = 0.99",
            "RainbowAgent.update_horizon = 3",
            "RainbowAgent.min_replay_history = 1000",
            "RainbowAgent.update_period = 4",
            "RainbowAgent.target_update_period = 1000",
            "RainbowAgent.replay_scheme = 'prioritized'",
            "RainbowAgent.double_dqn = False",
            "RainbowAgent.dueling = False",
            "RainbowAgent.noisy = False",
            "RainbowAgent.batch_size = 32",
            "create_torso.name = 'minatar'",
            "MinAtarCNN.padding = 'SAME'",
            "MinAtarCNN.hidden_units = ()",
            "create_optimizer.name = 'adam'",
            "create_optimizer.learning_rate = 0.00025",
            "create_optimizer.eps = 3.125e-4",
            "PrioritizedReplayBuffer.capacity = 100000",
            "Runner.max_steps_per_episode = 100000000",
        ],
        "dopamine": ["--agent", "rainbow", "--env", "minatar:breakout"],
        "steps": 5000,
    }


def measure_accumbens(gin_files: list[str], bindings: list[str], steps: int, warmup: int) -> dict:
    """Runs in the worker subprocess: warm-up phase (fills replay, compiles), then a timed phase."""
    from accumbens import train
    from accumbens.runners.runner import Runner

    train.parse_config(gin_files, bindings)
    with tempfile.TemporaryDirectory() as base_dir:
        runner = Runner(base_dir=base_dir, tensorboard=False, progress_bar=False)
        agent = runner.agent
        warm = runner._run_phase(0, 0, max(warmup, agent.min_replay_history + 2 * agent.update_period), "train")
        agent.pop_training_metrics()
        timed = runner._run_phase(0, 0, steps, "train")
        updates = agent.pop_training_metrics()["update_steps"]
    return {
        "steps": timed["train_steps"],
        "seconds": timed["train_seconds"],
        "steps_per_second": timed["train_steps_per_second"],
        "updates": updates,
        "warmup_steps": warm["train_steps"],
    }


def _run_worker(args: list[str], python: str = sys.executable) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    out = subprocess.run([python, *args], capture_output=True, text=True, env=env, cwd=os.path.dirname(HERE))
    if out.returncode != 0:
        raise RuntimeError(f"worker {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", default=None, help="subset of cases (default: all)")
    parser.add_argument("--steps", type=int, default=None, help="timed agent steps (default: per case)")
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-dopamine", action="store_true")
    parser.add_argument("--dopamine-python", default=os.environ.get("DOPAMINE_PYTHON", DEFAULT_DOPAMINE_PYTHON))
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args()
    try:
        import accumbens.agents.rainbow  # noqa: F401

        register_rainbow_case()
    except ImportError:
        pass
    if args.worker:  # subprocess mode: one accumbens measurement, one JSON line
        case = CASES[args.worker]
        print(json.dumps(measure_accumbens(case["gin_files"], case["bindings"], args.steps, args.warmup)))
        return 0

    names = args.cases or list(CASES)
    use_dopamine = not args.no_dopamine
    if use_dopamine and not os.path.exists(args.dopamine_python):
        print(f"Dopamine's venv python not found at {args.dopamine_python}; run benchmarks/dopamine/setup_venv.sh "
              "or pass --no-dopamine", file=sys.stderr)
        return 2
    results = {}
    for name in names:
        case = CASES[name]
        steps = args.steps or case["steps"]
        runs = {"accumbens": [], "dopamine": []}
        for repeat in range(args.repeats):
            ours = _run_worker([os.path.join(HERE, "throughput.py"), "--worker", name, "--steps", str(steps), "--warmup", str(args.warmup)])
            runs["accumbens"].append(ours)
            print(f"  {name} repeat {repeat}: accumbens {ours['steps_per_second']:.0f} steps/s", flush=True)
            if use_dopamine:
                theirs = _run_worker(
                    [os.path.join(HERE, "dopamine", "measure.py"), *case["dopamine"], "--steps", str(steps), "--warmup", str(args.warmup)],
                    python=args.dopamine_python,
                )
                runs["dopamine"].append(theirs)
                print(f"  {name} repeat {repeat}: dopamine  {theirs['steps_per_second']:.0f} steps/s", flush=True)
        summary = {k: statistics.median(r["steps_per_second"] for r in v) for k, v in runs.items() if v}
        if "dopamine" in summary:
            summary["ratio"] = summary["accumbens"] / summary["dopamine"]
            # Each repeat runs the two back to back, so its ratio sees the same machine load.
            summary["median_paired_ratio"] = statistics.median(
                a["steps_per_second"] / d["steps_per_second"] for a, d in zip(runs["accumbens"], runs["dopamine"])
            )
        results[name] = {"median_steps_per_second": summary, "runs": runs, "steps": steps}

    print()
    print(f"{'case':<18}{'accumbens steps/s':>20}{'dopamine steps/s':>20}{'ratio':>8}{'paired':>8}")
    for name, r in results.items():
        s = r["median_steps_per_second"]
        theirs = f"{s['dopamine']:.0f}" if "dopamine" in s else "-"
        ratio = f"{s['ratio']:.2f}x" if "ratio" in s else "-"
        paired = f"{s['median_paired_ratio']:.2f}x" if "ratio" in s else "-"
        print(f"{name:<18}{s['accumbens']:>20.0f}{theirs:>20}{ratio:>8}{paired:>8}")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.platform(), "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(), "repeats": args.repeats, "warmup": args.warmup}
    with open(args.output, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
