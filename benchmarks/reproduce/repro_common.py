"""Shared plumbing of the reproduction scripts: runs, deadlines, and the results files they write.

Each reproduction script trains "pieces" (one agent setting on one game, several seeds in one
process) through the public CLI, `python -m accumbens.train --runner ... --base_dir ...`, in a
child process, so that:

  * a piece resumes from the runner's own checkpoints when the script is run again (the run
    directories stay under `--runs_dir`);
  * a deadline (`--deadline_s`) or a per-command time limit stops the child cleanly: the
    iterations that finished are in its `seed_<n>/metrics.jsonl` and are kept;
  * the results file (`benchmarks/results/reproduce_<study>.json`) is rewritten atomically after
    every piece, with the per-iteration returns of every seed read back from `metrics.jsonl`.

Results file layout (what `accumbens.plot reproduce` and tests/test_reproduce.py read):

    {"study": str, "description": str, "command": str, "updated": ISO time,
     "pieces": {"<game>/<agent>": {
         "game", "agent", "runner", "gin_files", "gin_bindings", "seeds": [int],
         "iterations_planned": int, "steps_per_iteration": int (agent steps per seed),
         "frames_per_step": int, "status": "complete" | "partial" | "not_run" | "unsupported" | "failed",
         "note": str,
         "total_train_steps": [int per iteration],
         "train_return": [[per iteration] per seed],   # mean training episode return, null if none ended
         "train_episodes": [[per iteration] per seed],
         "eval_return": [[per iteration] per seed],    # greedy evaluation phase (absent: [])
         "wall_seconds": float, "device": str}}}

Returns are null (None) where a phase completed no episode.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Iterable, Optional, Sequence

from accumbens.atomic import atomic_write

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RESULTS_DIR = os.path.join(REPO, "benchmarks", "results")
REFERENCE_DIR = os.path.join(REPO, "benchmarks", "reference")

STATUSES = ("complete", "partial", "not_run", "unsupported", "failed")
_LOCK = threading.RLock()  # pieces may run in parallel threads (one child process each)


class Deadline:
    """Wall-clock budget of one script invocation (None: unlimited)."""

    def __init__(self, seconds: Optional[float]):
        self.start = time.monotonic()
        self.seconds = seconds

    def remaining(self) -> float:
        if self.seconds is None:
            return math.inf
        return self.seconds - (time.monotonic() - self.start)

    def expired(self, margin: float = 0.0) -> bool:
        return self.remaining() <= margin


def load_results(path: str, study: str, description: str) -> dict:
    """The results file at `path`, or a fresh one for `study`."""
    if os.path.exists(path):
        with open(path) as f:
            results = json.load(f)
        if results.get("study") != study:
            raise ValueError(f"{path} holds study {results.get('study')!r}, not {study!r}")
        return results
    return {"study": study, "description": description, "command": "", "updated": "", "pieces": {}}


def save_results(path: str, results: dict) -> None:
    """Writes `results` to `path` atomically (temporary file, then rename)."""
    with _LOCK:
        _save_results(path, results)


def _save_results(path: str, results: dict) -> None:
    results["updated"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: f.write(json.dumps(results, indent=1, allow_nan=False) + "\n"), text=True)


def _finite(value: Any) -> Optional[float]:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def read_seed_records(run_dir: str) -> list[dict]:
    """The per-iteration records a runner wrote to `run_dir/metrics.jsonl` ([] if none yet)."""
    from accumbens.runners.logging import read_records

    if not os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
        return []
    return read_records(run_dir)


def collect_piece(base_dir: str, seeds: Sequence[int]) -> dict:
    """Per-seed curves of a multi-seed run (`base_dir/seed_<n>/metrics.jsonl`), cut to the
    iterations every seed has finished."""
    per_seed = [read_seed_records(os.path.join(base_dir, f"seed_{s}")) for s in seeds]
    done = min((len(r) for r in per_seed), default=0)
    out: dict[str, Any] = {"iterations_done": done}
    out["train_return"] = [[_finite(r.get("train_return_mean")) for r in recs[:done]] for recs in per_seed]
    out["train_episodes"] = [[int(r.get("train_episodes", 0) or 0) for r in recs[:done]] for recs in per_seed]
    has_eval = done > 0 and all("eval_return_mean" in recs[0] for recs in per_seed)
    out["eval_return"] = [[_finite(r.get("eval_return_mean")) for r in recs[:done]] for recs in per_seed] if has_eval else []
    out["total_train_steps"] = [int(r.get("total_train_steps", 0)) for r in per_seed[0][:done]] if done else []
    out["train_seconds"] = [float(r.get("train_seconds", 0.0) or 0.0) for r in per_seed[0][:done]] if done else []
    return out


def device_description() -> str:
    """The accelerator the child processes will use, in words, without starting JAX here (a JAX
    backend in this process would reserve GPU memory the training child needs)."""
    import shutil

    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            names = [line.split(":", 1)[1].split("(")[0].strip() for line in out.splitlines() if ":" in line]
            return f"{len(names)}x {names[0]}" if names else out
    return f"cpu ({os.cpu_count()} cores)"


def has_gpu() -> bool:
    return not device_description().startswith("cpu")


def train_command(runner: str, base_dir: str, gin_files: Sequence[str], gin_bindings: Sequence[str]) -> list[str]:
    """The CLI call that trains (or resumes) one piece."""
    command = [sys.executable, "-m", "accumbens.train", "--runner", runner, "--base_dir", base_dir, "--gin_files", *gin_files]
    if gin_bindings:
        command += ["--gin_bindings", *gin_bindings]
    return command


def run_child(
    command: Sequence[str], timeout: float, log_path: str, echo: bool = True, prefix: str = "", extra_env: Optional[dict] = None
) -> tuple[int, bool, str]:
    """Runs `command` (its own process group), streaming its output to `log_path` (and stdout).

    Stops it with SIGTERM, then SIGKILL after 20 s, once `timeout` seconds have passed.
    Returns (exit code, timed out, the last 4000 characters of its output).
    """
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra_env or {})
    tail: list[str] = []
    timed_out = False
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        process = subprocess.Popen(
            list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env,
            start_new_session=True, bufsize=1,
        )
        start = time.monotonic()
        import selectors

        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            left = timeout - (time.monotonic() - start)
            if left <= 0 and process.poll() is None:
                timed_out = True
                _stop(process)
            events = selector.select(timeout=max(0.0, min(1.0, left)) if left > 0 else 1.0)
            if events:
                line = process.stdout.readline()
                if line:
                    log.write(line)
                    log.flush()
                    tail.append(line)
                    del tail[:-200]
                    if echo:
                        sys.stdout.write(f"    {prefix}| " + line)
                        sys.stdout.flush()
                    continue
            if process.poll() is not None:
                rest = process.stdout.read()
                if rest:
                    log.write(rest)
                    tail.append(rest)
                break
        selector.close()
    return process.returncode, timed_out, "".join(tail)[-4000:]


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the child's process group (it was started in its own session), then SIGKILL."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def run_piece(
    results: dict,
    results_path: str,
    key: str,
    meta: dict,
    runner: str,
    base_dir: str,
    gin_files: Sequence[str],
    gin_bindings: Sequence[str],
    timeout: float,
    echo: bool = True,
    extra_env: Optional[dict] = None,
) -> dict:
    """Trains or resumes one piece in a child process, then records its curves in `results`.

    `meta` holds the piece's description (game, agent, seeds, iterations_planned, ...). The piece
    is 'complete' when every planned iteration is in every seed's metrics, else 'partial'
    (deadline or time limit), or 'failed' (the child exited with an error before finishing).
    """
    seeds = meta["seeds"]
    with _LOCK:
        previous = results["pieces"].get(key)
    if (previous and previous.get("iterations_done", 0) >= meta["iterations_planned"] and previous.get("seeds") == seeds
            and previous.get("gin_files") == list(gin_files) and previous.get("gin_bindings") == list(gin_bindings)):
        print(f"[reproduce] {key}: already trained ({previous['iterations_done']} iterations), not started again", flush=True)
        return previous
    start = time.monotonic()
    command = train_command(runner, base_dir, gin_files, gin_bindings)
    rc, timed_out, tail = run_child(command, timeout, os.path.join(base_dir, "reproduce.log"), echo=echo,
                                    prefix=f"{key} ", extra_env=extra_env)
    piece = dict(meta)
    piece.update(runner=runner, gin_files=list(gin_files), gin_bindings=list(gin_bindings), base_dir=os.path.relpath(base_dir, REPO))
    piece.update(collect_piece(base_dir, seeds))
    with _LOCK:
        previous = results["pieces"].get(key, {})
    piece["wall_seconds"] = float(previous.get("wall_seconds", 0.0)) + (time.monotonic() - start)
    done, planned = piece["iterations_done"], meta["iterations_planned"]
    if done >= planned:
        piece["status"], piece["note"] = "complete", meta.get("note", "")
    elif rc not in (0, None) and not timed_out:
        piece["status"] = "failed"
        piece["note"] = f"the training command exited with code {rc} after {done}/{planned} iterations; last output:\n{tail[-1500:]}"
    else:
        piece["status"] = "partial"
        why = "time limit reached" if timed_out else "stopped"
        piece["note"] = f"{why} after {done}/{planned} iterations; re-run the same command to resume"
    with _LOCK:
        results["pieces"][key] = piece
        save_results(results_path, results)
    return piece


def record_unrun(results: dict, results_path: str, key: str, meta: dict, status: str, note: str) -> None:
    """Records a piece that did not run (deadline, or an unsupported setting), keeping any curves
    an earlier invocation already recorded for it."""
    with _LOCK:
        _record_unrun(results, results_path, key, meta, status, note)


def _record_unrun(results: dict, results_path: str, key: str, meta: dict, status: str, note: str) -> None:
    previous = results["pieces"].get(key)
    if previous and previous.get("iterations_done", 0) > 0 and status == "not_run":
        return
    piece = dict(meta)
    piece.update(status=status, note=note, iterations_done=0, train_return=[], train_episodes=[], eval_return=[],
                 total_train_steps=[], wall_seconds=0.0)
    results["pieces"][key] = piece
    save_results(results_path, results)


def load_reference(name: str) -> dict:
    """`benchmarks/reference/<name>.json`."""
    with open(os.path.join(REFERENCE_DIR, f"{name}.json")) as f:
        return json.load(f)


def final_values(piece: dict, key: str = "train_return", last: int = 1) -> list[float]:
    """Per seed, the mean of `key` over the last `last` finished iterations (seeds with none: skipped)."""
    values = []
    for curve in piece.get(key) or []:
        tail = [v for v in curve[-last:] if v is not None]
        if tail:
            values.append(float(sum(tail) / len(tail)))
    return values


def parse_list(text: str, allowed: Iterable[str], what: str) -> list[str]:
    """A comma-separated CLI list, checked against `allowed` ('all' means all of them)."""
    allowed = list(allowed)
    if text == "all":
        return allowed
    items = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in items if t not in allowed]
    if unknown or not items:
        raise SystemExit(f"unknown {what} {unknown or text!r}; choose from {', '.join(allowed)} or 'all'")
    return items


def progress(iterable, **kwargs):
    """tqdm over pieces when available (it is a dependency of accumbens)."""
    try:
        import tqdm

        return tqdm.tqdm(iterable, **kwargs)
    except ImportError:  # pragma: no cover
        return iterable


def run_parallel(jobs: Sequence, workers: int) -> list:
    """Runs the zero-argument callables `jobs` on `workers` threads (each typically waits on a
    child process); returns their results in order. workers <= 1 runs them one after another."""
    if workers <= 1:
        return [job() for job in jobs]
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return [f.result() for f in [pool.submit(job) for job in jobs]]
