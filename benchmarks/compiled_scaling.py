"""Multi-device scaling of the compiled runner (issue 9): one device against all devices, one process.

    python benchmarks/compiled_scaling.py                                 # 64, 256, 1024 seeds
    XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \
        python benchmarks/compiled_scaling.py --seeds 4,8 --steps 200 --capacity 1000   # CPU check

Case: DQN on gymnax MinAtar Breakout with the MinAtar paper's hyperparameters (`dqn/minatar.gin`,
one update per environment step per seed, batch 32), as in `compiled_throughput.py`, except the
replay capacity (`--capacity`, default 10k per seed instead of 100k: 1024 seeds of a 100k device
replay would need about 80 GB on one card; capacity changes memory, not the work per step).

For every seed count the same program runs twice in the same process: on the first device only
(`CompiledRunner(use_all_devices=False)`) and with the seed axis sharded over all visible devices.
Each run does one untimed training phase of `--steps` agent steps per seed (compilation and replay
warm-up; `min_replay_history` is lowered to min(5000, steps)) and then one timed phase of the same
length, in which every step does its update. Reported: aggregate environment steps per second
(training included) and the scaling efficiency rate(N devices) / (N x rate(1 device)).

Device-count independence: both runs start from the same seeds, so each seed must end with the
same parameters and the same completed-episode returns. The script compares, per seed, the sum
of squares of all network parameters (relative difference) and the returns of the episodes
completed in both phases (absolute difference) between the two runs.

Results go to `benchmarks/results/compiled_scaling.json` (or `--output`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]  # don't shadow modules

from accumbens.atomic import atomic_write  # noqa: E402
RESULTS = os.path.join(HERE, "results", "compiled_scaling.json")


def _configure(capacity: int, min_replay: int, conv_impl: str) -> None:
    from accumbens import train

    train.parse_config(
        ["dqn/minatar"],
        [
            "create_environment.name = 'minatar:breakout'",
            f"ReplayBuffer.capacity = {capacity}",
            f"DQNAgent.min_replay_history = {min_replay}",
            f"MinAtarCNN.conv_impl = '{conv_impl}'",
        ],
    )


def run_case(num_seeds: int, steps: int, capacity: int, conv_impl: str, all_devices: bool) -> dict:
    """Times one training phase after a warm-up phase; returns rates and per-seed fingerprints."""
    import jax
    import jax.numpy as jnp

    from accumbens.runners.compiled import CompiledRunner

    _configure(capacity, min(5000, steps), conv_impl)
    with tempfile.TemporaryDirectory() as tmp:
        runner = CompiledRunner(
            tmp, num_seeds=num_seeds, training_steps=steps, evaluation_steps=0, num_iterations=2,
            tensorboard=False, use_all_devices=all_devices,
        )
        start = time.perf_counter()
        states = jax.block_until_ready(runner.init_states())
        states, warm = runner.train_phase(states, 0)
        warm = np.asarray(jax.device_get(warm))
        first = time.perf_counter() - start
        start = time.perf_counter()
        states, timed = runner.train_phase(states, 1)
        jax.block_until_ready((states, timed))
        seconds = time.perf_counter() - start
        timed = np.asarray(jax.device_get(timed))
        leaves = jax.tree.leaves(states.agent.params)
        squares = sum(jnp.sum(jnp.square(x.astype(jnp.float32)).reshape(num_seeds, -1), axis=1) for x in leaves)
        params_sq = np.asarray(jax.device_get(squares), np.float64)
        updates = np.asarray(jax.device_get(states.update_count))
        devices = int(runner.mesh.devices.size)
        steps_per_seed = runner.steps_per_phase
    completed = np.concatenate([warm, timed], axis=1).reshape(num_seeds, -1)
    returns_sum = np.nansum(completed, axis=1)
    episodes = np.sum(~np.isnan(completed), axis=1)
    return {
        "num_seeds": num_seeds,
        "devices": devices,
        "steps_per_seed": steps_per_seed,
        "updates_per_seed_timed": int(updates[0]),
        "seconds": seconds,
        "first_phase_seconds_incl_compile": first,
        "steps_per_second_aggregate": steps_per_seed * num_seeds / seconds,
        "per_seed": {
            "params_sum_of_squares": params_sq.tolist(),
            "returns_sum": returns_sum.tolist(),
            "episodes": episodes.astype(int).tolist(),
        },
    }


def compare(one: dict, many: dict) -> dict:
    """Per-seed differences between the one-device and the all-device run."""
    a, b = one["per_seed"], many["per_seed"]
    pa, pb = np.asarray(a["params_sum_of_squares"]), np.asarray(b["params_sum_of_squares"])
    return {
        "params_max_rel_diff": float(np.max(np.abs(pa - pb) / np.maximum(np.abs(pa), 1e-30))),
        "returns_max_abs_diff": float(np.max(np.abs(np.asarray(a["returns_sum"]) - np.asarray(b["returns_sum"])))),
        "episode_counts_equal": a["episodes"] == b["episodes"],
    }


def table(rows: list[dict]) -> str:
    lines = [f"{'seeds':>6} {'devices':>7} {'steps/s (aggregate)':>20} {'efficiency':>10} {'params rel diff':>16} {'returns diff':>12}"]
    for row in rows:
        eff = row.get("efficiency")
        cmp = row.get("vs_one_device", {})
        lines.append(
            f"{row['num_seeds']:>6} {row['devices']:>7} {row['steps_per_second_aggregate']:>20,.0f} "
            f"{'' if eff is None else format(eff, '.3f'):>10} "
            f"{format(cmp['params_max_rel_diff'], '.2e') if cmp else '':>16} "
            f"{format(cmp['returns_max_abs_diff'], '.2g') if cmp else '':>12}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="64,256,1024", help="comma-separated seed counts")
    parser.add_argument("--steps", type=int, default=2000, help="agent steps per seed in each phase")
    parser.add_argument("--capacity", type=int, default=10_000, help="replay capacity per seed")
    parser.add_argument("--conv_impl", default="patches", help="MinAtarCNN.conv_impl ('patches' or 'xla')")
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args(argv)

    import jax

    devices = jax.devices()
    payload = {
        "benchmark": "compiled_scaling",
        "case": "dqn-minatar-breakout",
        "device": f"{devices[0].platform} {getattr(devices[0], 'device_kind', '')}",
        "device_count": len(devices),
        "jax": jax.__version__,
        "python": sys.version.split()[0],
        "machine": platform.node(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "args": vars(args),
        "rows": [],
    }

    def save() -> None:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        atomic_write(args.output, lambda f: json.dump(payload, f, indent=1), text=True)

    for num_seeds in (int(s) for s in args.seeds.split(",")):
        print(f"[compiled_scaling] {num_seeds} seeds on 1 device", flush=True)
        one = run_case(num_seeds, args.steps, args.capacity, args.conv_impl, all_devices=False)
        payload["rows"].append(one)
        save()
        if len(devices) > 1:
            print(f"[compiled_scaling] {num_seeds} seeds on all {len(devices)} devices", flush=True)
            many = run_case(num_seeds, args.steps, args.capacity, args.conv_impl, all_devices=True)
            many["efficiency"] = many["steps_per_second_aggregate"] / (many["devices"] * one["steps_per_second_aggregate"])
            many["vs_one_device"] = compare(one, many)
            payload["rows"].append(many)
            save()
        print(table(payload["rows"][-2:]), flush=True)
    print(table(payload["rows"]))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
