"""The compiled runner over 2 JAX processes (jax.distributed, gloo collectives on CPU), each with 2
forced CPU devices, against one process with 4 devices: the same per-seed numbers and checkpoints,
also across a resume of the 2-process run (process 0 reads the checkpoint and broadcasts it).

Every run is `python -m accumbens.train --runner compiled` in a subprocess (JAX's device count and
distributed runtime are fixed per process); the coordinator listens on a free local port.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINDINGS = [
    "MLP.hidden_units = (32, 32)",
    "DQNAgent.batch_size = 32",
    "DQNAgent.min_replay_history = 200",
    "DQNAgent.epsilon_decay_period = 1000",
    "DQNAgent.target_update_period = 100",
    "ReplayBuffer.capacity = 2000",
    "Runner.training_steps = 400",
    "Runner.evaluation_steps = 200",
    "CompiledRunner.num_seeds = 4",
    "CompiledRunner.num_eval_envs = 2",
    "CompiledRunner.tensorboard = False",
]
TIMING = ("train_seconds", "train_steps_per_second", "eval_seconds", "eval_steps_per_second", "wall_time")
TIMEOUT = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(base_dir, iterations: int, devices: int, process_id=None, port=None) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    # The resumed processes reuse the first ones' compiled programs (about a third less CPU time).
    cache = os.path.join(os.path.dirname(str(base_dir)), "jax_cache")
    env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    cmd = [sys.executable, "-m", "accumbens.train", "--runner", "compiled", "--base_dir", str(base_dir),
           "--gin_files", "dqn/cartpole", "--gin_bindings", *BINDINGS, f"Runner.num_iterations = {iterations}"]
    if process_id is not None:
        cmd.append("--distributed")
        env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(process_id))
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(processes: list[subprocess.Popen]) -> list[str]:
    outputs = []
    try:
        for p in processes:
            out, _ = p.communicate(timeout=TIMEOUT)
            outputs.append(out)
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(processes, outputs):
        assert p.returncode == 0, out[-4000:]
    return outputs


def _records(base_dir, seed: int) -> list[dict]:
    with open(os.path.join(base_dir, f"seed_{seed}", "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


def test_two_processes_match_one_process_with_all_devices(tmp_path):
    one, two = tmp_path / "one_process", tmp_path / "two_processes"
    port = _free_port()
    # One process with 4 devices (2 iterations) and, alongside, 2 processes x 2 devices (1 iteration).
    outputs = _wait([_launch(one, 2, 4), _launch(two, 1, 2, 0, port), _launch(two, 1, 2, 1, port)])
    assert "4 seed(s) on 4 cpu device(s)," in outputs[0]
    assert "4 seed(s) on 4 cpu device(s) in 2 processes" in outputs[1]
    assert not os.path.exists(two / "checkpoints" / "ckpt-000001")
    # Resume the 2-process run for a second iteration (num_iterations may grow on resume).
    port = _free_port()
    outputs = _wait([_launch(two, 2, 2, 0, port), _launch(two, 2, 2, 1, port)])
    assert "resuming" in outputs[0] and "at iteration 1" in outputs[0]

    for seed in range(4):
        expected, got = _records(one, seed), _records(two, seed)
        assert [r["iteration"] for r in got] == [0, 1]
        assert got == expected, f"seed {seed}"
    assert len({r[1]["loss"] for r in (_records(one, s) for s in range(4))}) == 4  # seeds differ
    # The whole final state (agent, replay, environments, RNG) of every seed, byte for byte.
    for seed in range(4):
        name = os.path.join("checkpoints", "ckpt-000001", f"seed_{seed}.msgpack")
        assert (one / name).read_bytes() == (two / name).read_bytes(), f"seed {seed} checkpoint"
    # Process 1 wrote nothing of its own: one config, one set of logs, one checkpoint folder.
    assert sorted(os.listdir(two)) == sorted(os.listdir(one))
    np.testing.assert_array_equal([r["total_train_steps"] for r in _records(two, 0)], [400, 800])
