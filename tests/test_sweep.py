"""accumbens.sweep: spec expansion and errors, and a 2 x 2 CartPole sweep on the local executor
that is interrupted (one run loses its last checkpoint) and re-run, completing only that run."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from accumbens import aggregate, sweep
from accumbens.sweep_executors import LOG_FILE

# A CartPole DQN run of a few seconds: 2 iterations of ~200 training steps.
TINY = [
    "Runner.num_iterations = 2",
    "Runner.training_steps = 200",
    "Runner.evaluation_steps = 100",
    "DQNAgent.min_replay_history = 100",
    "MLP.hidden_units = (32, 32)",
    "DQNAgent.batch_size = 32",
    "ReplayBuffer.capacity = 1000",
    "Runner.tensorboard = False",
]


def tiny_spec(root) -> dict:
    return {
        "gin_files": ["dqn/cartpole"],
        "gin_bindings": TINY,
        "grid": {"create_optimizer.learning_rate": [0.001, 0.0003], "Runner.seed": [0, 1]},
        "names": {"create_optimizer.learning_rate": "lr"},
        "results_root": str(root),
        "max_parallel": 2,
    }


def write_spec(tmp_path, spec) -> str:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return str(path)


def attempts(run_dir) -> int:
    with open(os.path.join(run_dir, LOG_FILE)) as f:
        return sum(line.startswith("=== accumbens.sweep attempt") for line in f)


# ----------------------------------------------------------------------------- expansion
def test_expand_grid_names_and_bindings(tmp_path):
    s = sweep.expand(tiny_spec(tmp_path))
    assert [r.name for r in s.runs] == ["lr=0.001/seed=0", "lr=0.001/seed=1", "lr=0.0003/seed=0", "lr=0.0003/seed=1"]
    run = s.runs[2]
    assert run.base_dir == os.path.join(str(tmp_path), "lr=0.0003", "seed=0")
    assert run.gin_bindings[-2:] == ("create_optimizer.learning_rate = 0.0003", "Runner.seed = 0")
    assert run.params == {"lr": 0.0003, "seed": 0}
    assert run.command()[1:5] == ["-m", "accumbens.train", "--base_dir", run.base_dir]


def test_expand_run_list_times_grid_and_gin_literals(tmp_path):
    spec = {
        "gin_files": ["dqn/cartpole"],
        "runs": [
            {"gin_files": "dqn/minatar", "create_environment.name": "minatar:breakout"},
            {"create_environment.name": "gym:CartPole-v1", "MLP.hidden_units": [64]},
        ],
        "grid": {"Runner.seed": [3]},
        "results_root": str(tmp_path),
    }
    runs = sweep.expand(spec).runs
    assert [r.name for r in runs] == ["agent=dqn_minatar/name=minatar_breakout/seed=3", "name=gym_CartPole-v1/hidden_units=64/seed=3"]
    assert runs[0].gin_files == ("dqn/cartpole", "dqn/minatar")
    assert "create_environment.name = 'minatar:breakout'" in runs[0].gin_bindings
    assert "MLP.hidden_units = (64,)" in runs[1].gin_bindings
    assert sweep.gin_literal("@DQNAgent") == "@DQNAgent" and sweep.gin_literal([1, "a"]) == "(1, 'a')"
    assert sweep.gin_literal(True) == "True" and sweep.gin_literal(None) == "None"


@pytest.mark.parametrize(
    "change,message",
    [
        ({"gird": {}}, "unknown spec key"),
        ({"grid": {}}, "'grid' is empty"),
        ({"grid": {"Runner.seed": []}}, "non-empty list"),
        ({"grid": {"seed": [1, 2]}}, "not a gin parameter"),
        ({"results_root": None}, "results_root"),
        ({"grid": {"Runner.seed": [1, 1]}}, "share the folder"),
        ({"grid": {"A.seed": [1], "B.seed": [2]}}, "share the short name"),
        ({"resources": {"gpus": 1}}, "'resources' takes"),
    ],
)
def test_bad_specs_are_refused(tmp_path, change, message):
    spec = {**tiny_spec(tmp_path), **change}
    spec = {k: v for k, v in spec.items() if v is not None}
    with pytest.raises(sweep.SpecError, match=message):
        sweep.expand(spec)


def test_bad_gin_binding_is_refused_before_launch(tmp_path, capsys):
    spec = tiny_spec(tmp_path / "runs")
    spec["grid"]["DQNAgent.learnin_rate"] = [1.0]
    assert sweep.main([write_spec(tmp_path, spec)]) == 2
    err = capsys.readouterr().err
    assert "bad gin configuration" in err and "learnin_rate" in err
    assert not (tmp_path / "runs").exists()  # nothing launched, nothing written


# ----------------------------------------------------------------------------- the 2 x 2 sweep
def test_local_sweep_resumes_only_what_was_missing(tmp_path):
    root = tmp_path / "runs"
    spec_path = write_spec(tmp_path, tiny_spec(root))
    assert sweep.main([spec_path, "--no_progress"]) == 0
    names = ["lr=0.001/seed=0", "lr=0.001/seed=1", "lr=0.0003/seed=0", "lr=0.0003/seed=1"]
    dirs = {n: os.path.join(root, n) for n in names}
    for d in dirs.values():
        assert attempts(d) == 1
        assert os.path.isdir(os.path.join(d, "checkpoints", "ckpt-000001"))
    with open(os.path.join(dirs["lr=0.0003/seed=1"], "metrics.jsonl")) as f:
        full = [json.loads(line) for line in f]

    # "Kill" one run after its first iteration: its last checkpoint and last metrics row are gone,
    # as if the process died while running iteration 1.
    victim = dirs["lr=0.0003/seed=1"]
    import shutil

    shutil.rmtree(os.path.join(victim, "checkpoints", "ckpt-000001"))
    with open(os.path.join(victim, "metrics.jsonl"), "w") as f:
        f.write(json.dumps(full[0]) + "\n")
    s = sweep.expand(tiny_spec(root))
    statuses = {r.name: sweep.run_status(r) for r in sweep.validate(s.runs)}
    assert statuses == {**{n: "complete" for n in names}, "lr=0.0003/seed=1": "partial"}

    assert sweep.main([spec_path, "--no_progress"]) == 0
    assert {n: attempts(d) for n, d in dirs.items()} == {**{n: 1 for n in names}, "lr=0.0003/seed=1": 2}
    with open(os.path.join(victim, LOG_FILE)) as f:
        assert re.search(r"resuming .* at iteration 1", f.read())
    with open(os.path.join(victim, "metrics.jsonl")) as f:
        resumed = [json.loads(line) for line in f]
    drop = ("seconds", "per_second", "wall_time")
    strip = lambda r: {k: v for k, v in r.items() if not k.endswith(drop)}  # noqa: E731
    assert [strip(r) for r in resumed] == [strip(r) for r in full]  # exact resume on CPU

    table = aggregate.collect(str(root))
    assert len(table) == 4
    assert sorted((r["lr"], r["seed"]) for r in table) == [(0.0003, 0), (0.0003, 1), (0.001, 0), (0.001, 1)]
    assert all(r["iterations"] == 2 and r["game"] == "gym:CartPole-v1" and r["agent"] == "dqn" for r in table)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_run_process_dies_with_its_launcher():
    """A killed launcher (a Ray worker, the sweep) leaves no orphan training process behind."""
    script = (
        "import subprocess, sys; from accumbens.sweep_executors import _with_parent_death_signal as w; "
        "p = subprocess.Popen(w(['/bin/sleep', '60'])); print(p.pid, flush=True); sys.stdin.readline()"
    )
    launcher = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child = int(launcher.stdout.readline())

    def alive(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has died
        except FileNotFoundError:
            return False

    time.sleep(0.5)  # the prefix has exec'd sleep
    assert alive(child)
    launcher.kill()
    launcher.wait()
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_local_executor_retries_then_reports_the_failure(tmp_path):
    """A run whose process keeps failing is launched 1 + max_retries times, then reported with its log."""
    (tmp_path / "crash_on_import.py").write_text("import os\nprint('crashing on purpose', flush=True)\nos._exit(7)\n")
    run = sweep.Run(
        name="broken", base_dir=str(tmp_path / "broken"), gin_files=("dqn/cartpole",), gin_bindings=(),
        params={}, gin_modules=("crash_on_import",), num_iterations=1,
    )
    s = sweep.Sweep([run], str(tmp_path), env={"PYTHONPATH": str(tmp_path)}, max_retries=1)
    seen = []
    from accumbens.sweep_executors import run_local

    (result,) = run_local([run], s, on_done=seen.append)
    assert (result.ok, result.returncode, result.attempts) == (False, 7, 2)
    assert "crashing on purpose" in result.log_tail and seen == [result]
    assert attempts(run.base_dir) == 2
