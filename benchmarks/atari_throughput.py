"""Atari DQN throughput on one GPU: CleanRL's dqn_atari_jax.py vs accumbens at N = 1, 3, 8 seeds.

Agent steps per second in the training phase (an update every 4 agent steps) on Pong, per seed
and in aggregate, and where the time goes (environment, acting, update, replay, other) for the
accumbens runs.

  python benchmarks/atari_throughput.py [--quick] [--cleanrl-dir .whl/cleanrl] [--out PATH]

CleanRL (https://github.com/vwxyzjn/cleanrl, cleanrl/dqn_atari_jax.py) is not committed: copy
the script and `cleanrl_utils` into the ignored folder `.whl/cleanrl/`, patched for gymnasium 1.x
(register ale-py's environments; GrayScaleObservation -> GrayscaleObservation, FrameStack ->
FrameStackObservation; tensorboardX where torch's SummaryWriter lacks `tensorboard`). It runs as
published otherwise (PongNoFrameskip-v4, its own wrappers); its training-phase rate is computed
from the cumulative "SPS:" lines it prints every 100 steps once learning has started.

accumbens runs `dqn/atari.gin` (Dopamine's DQN: Nature CNN, Adam, batch 32, update period 4,
1M replay, sticky actions) through `MultiSeedRunner`, with `min_replay_history` lowered so that
learning starts early. Each configuration is one process: one runner, a warm-up iteration (fills
the replay, compiles), then per schedule a short untimed iteration (compiles that schedule) and
a timed one. A configuration is env/frames/map/seeds/orders:
  env      'vector': ale-py's vector environment (`VectorAtariEnv`); 'list': the
           single-environment reference path (`EnvironmentList` of `AtariEnv`);
  frames   'frames': replay frames mirrored on the device (`DeviceFrames`: a sample sends only
           frame rows, the update gathers and stacks on the device); 'host': batches gathered
           on the host and copied (the earlier path);
  map      how seeds are batched in the compiled act and update: 'vmap' (grouped convolutions),
           'map' (lax.map, seed after seed) or 'unroll';
  orders   '+'-joined: 'dopamine' (learn, then act with the new parameters: the host Runner's
           order), 'overlap' (`act_before_update=True`: act, send actions, the update runs on the
           GPU while the emulators step), 'serial' ('overlap' with overlap off, whose timings
           attribute the time to each part), 'pipelined' ('overlap' with the seeds in two
           groups taking turns: one group acts while the other's emulators step; same numbers).
Each configuration also probes its compiled calls alone (`probe_us`: acting round trip, update
waited for, update dispatch, host sampling). The table gives milliseconds per tick (one agent
step of every seed) by part; in 'overlap' the acting time includes waiting for the update.

Device command (about 7 minutes on an H100, at most about 9: the --max-minutes guard):
  python benchmarks/atari_throughput.py --out $OUT/atari_throughput.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def _accumbens(config: dict) -> dict:
    """One accumbens process: one runner (N seeds, frames on device or host, seed mapping), one
    warm-up iteration (fills the replay past min_replay_history and compiles), then one timed
    training iteration per schedule in `config["orders"]`, each after a short untimed one that
    compiles that schedule's calls. Returns the measurements of each timed iteration and a probe
    of the compiled calls alone."""
    sys.path.insert(0, ROOT)
    import jax

    from accumbens import train
    from accumbens.environments.vector_atari import create_vector_atari_environment
    from accumbens.runners.multi_seed import MultiSeedRunner

    seeds = list(range(config["seeds"]))
    warmup, steps = config["warmup"], config["steps"]
    bindings = ["Runner.num_iterations = 2", "Runner.evaluation_steps = 0",
                f"DQNAgent.min_replay_history = {warmup // 2}"]
    if config.get("quick"):  # a check that everything runs (on CPU): small replay and network, short episodes
        bindings += ["ReplayBuffer.capacity = 20000", "Runner.max_steps_per_episode = 100", "DQNAgent.batch_size = 4",
                     "create_torso.name = 'mlp'", "MLP.hidden_units = (16,)", "MLP.observation_ndim = 2"]
    train.parse_config(["dqn/atari.gin"], bindings)
    batched = create_vector_atari_environment if config["env"] == "vector" else None
    base_dir = os.path.join("/tmp", f"atari_throughput_{os.getpid()}")
    runner = MultiSeedRunner(
        base_dir=base_dir, seeds=seeds, create_batched_environment_fn=batched, training_steps=warmup,
        device_frames=config["frames"], act_map=config["map"].split(":")[0], update_map=config["map"].split(":")[-1],
        pipeline="pipelined" in config["orders"],
        tensorboard=False, progress_bar=False,
    )
    setup_start = time.perf_counter()
    runner.run_iteration(0)
    out = {**config, "device": str(jax.devices()[0]), "warmup_seconds": time.perf_counter() - setup_start, "runs": []}
    iteration = 1
    for order in config["orders"]:
        runner.act_before_update = order != "dopamine"
        runner.overlap = order in ("overlap", "pipelined")
        runner.pipeline = order == "pipelined"
        runner.training_steps = 50 if config.get("quick") else 200  # compiles this schedule's calls
        runner.run_iteration(iteration)
        runner.training_steps = steps
        runner.timings = dict.fromkeys(runner.timings, 0.0)
        jax.block_until_ready(runner.agent.state)
        start = time.perf_counter()
        records = runner.run_iteration(iteration + 1)
        jax.block_until_ready(runner.agent.state)
        seconds = time.perf_counter() - start
        iteration += 2
        per_seed = [r["train_steps"] / seconds for r in records]
        timings = dict(runner.timings)
        timings["total"] = seconds
        out["runs"].append({
            "order": order, "seconds": seconds, "agent_steps": [r["train_steps"] for r in records],
            "ticks": max(r["train_steps"] for r in records),
            "update_steps": sum(r["update_steps"] for r in records),
            "steps_per_second_per_seed": sum(per_seed) / len(per_seed),
            "steps_per_second_aggregate": sum(per_seed), "timings_seconds": timings,
            "loss": [r["loss"] for r in records],
        })
        print(json.dumps(out["runs"][-1]), file=sys.stderr, flush=True)
    out["probe_us"] = _probe(runner)
    return out


def _probe(runner, calls: int = 200) -> dict:
    """Microseconds per call of the compiled pieces alone, on the run's own state: acting (frames
    in, actions out), an update waited for, an update only dispatched, and the host sampling."""
    import jax
    import numpy as np

    agent, n = runner.agent, runner.num
    due = np.ones(n, bool)
    mask, active = runner._mask(due), np.ones(n, bool)
    env_steps = jax.numpy.asarray(np.array([a.env_steps for a in runner.agents], np.int32))
    frames = agent.frames

    def timed(fn, count=calls):
        fn()
        jax.block_until_ready(agent.state)
        start = time.perf_counter()
        for _ in range(count):
            fn()
        jax.block_until_ready(agent.state)
        return 1e6 * (time.perf_counter() - start) / count

    trivial = jax.jit(lambda x: x + 1)
    zero = jax.numpy.zeros(n, jax.numpy.int32)
    out = {"trivial_round_trip": timed(lambda: np.asarray(trivial(zero)))}  # dispatch + fetch floor
    if frames is None:
        stacks = runner.stacks
        out["act"] = timed(lambda: np.asarray(agent.act(agent.state, agent.rng, stacks, env_steps, mask, training=True)[0]))
        _, batches = runner._sample(due)
        out["sample_and_put"] = timed(lambda: runner._sample(due), 50)

        def update(block):
            agent.state, agent.rng, _, _ = agent.update(agent.state, agent.rng, batches, env_steps, mask)
            if block:
                jax.block_until_ready(agent.state)
    else:
        observation = np.zeros((n, *frames.frame_shape), frames.dtype)
        rows = np.full(n, frames.scratch_row)

        def act():
            packed = frames.pack_frames(observation, rows, np.zeros(n, bool), active)
            actions, _, _, frames.store, frames.stacks = agent.act_frames(
                agent.state, agent.rng, frames.store, frames.stacks, packed, env_steps, training=True)
            return np.asarray(actions)

        out["act"] = timed(act)
        _, samples = runner._sample_slots(due)
        out["sample_and_pack"] = timed(lambda: runner._sample_slots(due), 50)

        def update(block):
            agent.state, agent.rng, _, _ = agent.update_frames(agent.state, agent.rng, frames.store, samples, env_steps, mask)
            if block:
                jax.block_until_ready(agent.state)

    out["update_blocking"] = timed(lambda: update(True), 50)
    out["update_dispatch_only"] = timed(lambda: update(False), 50)
    if frames is not None:
        out["update_then_act"] = timed(lambda: (update(False), act()), 50)  # act queued behind the update
    return out


def _environment_only(num_envs: int, steps: int, **kwargs) -> dict:
    """The vector environment alone, random actions: the ceiling the environments set.
    `kwargs` go to `VectorAtariEnv` (num_threads, thread_affinity_offset)."""
    sys.path.insert(0, ROOT)
    import numpy as np

    from accumbens.environments.vector_atari import VectorAtariEnv

    env = VectorAtariEnv("Pong", num_envs, **kwargs)
    env.reset(list(range(num_envs)))
    rng = np.random.default_rng(0)
    actions = rng.integers(0, env.single_action_space.n, size=(steps, num_envs))
    start = time.perf_counter()
    for a in actions:
        env.step(a)
    seconds = time.perf_counter() - start
    return {"num_envs": num_envs, **kwargs, "steps_per_second_per_env": steps / seconds,
            "aggregate": steps * num_envs / seconds}


def _cleanrl(cleanrl_dir: str, total: int, learning_starts: int, timeout: float) -> dict:
    """Runs CleanRL's dqn_atari_jax.py on Pong; training-phase rate from its cumulative SPS lines."""
    env = dict(os.environ)
    paths = [os.path.abspath(cleanrl_dir), ROOT]
    site = os.path.join(os.path.abspath(cleanrl_dir), "site")  # tyro and its needs, if installed there
    if os.path.isdir(site):
        paths.append(site)
    try:
        import cv2  # noqa: F401
        shim = False
    except ImportError:  # gymnasium's ResizeObservation needs cv2: use the area-resize stand-in
        paths.insert(0, os.path.join(os.path.abspath(cleanrl_dir), "cv2shim"))
        shim = True
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
    command = [
        sys.executable, os.path.join(cleanrl_dir, "dqn_atari_jax.py"), "--env-id", "PongNoFrameskip-v4",
        "--total-timesteps", str(total), "--learning-starts", str(learning_starts), "--seed", "1",
    ]
    start = time.time()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd="/tmp")
    wall = time.time() - start
    points = [int(m.group(1)) for m in re.finditer(r"^SPS: (\d+)$", proc.stdout, re.M)]
    # Lines come at global_step % 100 == 0 once learning started: step = learning_starts + 100 * k.
    first = (learning_starts // 100 + 1) * 100
    steps = [first + 100 * k for k in range(len(points))]
    result = {"returncode": proc.returncode, "wall_seconds": wall, "cv2_stand_in": shim, "sps_lines": len(points)}
    if proc.returncode != 0 or len(points) < 10:
        result["stderr_tail"] = proc.stderr[-3000:]
        result["stdout_tail"] = proc.stdout[-1000:]
        return result
    # Elapsed time at each line is step / SPS; skip the first 10% of lines (compilation).
    skip = len(points) // 10
    (s0, r0), (s1, r1) = (steps[skip], points[skip]), (steps[-1], points[-1])
    rate = (s1 - s0) / (s1 / r1 - s0 / r0)
    result.update({"training_steps_per_second": rate, "overall_sps_at_end": r1, "total_timesteps": total,
                   "learning_starts": learning_starts})
    return result


def _child(args: list[str], timeout: float) -> dict:
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")  # 8 seeds' 1M-frame stores take 56 GB
    try:
        proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        return {"error": f"timed out after {timeout} s", "args": args, "stderr_tail": str(e.stderr)[-2000:]}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": proc.stderr[-3000:], "args": args}
    return json.loads(lines[-1][len("RESULT "):])


def _table(results: dict) -> str:
    """Agent steps per second and milliseconds per tick (one step of every seed) by part."""
    parts = ("environment", "acting", "update", "replay", "other")
    rows = ["| run | seeds | schedule | steps/s per seed | aggregate | ms/tick | env | acting | update | replay | other |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    cleanrl = results.get("cleanrl", {})
    if "training_steps_per_second" in cleanrl:
        rate = cleanrl["training_steps_per_second"]
        rows.append(f"| CleanRL dqn_atari_jax.py | 1 | its own | {rate:.0f} | {rate:.0f} | {1e3 / rate:.2f} | | | | | |")
    for r in results["accumbens"]:
        if "error" in r:
            rows.append(f"| {' '.join(r['args'])[:60]} | failed | | | | | | | | | |")
            continue
        name = f"accumbens {r['env']} {'frames on device' if r['frames'] else 'host batches'} {r['map']}"
        for run in r["runs"]:
            t, ticks = run["timings_seconds"], run["ticks"]
            rows.append(f"| {name} | {r['seeds']} | {run['order']} | {run['steps_per_second_per_seed']:.0f} | "
                        f"{run['steps_per_second_aggregate']:.0f} | {1e3 * t['total'] / ticks:.2f} | "
                        + " | ".join(f"{1e3 * t[k] / ticks:.2f}" for k in parts) + " |")
    return "\n".join(rows)


# env/frames/map/seeds/orders, most important first; about 7 minutes on the device H100 (the
# --max-minutes guard skips the tail if compilation or the machine is slower). map 'a:u' sets the
# acting and update mappings apart.
DEFAULT_CONFIGS = (
    "vector/frames/vmap/1/overlap+serial+dopamine",
    "vector/frames/vmap/3/overlap+serial",
    "vector/frames/vmap/3/pipelined",  # own process: its two extra environments exist only there
    "vector/host/vmap/1/overlap",
    "vector/host/vmap/3/overlap",
    "vector/frames/unroll/3/overlap",
    "vector/frames/vmap/8/overlap+serial",
    "vector/frames/vmap/8/pipelined",
    "vector/frames/vmap:unroll/3/overlap",
    "vector/frames/unroll/8/overlap",
    "vector/frames/map/3/overlap",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that everything runs")
    parser.add_argument("--cleanrl-dir", default=os.path.join(ROOT, ".whl", "cleanrl"))
    parser.add_argument("--out", default=None)
    parser.add_argument("--configs", default=None,
                        help="comma list of env/frames|host/map/seeds/order+order..., e.g. "
                             "vector/frames/unroll/3/overlap+serial; map: vmap, map, unroll, or act:update "
                             "such as vmap:unroll; orders: overlap, serial, dopamine, pipelined")
    parser.add_argument("--skip-cleanrl", action="store_true")
    parser.add_argument("--skip-env-only", action="store_true", help="skip timing the vector environment alone")
    parser.add_argument("--max-minutes", type=float, default=7.0,
                        help="start no further configuration after this many minutes (results so far are kept)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        result = _environment_only(**spec["env_only"]) if "env_only" in spec else _accumbens(spec)
        print("RESULT " + json.dumps(result), flush=True)
        return

    began = time.time()
    warmup, steps = (200, 100) if args.quick else (1000, 3000)
    results = {"quick": args.quick, "host": platform.node(), "accumbens": [], "environment_only": []}
    out = args.out or os.path.join(RESULTS, "atari_throughput_quick.json" if args.quick else "atari_throughput.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)

    def save():  # after every run, so a run cut short keeps what it measured
        with open(out, "w") as f:
            json.dump({**results, "table": _table(results)}, f, indent=1)

    if not args.skip_cleanrl and os.path.exists(os.path.join(args.cleanrl_dir, "dqn_atari_jax.py")):
        total, starts = (3000, 1000) if args.quick else (8000, 3000)
        results["cleanrl"] = _cleanrl(args.cleanrl_dir, total, starts, 300)
        print(json.dumps(results["cleanrl"]), flush=True)
        save()
    env_steps = 300 if args.quick else 1000
    env_only = () if args.skip_env_only else (
        (1, {}), (3, {}), (8, {}), (3, {"thread_affinity_offset": 1}), (8, {"thread_affinity_offset": 1}))
    for num, extra in env_only:
        spec = {"env_only": {"num_envs": num, "steps": env_steps, **extra}}
        results["environment_only"].append(_child(["--child", json.dumps(spec)], 120))
    save()
    for item in (args.configs.split(",") if args.configs else DEFAULT_CONFIGS):
        if time.time() - began > 60 * args.max_minutes:
            print(f"skipping {item}: past --max-minutes", flush=True)
            continue
        env, frames, mapping, seeds, orders = item.split("/")
        seeds = int(seeds)
        config = {"env": env, "frames": frames == "frames", "map": mapping, "seeds": seeds,
                  "orders": orders.split("+"), "warmup": warmup, "quick": args.quick,
                  "steps": steps if seeds <= 3 or args.quick else steps // 2}
        left = 60 * (args.max_minutes + 1.5) - (time.time() - began)  # a config may run past the guard by 1.5 min
        results["accumbens"].append(_child(["--child", json.dumps(config)], max(30.0, min(240.0, left))))
        print(json.dumps(results["accumbens"][-1]), flush=True)
        save()
    print(_table(results))
    for e in results["environment_only"]:
        if "error" not in e:
            pinned = f", threads pinned from core {e['thread_affinity_offset']}" if "thread_affinity_offset" in e else ""
            print(f"vector env alone, {e['num_envs']} envs{pinned}: {e['steps_per_second_per_env']:.0f} steps/s per env, "
                  f"{e['aggregate']:.0f} aggregate")
    save()
    print(f"wrote {out} after {time.time() - began:.0f} s")


if __name__ == "__main__":
    main()
