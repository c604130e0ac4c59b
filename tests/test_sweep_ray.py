"""The 2 x 2 CartPole sweep on a local Ray cluster started here; one run's process is killed after
its first checkpoint, and Ray retries the task, which resumes from that checkpoint."""
from __future__ import annotations

import json
import os
import re
import signal
import threading
import time

import pytest

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[cluster]")')

from accumbens import aggregate, sweep  # noqa: E402
from accumbens.sweep_executors import LOG_FILE, PID_FILE, run_ray  # noqa: E402

from test_sweep import TINY, tiny_spec  # noqa: E402


def _kill_after_first_checkpoint(run_dir: str, killed: dict, timeout: float = 120.0) -> None:
    """Kills the run's train process (SIGKILL) as soon as its first checkpoint exists."""
    checkpoint = os.path.join(run_dir, "checkpoints", "ckpt-000000")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.isdir(checkpoint):
            with open(os.path.join(run_dir, PID_FILE)) as f:
                pid = int(f.read())
            os.kill(pid, signal.SIGKILL)
            killed["pid"] = pid
            killed["finished_before"] = os.path.isdir(os.path.join(run_dir, "checkpoints", "ckpt-000002"))
            return
        time.sleep(0.02)


def test_ray_sweep_retries_a_killed_run_which_resumes(tmp_path):
    root = tmp_path / "runs"
    spec = tiny_spec(root)
    # Longer iterations than the local test's, so the kill lands while iteration 1 or 2 is running.
    spec["gin_bindings"] = [b for b in TINY if not b.startswith(("Runner.num_iterations", "Runner.training_steps"))]
    spec["gin_bindings"] += ["Runner.num_iterations = 3", "Runner.training_steps = 1500"]
    spec["max_retries"] = 2
    s = sweep.expand(spec)
    s.runs = sweep.validate(s.runs)
    victim = os.path.join(str(root), "lr=0.001", "seed=0")
    killed: dict = {}
    watcher = threading.Thread(target=_kill_after_first_checkpoint, args=(victim, killed), daemon=True)
    watcher.start()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results = run_ray(s.runs, s, token="test")
    finally:
        ray.shutdown()
    watcher.join(timeout=5)
    assert "pid" in killed and not killed["finished_before"], "the run was not killed mid-way"
    by_name = {r.name: r for r in results}
    assert all(r.ok for r in results), [(r.name, r.log_tail) for r in results if not r.ok]
    assert by_name["lr=0.001/seed=0"].attempts == 2
    assert all(r.attempts == 1 for n, r in by_name.items() if n != "lr=0.001/seed=0")
    with open(os.path.join(victim, LOG_FILE)) as f:
        log = f.read()
    assert re.search(r"exit status -9", log) and re.search(r"resuming .* at iteration [12]", log)
    with open(os.path.join(victim, "metrics.jsonl")) as f:
        assert [json.loads(line)["iteration"] for line in f] == [0, 1, 2]
    table = aggregate.collect(str(root))
    assert len(table) == 4 and all(r["iterations"] == 3 for r in table)
