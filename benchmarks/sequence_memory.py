"""Partial observability: SequenceDQN (power-attention encoder) against 4-frame-stack DQN (issue 6).

Two tasks, each agent configured by the packaged gin files in accumbens/configs/sequence/:
  memory    the memory corridor of length 100 (a cue at the first step decides the exit 100 steps
            later): greedy success rate against training steps, `--seeds` seeds per agent
            (memory.gin vs memory_dqn.gin). Goal: SequenceDQN >= 95%, DQN near 50% (chance).
  breakout  flickering MinAtar Breakout (observations zeroed with probability 0.5): training
            return against frames, at equal frames for both agents (flicker_minatar.gin vs
            flicker_minatar_dqn.gin), plus a final greedy evaluation.

Every (task, agent, seed) run is its own process, all started at once (`--jobs` at a time), so
on a GPU machine with 16 cores one command runs them side by side. A run stops at its step budget
or after `--max_minutes` of wall time, whichever comes first; the table says how many steps each
run reached. Writes benchmarks/results/sequence_memory.json and sequence_memory.png.

  python benchmarks/sequence_memory.py                       # GPU: the full benchmark
  python benchmarks/sequence_memory.py --tiny --out_name sequence_memory_cpu_tiny   # CPU check
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")

CONFIGS = {
    ("memory", "sequence_dqn"): "sequence/memory.gin",
    ("memory", "dqn_4_frames"): "sequence/memory_dqn.gin",
    ("breakout", "sequence_dqn"): "sequence/flicker_minatar.gin",
    ("breakout", "dqn_4_frames"): "sequence/flicker_minatar_dqn.gin",
}

# Full-size budgets (GPU) and the tiny CPU check. Memory: steps, evaluation every, eval episodes.
# The last evaluation of every run plays `final_episodes` episodes.
FULL = {"memory": dict(steps=100_000, eval_every=10_000, eval_episodes=20, final_episodes=50, bindings=[]),
        "breakout": dict(steps=150_000, eval_every=15_000, eval_episodes=5, final_episodes=10, bindings=[])}
TINY = {
    "memory": dict(steps=1_500, eval_every=500, eval_episodes=4, final_episodes=10, bindings=[
        "create_environment.name = 'memory:corridor-6'", "SequenceReplayBuffer.context_length = 8",
        "SequenceDQNAgent.min_replay_history = 300", "DQNAgent.min_replay_history = 300",
        "SequenceDQNAgent.epsilon_decay_period = 600", "DQNAgent.epsilon_decay_period = 600",
        "SequenceDQNAgent.batch_size = 16", "DQNAgent.batch_size = 16"]),
    "breakout": dict(steps=600, eval_every=300, eval_episodes=1, final_episodes=1, bindings=[
        "SequenceReplayBuffer.context_length = 8", "SequenceDQNAgent.min_replay_history = 200",
        "DQNAgent.min_replay_history = 200", "SequenceDQNAgent.batch_size = 8", "DQNAgent.batch_size = 8"]),
}
EVAL_STEP_CAP = 2_000  # greedy Breakout episodes are cut here (MinAtar episodes can run long)


# ------------------------------------------------------------------------------------- one run
def run_one(task: str, agent_name: str, seed: int, budget: dict, max_seconds: float) -> dict:
    """Trains one agent on one task; returns its learning curve."""
    from accumbens import train
    from accumbens.agents.registry import create_agent
    from accumbens.environments import create_environment

    train.parse_config([CONFIGS[(task, agent_name)]], budget["bindings"])
    env = create_environment()
    eval_env = create_environment()
    agent = create_agent(
        num_actions=int(env.action_space.n),
        observation_shape=env.observation_space.shape,
        observation_dtype=env.observation_space.dtype,
        seed=seed,
    )
    env.reset(seed=seed)
    eval_env.reset(seed=10_000 + seed)
    start = time.perf_counter()
    steps, episode_returns, episode_lengths, curve = 0, [], [], []

    def play(environment, training: bool) -> tuple[float, int, bool]:
        agent.eval_mode = not training
        observation, _ = environment.reset()
        action = agent.begin_episode(observation)
        total, length = 0.0, 0
        while True:
            observation, reward, terminated, truncated, info = environment.step(action)
            total += float(reward)
            length += 1
            cut = not training and length >= EVAL_STEP_CAP
            if terminated or truncated or cut:
                agent.end_episode(float(reward), bool(terminated), observation)
                return total, length, bool(info.get("success", False))
            action = agent.step(float(reward), observation)

    def evaluate(episodes: int):
        results = [play(eval_env, training=False) for _ in range(episodes)]
        record = {
            "steps": steps,
            "seconds": time.perf_counter() - start,
            "eval_return": float(np.mean([r[0] for r in results])),
            "train_return": float(np.mean(episode_returns[-20:])) if episode_returns else float("nan"),
            "eval_episodes": episodes,
        }
        if task == "memory":
            record["success_rate"] = float(np.mean([r[2] for r in results]))
        curve.append(record)
        print(f"[{task} {agent_name} seed {seed}] {record}", flush=True)

    next_eval = budget["eval_every"]
    timed_out = False
    while steps < budget["steps"]:
        episode_return, length, _ = play(env, training=True)
        steps += length
        episode_returns.append(episode_return)
        episode_lengths.append(length)
        timed_out = time.perf_counter() - start > max_seconds
        if steps >= budget["steps"] or timed_out:
            break
        if steps >= next_eval:
            evaluate(budget["eval_episodes"])
            next_eval += budget["eval_every"]
    evaluate(budget["final_episodes"])
    return {
        "task": task, "agent": agent_name, "seed": seed, "config": CONFIGS[(task, agent_name)],
        "steps": steps, "timed_out": timed_out, "seconds": time.perf_counter() - start,
        "curve": curve, "episode_returns": episode_returns, "episode_lengths": episode_lengths,
    }


# ----------------------------------------------------------------------------------- the driver
def summarise(runs: list[dict]) -> dict:
    summary = {}
    for task in ("memory", "breakout"):
        for agent_name in ("sequence_dqn", "dqn_4_frames"):
            mine = [r for r in runs if r["task"] == task and r["agent"] == agent_name]
            if not mine:
                continue
            row = {"seeds": len(mine), "steps": [r["steps"] for r in mine], "timed_out": any(r["timed_out"] for r in mine)}
            if task == "memory":
                final = [r["curve"][-1]["success_rate"] for r in mine]
                row["final_success_rate"] = final
                row["final_success_mean"] = float(np.mean(final))
            else:
                frames = min(r["steps"] for r in runs if r["task"] == task)  # equal frames for both agents
                last = []
                for r in mine:  # mean training return of the episodes ending in the last 20% before `frames`
                    ends = np.cumsum(r["episode_lengths"])
                    returns = np.asarray(r["episode_returns"])
                    window = (ends <= frames) & (ends > 0.8 * frames)
                    last.append(float(np.mean(returns[window])) if window.any() else float("nan"))
                row["equal_frames"] = frames
                row["train_return_last_20pct"] = last
                row["train_return_mean"] = float(np.nanmean(last))
                row["final_eval_return"] = [r["curve"][-1]["eval_return"] for r in mine]
            summary[f"{task}/{agent_name}"] = row
    return summary


def plot(runs: list[dict], path: str, memory_title: str = "memory corridor, length 100") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in ("memory", "breakout") if any(r["task"] == t for r in runs)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    colours = {"sequence_dqn": "tab:blue", "dqn_4_frames": "tab:orange"}
    for ax, task in zip(axes[0], tasks):
        for r in (r for r in runs if r["task"] == task):
            x = [p["steps"] for p in r["curve"]]
            y = [p["success_rate"] if task == "memory" else p["train_return"] for p in r["curve"]]
            ax.plot(x, y, color=colours[r["agent"]], alpha=0.8, label=f"{r['agent']}" if r["seed"] == 0 else None)
        if task == "memory":
            ax.axhline(0.5, color="grey", ls=":", label="chance")
            ax.axhline(0.95, color="grey", ls="--", label="goal 95%")
            ax.set_ylabel("greedy success rate")
            ax.set_title(memory_title)
        else:
            ax.set_ylabel("training return (last 20 episodes)")
            ax.set_title("flickering MinAtar Breakout (p = 0.5)")
        ax.set_xlabel("environment steps")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="memory,breakout")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--breakout_seeds", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="a few hundred steps on small settings (CPU check)")
    parser.add_argument("--max_minutes", type=float, default=6.0, help="wall-time cap on the training of each run")
    parser.add_argument("--jobs", type=int, default=0, help="runs at a time (0: all at once)")
    parser.add_argument("--out_name", default="sequence_memory")
    parser.add_argument("--worker", nargs=4, metavar=("TASK", "AGENT", "SEED", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    budgets = TINY if args.tiny else FULL

    if args.worker:
        task, agent_name, seed, out = args.worker
        result = run_one(task, agent_name, int(seed), budgets[task], args.max_minutes * 60)
        with open(out, "w") as f:
            json.dump(result, f)
        return

    tasks = args.tasks.split(",")
    plan = [(t, a, s) for t in tasks for a in ("sequence_dqn", "dqn_4_frames")
            for s in range(args.seeds if t == "memory" else args.breakout_seeds)]
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    env.setdefault("OMP_NUM_THREADS", "1")
    jobs = args.jobs or len(plan)
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        pending, running, outputs = list(plan), [], []
        while pending or running:
            while pending and len(running) < jobs:
                task, agent_name, seed = pending.pop(0)
                out = os.path.join(tmp, f"{task}_{agent_name}_{seed}.json")
                command = [sys.executable, os.path.abspath(__file__), "--worker", task, agent_name, str(seed), out,
                           "--max_minutes", str(args.max_minutes)] + (["--tiny"] if args.tiny else [])
                running.append((subprocess.Popen(command, env=env), out))
            time.sleep(1.0)
            for proc, out in list(running):
                if proc.poll() is not None:
                    running.remove((proc, out))
                    if proc.returncode != 0:
                        raise SystemExit(f"run {out} failed with exit code {proc.returncode}")
                    outputs.append(out)
        runs = []
        for out in outputs:
            with open(out) as f:
                runs.append(json.load(f))
    runs.sort(key=lambda r: (r["task"], r["agent"], r["seed"]))
    summary = summarise(runs)

    import jax

    device = str(jax.devices()[0].device_kind) if jax.default_backend() != "cpu" else "cpu"
    print(f"\n{'task/agent':28s} {'seeds':>5s} {'steps':>22s}  result")
    for key, row in summary.items():
        if "final_success_mean" in row:
            result = f"greedy success {row['final_success_mean']:.2f} (per seed {', '.join(f'{x:.2f}' for x in row['final_success_rate'])})"
        else:
            result = (f"train return {row['train_return_mean']:.2f} over the last 20% of {row['equal_frames']} frames "
                      f"(per seed {', '.join(f'{x:.2f}' for x in row['train_return_last_20pct'])}); final greedy "
                      f"{', '.join(f'{x:.2f}' for x in row['final_eval_return'])}")
        print(f"{key:28s} {row['seeds']:5d} {str(row['steps']):>22s}  {result}")
    os.makedirs(RESULTS, exist_ok=True)
    payload = {
        "benchmark": "sequence_memory", "device": device, "tiny": args.tiny, "wall_seconds": time.time() - start,
        "max_minutes": args.max_minutes, "budgets": {t: {k: v for k, v in budgets[t].items()} for t in tasks},
        "summary": summary,
        "runs": runs,
    }
    with open(os.path.join(RESULTS, f"{args.out_name}.json"), "w") as f:
        json.dump(payload, f, indent=1)
    plot(runs, os.path.join(RESULTS, f"{args.out_name}.png"),
         "memory corridor, length 6 (tiny check)" if args.tiny else "memory corridor, length 100")
    print(f"wrote {os.path.join(RESULTS, args.out_name)}.json/.png ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
