"""Datasets and the offline runner: rollout, I/O and sampling costs, and a small offline result.

  1. Rollout throughput of `build_datasets.rollout` (uniform random and epsilon-greedy on an
     untrained MinAtar DQN), 1 vs `--num_envs` environments in lock step.
  2. Dataset size on disk (compressed chunks) against the raw bytes, and load time into a
     `FixedReplayBuffer`.
  3. Sampling: `FixedReplayBuffer.sample(32)` against the online `ReplayBuffer` holding the same
     data (they share the sampler, so they should cost the same).
  4. Offline DQN on uniform-random CartPole data (3,000 steps; the CI test's setting) over seeds:
     the best and last evaluation return against the random policy's.

Prints a table and writes benchmarks/results/offline_datasets.json. Run:
  nice -n 10 python benchmarks/offline_datasets.py [--steps 50000] [--seeds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np

from accumbens import build_datasets, train
from accumbens.environments import create_environment
from accumbens.replay import ReplayBuffer
from accumbens.replay.dataset import DatasetWriter, FixedReplayBuffer, load_dataset, read_manifest
from accumbens.runners.offline import OfflineRunner
from accumbens.runners.runner import Runner

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "offline_datasets.json")


def rollout_throughput(tmp: str, steps: int, num_envs: int) -> dict:
    train.parse_config(["dqn/minatar"], ["create_environment.name = 'minatar:breakout'", "Runner.num_iterations = 1",
                                         "Runner.training_steps = 1", "Runner.evaluation_steps = 1"])
    runner = Runner(base_dir=os.path.join(tmp, "dqn"), tensorboard=False, progress_bar=False)
    q = build_datasets.make_q_function(runner)
    rows = {}
    for policy, epsilon in (("random", None), ("eps_0.1", 0.1)):
        for n in sorted({1, num_envs}):
            directory = os.path.join(tmp, f"{policy}_{n}")
            start = time.perf_counter()
            build_datasets.rollout(directory, lambda: create_environment("minatar:breakout"), steps, 6, 1, epsilon, q, 0,
                                   100_000, {"env": "minatar:breakout"}, False, n)
            rows[f"{policy}, {n} envs"] = steps / (time.perf_counter() - start)
    return rows


def io_and_sampling(directory: str, repeats: int = 2000) -> dict:
    manifest = read_manifest(directory)
    on_disk = sum(os.path.getsize(os.path.join(directory, c["file"])) for c in manifest["chunks"])
    data = load_dataset(directory)
    raw = sum(a.nbytes for a in data.values())
    start = time.perf_counter()
    fixed = FixedReplayBuffer(directory)
    load_seconds = time.perf_counter() - start
    online = ReplayBuffer(manifest["num_slots"] + 10, tuple(manifest["observation_shape"]), np.uint8)
    for t in np.flatnonzero(~data["is_final"]):
        ended = data["terminated"][t] or data["truncated"][t]
        online.add(data["observation"][t], data["action"][t], data["reward"][t], data["terminated"][t],
                   data["truncated"][t], final_observation=data["observation"][t + 1] if ended else None)
    times = {}
    for name, buffer in (("online ReplayBuffer", online), ("FixedReplayBuffer", fixed)):
        rng = np.random.default_rng(0)
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            buffer.sample(rng, 32)
            samples.append(time.perf_counter() - start)
        times[name] = float(np.median(samples) * 1e6)
    return {"steps": manifest["num_steps"], "bytes_on_disk": on_disk, "raw_bytes": raw,
            "load_seconds": load_seconds, "sample32_median_us": times}


def offline_cartpole(tmp: str, seeds: int) -> dict:
    import gymnasium as gym

    directory = os.path.join(tmp, "cartpole_random")
    env, rng = gym.make("CartPole-v1"), np.random.default_rng(0)
    returns, episode_return = [], 0.0
    with DatasetWriter(directory, (4,), np.float32, 2) as writer:
        observation, _ = env.reset(seed=0)
        for _ in range(3000):
            action = int(rng.integers(2))
            next_observation, reward, terminated, truncated, _ = env.step(action)
            episode_return += reward
            ended = terminated or truncated
            writer.add(observation, action, reward, terminated, truncated,
                       final_observation=next_observation if ended else None, behaviour_probability=0.5)
            if ended:
                returns.append(episode_return)
                episode_return = 0.0
            observation = env.reset()[0] if ended else next_observation
    runs = []
    for seed in range(seeds):
        train.parse_config(["offline/dqn_cartpole"], [
            f"OfflineRunner.dataset_dir = '{directory}'", "MLP.hidden_units = (64, 64)", "DQNAgent.batch_size = 64",
            "OfflineRunner.num_iterations = 8", "OfflineRunner.training_steps = 250",
            "OfflineRunner.evaluation_steps = 1000", f"OfflineRunner.seed = {seed}"])
        runner = OfflineRunner(base_dir=os.path.join(tmp, f"offline_{seed}"), tensorboard=False, progress_bar=False)
        records = runner.run_experiment()
        runs.append([r["eval_return_mean"] for r in records])
    return {"random_policy_return": float(np.mean(returns)), "eval_returns_per_seed": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--num_envs", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="offline_bench_")
    try:
        rollout = rollout_throughput(tmp, args.steps, args.num_envs)
        io = io_and_sampling(os.path.join(tmp, f"random_{args.num_envs}"))
        offline = offline_cartpole(tmp, args.seeds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"(load average {load:.1f} on {os.cpu_count()} CPUs)")
    print("rollout throughput, MinAtar breakout (steps/s)")
    for name, rate in rollout.items():
        print(f"  {name:24s} {rate:10.0f}")
    print(f"dataset of {io['steps']} steps: {io['bytes_on_disk'] / 1e6:.2f} MB on disk, {io['raw_bytes'] / 1e6:.2f} MB raw, "
          f"loaded in {io['load_seconds']:.2f} s")
    for name, us in io["sample32_median_us"].items():
        print(f"  sample(32), {name:22s} {us:8.1f} us (median)")
    random_return = offline["random_policy_return"]
    print(f"offline DQN on 3,000 uniform-random CartPole steps (random policy: {random_return:.1f})")
    for seed, returns in enumerate(offline["eval_returns_per_seed"]):
        print(f"  seed {seed}: best {max(returns):6.1f}, last {returns[-1]:6.1f}  ({' '.join(f'{r:.0f}' for r in returns)})")
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump({"load_average": load, "cpus": os.cpu_count(), "rollout_steps_per_second": rollout, "io": io,
                   "offline_cartpole": offline, "args": vars(args)}, f, indent=1)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
