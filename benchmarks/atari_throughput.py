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
learning starts early: iteration 0 fills the replay and compiles, iteration 1 is timed. Each
configuration runs in its own process. Configurations:
  env      ale-py vector environment (`VectorAtariEnv`) or the single-environment reference
           path (`EnvironmentList` of `AtariEnv`);
  order    'dopamine' (learn, then act with the new parameters: exactly the host Runner) or
           'overlap' (`act_before_update=True`: act, send actions, the update runs on the GPU
           while the emulators step); 'serial' is 'overlap' with overlap off, whose timings
           attribute the time to each part.
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
    """One accumbens configuration (run in a child process); returns its measurements."""
    sys.path.insert(0, ROOT)
    import jax

    from accumbens import train
    from accumbens.environments.vector_atari import create_vector_atari_environment
    from accumbens.runners.multi_seed import MultiSeedRunner

    seeds = list(range(config["seeds"]))
    warmup, steps = config["warmup"], config["steps"]
    bindings = [
        "Runner.num_iterations = 2",
        "Runner.evaluation_steps = 0",
        f"DQNAgent.min_replay_history = {warmup // 2}",
    ]
    train.parse_config(["dqn/atari.gin"], bindings)
    batched = create_vector_atari_environment if config["env"] == "vector" else None
    base_dir = os.path.join("/tmp", f"atari_throughput_{os.getpid()}")
    runner = MultiSeedRunner(
        base_dir=base_dir, seeds=seeds, create_batched_environment_fn=batched,
        act_before_update=config["order"] != "dopamine", overlap=config["order"] == "overlap",
        training_steps=warmup, tensorboard=False, progress_bar=False,
    )
    runner.run_iteration(0)  # fills replay past min_replay_history, compiles act and update
    runner.training_steps = steps
    runner.timings = dict.fromkeys(runner.timings, 0.0)
    start = time.perf_counter()
    records = runner.run_iteration(1)
    jax.block_until_ready(runner.agent.state)
    seconds = time.perf_counter() - start
    per_seed = [r["train_steps"] / seconds for r in records]
    updates = sum(r["update_steps"] for r in records)
    timings = dict(runner.timings)
    timings["total"] = seconds
    return {
        **config,
        "device": str(jax.devices()[0]),
        "seconds": seconds,
        "agent_steps": [r["train_steps"] for r in records],
        "update_steps": updates,
        "steps_per_second_per_seed": sum(per_seed) / len(per_seed),
        "steps_per_second_aggregate": sum(per_seed),
        "timings_seconds": timings,
        "loss": [r["loss"] for r in records],
    }


def _environment_only(num_envs: int, steps: int) -> dict:
    """The vector environment alone, random actions: the ceiling the environments set."""
    sys.path.insert(0, ROOT)
    import numpy as np

    from accumbens.environments.vector_atari import VectorAtariEnv

    env = VectorAtariEnv("Pong", num_envs)
    env.reset(list(range(num_envs)))
    rng = np.random.default_rng(0)
    actions = rng.integers(0, env.single_action_space.n, size=(steps, num_envs))
    start = time.perf_counter()
    for a in actions:
        env.step(a)
    seconds = time.perf_counter() - start
    return {"num_envs": num_envs, "steps_per_second_per_env": steps / seconds, "aggregate": steps * num_envs / seconds}


def _profile(seeds: int, calls: int = 300) -> dict:
    """Microseconds per call of the pieces of one tick, on this machine (for the time table)."""
    sys.path.insert(0, ROOT)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from accumbens import train
    from accumbens.runners.multi_seed import MultiSeedRunner

    train.parse_config(["dqn/atari.gin"], ["Runner.num_iterations = 1", "Runner.evaluation_steps = 0",
                                            "ReplayBuffer.capacity = 20000"])
    runner = MultiSeedRunner(base_dir=f"/tmp/atari_profile_{os.getpid()}", seeds=list(range(seeds)),
                             training_steps=1, tensorboard=False, progress_bar=False)
    agent, n = runner.agent, seeds
    rng = np.random.default_rng(0)
    for a in runner.agents:  # a replay with 2,000 steps of random frames
        for t in range(2000):
            a.replay.add(rng.integers(0, 255, (84, 84), np.uint8), 0, 0.0, t % 500 == 499, False)
    stacks = rng.integers(0, 255, runner.stacks.shape, np.uint8)
    env_steps = np.zeros(n, np.int32)
    active = runner._mask(np.ones(n, bool))
    due = np.ones(n, bool)

    def timed(fn, count=calls):
        fn()
        start = time.perf_counter()
        for _ in range(count):
            fn()
        return 1e6 * (time.perf_counter() - start) / count

    out = {"seeds": n}
    out["act_us"] = timed(lambda: np.asarray(agent.act(agent.state, agent.rng, stacks, env_steps, active, training=True)[0]))
    out["put_stacks_us"] = timed(lambda: jax.device_put(stacks).block_until_ready())
    trivial = jax.jit(lambda x: x + 1)
    x = jnp.zeros(n, jnp.int32)
    out["trivial_jit_and_fetch_us"] = timed(lambda: np.asarray(trivial(x)))
    host, device = runner._sample(due)
    out["sample_and_put_us"] = timed(lambda: jax.block_until_ready(runner._sample(due)[1]), 100)
    out["sample_only_us"] = timed(lambda: [a.replay.sample(a._sample_rng, 32) for a in runner.agents], 100)
    frame = stacks[0, ..., 0]
    out["replay_add_us_per_seed"] = timed(lambda: runner.agents[0].replay.add(frame, 0, 0.0, False, False), 1000)
    mask = runner._mask(due)

    def update():
        agent.state, agent.rng, loss, _ = agent.update(agent.state, agent.rng, device, env_steps, mask)
        jax.block_until_ready(agent.state)

    out["update_blocking_us"] = timed(update, 100)

    def update_then_act():
        agent.state, agent.rng, loss, _ = agent.update(agent.state, agent.rng, device, env_steps, mask)
        return np.asarray(agent.act(agent.state, agent.rng, stacks, env_steps, active, training=True)[0])

    out["update_dispatch_then_act_us"] = timed(update_then_act, 100)
    return out


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
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": proc.stderr[-3000:], "args": args}
    return json.loads(lines[-1][len("RESULT "):])


def _table(results: dict) -> str:
    rows = ["| run | seeds | steps/s per seed | aggregate | env | acting | update | replay | other |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    cleanrl = results.get("cleanrl", {})
    if "training_steps_per_second" in cleanrl:
        rate = cleanrl["training_steps_per_second"]
        rows.append(f"| CleanRL dqn_atari_jax.py | 1 | {rate:.0f} | {rate:.0f} | | | | | |")
    for r in results["accumbens"]:
        if "error" in r:
            rows.append(f"| {' '.join(r['args'])} | failed | | | | | | | |")
            continue
        t = r["timings_seconds"]
        share = {k: 100 * t[k] / t["total"] for k in ("environment", "acting", "update", "replay", "other")}
        rows.append(
            f"| accumbens {r['env']} {r['order']} | {r['seeds']} | {r['steps_per_second_per_seed']:.0f} | "
            f"{r['steps_per_second_aggregate']:.0f} | " + " | ".join(f"{share[k]:.0f}%" for k in share) + " |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that everything runs")
    parser.add_argument("--cleanrl-dir", default=os.path.join(ROOT, ".whl", "cleanrl"))
    parser.add_argument("--out", default=None)
    parser.add_argument("--configs", default=None, help="comma list of env/order/seeds, e.g. vector/overlap/3")
    parser.add_argument("--skip-cleanrl", action="store_true")
    parser.add_argument("--profile", action="store_true", help="also time the pieces of one tick")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        if "env_only" in spec:
            result = _environment_only(**spec["env_only"])
        elif "profile" in spec:
            result = _profile(spec["profile"])
        else:
            result = _accumbens(spec)
        print("RESULT " + json.dumps(result), flush=True)
        return

    warmup, steps = (600, 400) if args.quick else (1500, 4000)
    default = "vector/overlap/1,vector/overlap/3,vector/dopamine/1,vector/serial/3,vector/serial/1,vector/overlap/8"
    results = {"quick": args.quick, "host": platform.node(), "accumbens": [], "environment_only": []}
    out = args.out or os.path.join(RESULTS, "atari_throughput_quick.json" if args.quick else "atari_throughput.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)

    def save():  # after every run, so a run cut short keeps what it measured
        with open(out, "w") as f:
            json.dump({**results, "table": _table(results)}, f, indent=1)

    if not args.skip_cleanrl and os.path.exists(os.path.join(args.cleanrl_dir, "dqn_atari_jax.py")):
        total, starts = (3000, 1000) if args.quick else (12000, 4000)
        results["cleanrl"] = _cleanrl(args.cleanrl_dir, total, starts, 600)
        print(json.dumps(results["cleanrl"]), flush=True)
        save()
    if args.profile:
        results["profile"] = [_child(["--child", json.dumps({"profile": k})], 300) for k in (1, 3)]
        print(json.dumps(results["profile"]), flush=True)
    for num in (1, 3, 8):
        spec = {"env_only": {"num_envs": num, "steps": 300 if args.quick else 1000}}
        results["environment_only"].append(_child(["--child", json.dumps(spec)], 300))
    for item in (args.configs or default).split(","):
        env, order, seeds = item.split("/")
        config = {"env": env, "order": order, "seeds": int(seeds), "warmup": warmup, "steps": steps}
        results["accumbens"].append(_child(["--child", json.dumps(config)], 600))
        print(json.dumps(results["accumbens"][-1]), flush=True)
        save()
    table = _table(results)
    print(table)
    for e in results["environment_only"]:
        if "error" not in e:
            print(f"vector env alone, {e['num_envs']} envs: {e['steps_per_second_per_env']:.0f} steps/s per env, "
                  f"{e['aggregate']:.0f} aggregate")
    save()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
