"""Environment steps per second of the compiled runner (training included) vs the host runner.

    python benchmarks/compiled_throughput.py                          # 1, 8, 64, 256 seeds
    python benchmarks/compiled_throughput.py --seeds 1,8 --steps 2000 --host_steps 2000 --capacity 10000

Case: DQN on MinAtar Breakout with the MinAtar paper's hyperparameters (`dqn/minatar.gin`: one
update per environment step per seed, batch 32, RMSProp, replay 100k), one environment per seed.
The compiled runner (gymnax Breakout-MinAtar, `CompiledRunner`) runs `num_seeds` seeds in one
program; the host runner (`Runner`, the `minatar` package) runs one seed, on the same machine, in
the same process, in the same run.

What is timed: one full training phase of `--steps` agent steps per seed *after* a first phase of
the same length (which includes compilation and fills the replay past `min_replay_history`, so
that every step of the timed phase does its update). `min_replay_history` is lowered to
min(5000, steps) for that reason. Rates are environment steps per second summed over seeds
("aggregate") and per seed. The host runner is timed the same way (its second iteration).
The table also extrapolates the wall time of a 5M-step run (the MinAtar paper's budget) for the
64-seed case from the measured rate; it is an extrapolation, not a measurement.

Results go to `benchmarks/results/compiled_throughput.json` (or `--output`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "compiled_throughput.json")
PAPER_STEPS = 5_000_000


def _configure(
    capacity: int, min_replay: int, conv_impl: str = "xla", bindings: tuple = (), gin_files: tuple = ("dqn/minatar",)
) -> None:
    from accumbens import train

    train.parse_config(
        list(gin_files),
        [
            "create_environment.name = 'minatar:breakout'",
            f"ReplayBuffer.capacity = {capacity}",
            f"DQNAgent.min_replay_history = {min_replay}",
            f"MinAtarCNN.conv_impl = '{conv_impl}'",
            *bindings,
        ],
    )


def compiled_case(
    num_seeds: int, steps: int, capacity: int, num_envs: int, unroll: int = 1, conv_impl: str = "xla", bindings: tuple = (),
    gin_files: tuple = ("dqn/minatar",),
) -> dict:
    import jax

    from accumbens.runners.compiled import CompiledRunner

    _configure(capacity, min(5000, steps), conv_impl, bindings, gin_files)
    with tempfile.TemporaryDirectory() as tmp:
        runner = CompiledRunner(
            tmp, num_seeds=num_seeds, num_envs=num_envs, training_steps=steps, evaluation_steps=0,
            num_iterations=2, tensorboard=False, scan_unroll=unroll,
        )
        start = time.perf_counter()
        states = jax.block_until_ready(runner.init_states())
        states, _ = runner.train_phase(states, 0)
        jax.block_until_ready(states)
        first = time.perf_counter() - start
        start = time.perf_counter()
        states, completed = runner.train_phase(states, 1)
        jax.block_until_ready((states, completed))
        seconds = time.perf_counter() - start
        updates = int(jax.device_get(states.update_count)[0])
        devices = runner.mesh.devices.size
    per_seed = runner.steps_per_phase / seconds
    return {
        "runner": "compiled",
        "conv_impl": conv_impl,
        "num_seeds": num_seeds,
        "num_envs": num_envs,
        "scan_unroll": unroll,
        "devices": int(devices),
        "steps_per_seed": runner.steps_per_phase,
        "updates_per_seed": updates,
        "seconds": seconds,
        "first_phase_seconds_incl_compile": first,
        "steps_per_second_per_seed": per_seed,
        "steps_per_second_aggregate": per_seed * num_seeds,
    }


def host_case(steps: int, capacity: int, bindings: tuple = ()) -> dict:
    from accumbens.runners.runner import Runner

    _configure(capacity, min(5000, steps), "xla", bindings)
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(tmp, num_iterations=2, training_steps=steps, evaluation_steps=0, tensorboard=False, progress_bar=False)
        records = runner.run_experiment()
    timed = records[1]
    return {
        "runner": "host",
        "conv_impl": "xla",
        "num_seeds": 1,
        "num_envs": 1,
        "devices": 1,
        "steps_per_seed": timed["train_steps"],
        "updates_per_seed": timed["update_steps"],
        "seconds": timed["train_seconds"],
        "first_phase_seconds_incl_compile": records[0]["train_seconds"],
        "steps_per_second_per_seed": timed["train_steps_per_second"],
        "steps_per_second_aggregate": timed["train_steps_per_second"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,8,64,256", help="comma-separated seed counts for the compiled runner")
    parser.add_argument("--steps", type=int, default=20_000, help="timed agent steps per seed (compiled)")
    parser.add_argument("--host_steps", type=int, default=5_000, help="timed agent steps (host runner)")
    parser.add_argument("--capacity", type=int, default=100_000, help="replay capacity per seed (paper: 100k)")
    parser.add_argument("--num_envs", type=int, default=1, help="environments per seed (compiled)")
    parser.add_argument("--unroll", type=int, default=1, help="lax.scan unroll of the compiled training loop")
    parser.add_argument("--no_host", action="store_true", help="skip the host runner")
    parser.add_argument("--conv_impls", default="xla", help="MinAtarCNN.conv_impl values to compare (compiled), e.g. xla,patches")
    parser.add_argument("--bindings", nargs="*", default=[], help="extra gin bindings for every case")
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args(argv)

    import jax

    device = jax.devices()[0]
    payload = {
        "benchmark": "compiled_throughput",
        "case": "dqn-minatar-breakout",
        "device": f"{device.platform} {getattr(device, 'device_kind', '')}",
        "device_count": len(jax.devices()),
        "jax": jax.__version__,
        "python": sys.version.split()[0],
        "machine": platform.node(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "args": vars(args),
        "results": [],
        "extrapolation_5M_64_seeds": {},
    }
    results = payload["results"]
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)

    def save():  # after every case, so that a run cut short keeps what it measured
        with open(args.output, "w") as f:
            json.dump(payload, f, indent=1)

    if not args.no_host:
        results.append(host_case(args.host_steps, args.capacity, tuple(args.bindings)))
        print(f"host: {results[-1]['steps_per_second_aggregate']:.0f} steps/s", flush=True)
        save()
    cases = [(n, impl) for n in [int(s) for s in args.seeds.split(",") if s] for impl in args.conv_impls.split(",")]
    for num_seeds, conv_impl in cases:
        results.append(compiled_case(num_seeds, args.steps, args.capacity, args.num_envs, args.unroll, conv_impl, tuple(args.bindings)))
        r = results[-1]
        print(f"compiled x{num_seeds} ({conv_impl}): {r['steps_per_second_aggregate']:.0f} steps/s aggregate "
              f"({r['seconds']:.2f} s timed, first phase incl. compile {r['first_phase_seconds_incl_compile']:.1f} s)", flush=True)
        save()

    host_rate = next((r["steps_per_second_aggregate"] for r in results if r["runner"] == "host"), None)
    header = f"{'runner':<9} {'conv':<7} {'seeds':>5} {'steps/seed':>10} {'updates':>8} {'seconds':>8} {'steps/s/seed':>12} {'steps/s total':>13} {'x host':>8}"
    lines = [f"DQN, MinAtar Breakout, MinAtar hyperparameters (update every step, replay {args.capacity}); "
             f"{device.platform} {getattr(device, 'device_kind', '')} x{len(jax.devices())}", header, "-" * len(header)]
    for r in results:
        ratio = f"{r['steps_per_second_aggregate'] / host_rate:8.1f}" if host_rate else f"{'-':>8}"
        lines.append(
            f"{r['runner']:<9} {r.get('conv_impl', 'xla'):<7} {r['num_seeds']:>5} {r['steps_per_seed']:>10} {r['updates_per_seed']:>8} {r['seconds']:>8.2f} "
            f"{r['steps_per_second_per_seed']:>12.0f} {r['steps_per_second_aggregate']:>13.0f} {ratio}"
        )
    extrapolation = {}
    for r in results:
        if r["runner"] == "compiled" and r["num_seeds"] == 64:
            minutes = PAPER_STEPS / r["steps_per_second_per_seed"] / 60
            if not extrapolation or minutes < extrapolation["minutes_extrapolated"]:
                extrapolation = {"num_seeds": 64, "steps_per_seed": PAPER_STEPS, "conv_impl": r["conv_impl"], "minutes_extrapolated": minutes}
            lines.append(f"64 seeds x 5M steps ({r['conv_impl']}): {minutes:.1f} min (extrapolated from the measured rate; training phases only)")
    print("\n".join(lines))
    payload["extrapolation_5M_64_seeds"] = extrapolation
    save()
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
