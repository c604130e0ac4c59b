"""Overhead of the research agents' extra heads and losses: update steps per second against C51.

Each agent is built from the registry (`accumbens.agents.registry`) by its packaged gin file for
the case (`<name>/minatar.gin` or `<name>/atari.gin`), with the same C51 core forced on every
agent where its constructor has the setting (51 atoms, 1-step returns, uniform replay, no double
DQN, dueling or noisy nets, the same batch size and torso), so that the difference is only what
the agent adds. The baseline 'c51' is the registry's 'rainbow' agent with those settings.

One process, one fixed random batch per case; every agent's jitted pure `update` is timed on it
(compilation excluded), the agents taking turns within each repeat so that machine load hits them
alike. Reported: the median over repeats of update steps per second, and the median of the
per-repeat ratios agent / C51 (paired, so load drifts cancel).

    python benchmarks/research_agents_overhead.py                       # CPU, MinAtar (minutes)
    python benchmarks/research_agents_overhead.py --cases minatar atari --output OUT.json   # GPU

Agents: 'deepmdp' and 'hyperbolic' when the registry has them, plus 'deepmdp-no-penalty' (DeepMDP
with the gradient penalty off, whose double backprop is skipped) to break DeepMDP's cost down.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
RESEARCH_AGENTS = ("deepmdp", "hyperbolic")
CASES = {
    # observation shape (without stack), stack, actions, torso bindings
    "minatar": dict(shape=(10, 10, 4), stack=1, actions=6, dtype=np.uint8, gin="minatar",
                    torso=["create_torso.name = 'minatar'", "MinAtarCNN.features = 16", "MinAtarCNN.hidden_units = ()",
                           "MinAtarCNN.padding = 'SAME'"], hidden_units=(), vmax=100.0),
    "atari": dict(shape=(84, 84), stack=4, actions=18, dtype=np.uint8, gin="atari",
                  torso=["create_torso.name = 'nature_conv'"], hidden_units=(512,), vmax=10.0),
}
# Extra rows: a registry agent with extra bindings, to break an agent's overhead down.
VARIANTS = {"deepmdp-no-penalty": ("deepmdp", ["DeepMDPAgent.gradient_penalty_weight = 0.0"])}
C51_CORE = dict(num_atoms=51, update_horizon=1, replay_scheme="'uniform'", double_dqn=False, dueling=False, noisy=False)


def available_agents() -> list[str]:
    from accumbens.agents.registry import known_agents

    names = ["c51"] + [name for name in RESEARCH_AGENTS if name in known_agents()]
    return names + [v for v, (base, _) in VARIANTS.items() if base in names]


def _gin_file(name: str, case: dict) -> str:
    from accumbens import train

    folder = "rainbow" if name == "c51" else name
    return train.resolve_gin_file(f"{folder}/{case['gin']}")


def build(name: str, case: dict, batch_size: int):
    """The host agent `name` for `case` with the shared C51 core bound; returns (pure agent, state)."""
    from accumbens import train
    from accumbens.agents.registry import _REGISTRY, create_agent

    name, extra = VARIANTS.get(name, (name, []))
    cls = _REGISTRY["rainbow" if name == "c51" else name]()
    accepted = inspect.signature(cls.__init__).parameters
    core = {**C51_CORE, "batch_size": batch_size, "hidden_units": case["hidden_units"], "vmax": case["vmax"],
            "stack_size": case["stack"], "min_replay_history": 100}
    bindings = [f"{cls.__name__}.{k} = {v}" for k, v in core.items() if k in accepted]
    bindings += case["torso"] + ["ReplayBuffer.capacity = 1000", "PrioritizedReplayBuffer.capacity = 1000"] + extra
    if name == "c51":
        bindings.append("create_agent.agent_name = 'rainbow'")
    train.parse_config([_gin_file(name, case)], bindings)
    host = create_agent(num_actions=case["actions"], observation_shape=case["shape"], observation_dtype=case["dtype"], seed=0)
    return host.agent, host.state, bindings


def make_batch(case: dict, batch_size: int, seed: int = 0):
    from accumbens.replay.batch import Batch

    rng = np.random.default_rng(seed)
    shape = (batch_size,) + tuple(case["shape"]) + (case["stack"],)
    high = 2 if case["gin"] == "minatar" else 256
    return jax.device_put(Batch(
        observation=rng.integers(0, high, shape).astype(case["dtype"]),
        action=rng.integers(0, case["actions"], batch_size).astype(np.int32),
        reward=rng.normal(size=batch_size).astype(np.float32),
        next_observation=rng.integers(0, high, shape).astype(case["dtype"]),
        discount=np.full(batch_size, 0.99, np.float32),
        weight=np.ones(batch_size, np.float32),
        index=np.arange(batch_size),
    ))


def time_updates(update, state, batch, steps: int) -> tuple[float, object]:
    start = time.perf_counter()
    for i in range(steps):
        state, metrics = update(state, batch, jax.random.PRNGKey(i))
    jax.block_until_ready(metrics["loss"])
    return steps / (time.perf_counter() - start), state


def run_case(case_name: str, args) -> dict:
    case = CASES[case_name]
    batch = make_batch(case, args.batch_size)
    agents = {}
    for name in args.agents:
        pure, state, bindings = build(name, case, args.batch_size)
        update = jax.jit(pure.update)
        start = time.perf_counter()
        state, metrics = update(state, batch, jax.random.PRNGKey(0))
        jax.block_until_ready(metrics["loss"])
        agents[name] = {"update": update, "state": state, "compile_seconds": time.perf_counter() - start,
                        "bindings": bindings, "rates": [],
                        "params": int(sum(np.size(x) for x in jax.tree.leaves(state.params)))}
    for _ in range(args.repeats):
        for name, a in agents.items():
            rate, a["state"] = time_updates(a["update"], a["state"], batch, args.steps)
            a["rates"].append(rate)
    base = np.array(agents["c51"]["rates"])
    rows = []
    for name, a in agents.items():
        rates = np.array(a["rates"])
        rows.append({"agent": name, "steps_per_second_median": float(np.median(rates)),
                     "ratio_to_c51_median": float(np.median(rates / base)),
                     "ratio_to_c51_min": float(np.min(rates / base)), "ratio_to_c51_max": float(np.max(rates / base)),
                     "rates": [float(r) for r in rates], "compile_seconds": a["compile_seconds"],
                     "parameters": a["params"], "bindings": a["bindings"]})
    return {"case": case_name, "batch_size": args.batch_size, "steps_per_repeat": args.steps, "repeats": args.repeats, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["minatar"], choices=sorted(CASES))
    parser.add_argument("--agents", nargs="+", default=None, help="default: c51 and every research agent in the registry")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50, help="updates per timed block")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output", default=None, help="default: benchmarks/results/research_agents_overhead_<platform>.json")
    args = parser.parse_args()
    args.agents = args.agents or available_agents()
    if "c51" not in args.agents:
        args.agents = ["c51"] + args.agents
    device = jax.devices()[0]
    results = [run_case(name, args) for name in args.cases]
    for r in results:
        print(f"\n{r['case']} (batch {r['batch_size']}, {device.platform} {device.device_kind}, load {os.getloadavg()[0]:.1f})")
        print("| agent | updates/s (median) | ratio to C51 (median, paired) | min-max | parameters |\n|---|---|---|---|---|")
        for row in r["rows"]:
            print(f"| {row['agent']} | {row['steps_per_second_median']:.1f} | {row['ratio_to_c51_median']:.3f} | "
                  f"{row['ratio_to_c51_min']:.3f}-{row['ratio_to_c51_max']:.3f} | {row['parameters']:,} |")
    out = {
        "benchmark": "research_agents_overhead",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": f"{device.platform} {device.device_kind}",
        "jax": jax.__version__,
        "python": platform.python_version(),
        "load_average_at_end": os.getloadavg(),
        "args": vars(args),
        "results": results,
    }
    output = args.output or os.path.join(RESULTS, f"research_agents_overhead_{device.platform}.json")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
