"""Executors for `accumbens.sweep`: where and how each run's `accumbens.train` subprocess runs.

  local  a pool of `max_parallel` (default: CPU count) concurrent subprocesses on this machine;
         no dependency beyond the standard library.
  ray    one Ray task per run with declared `num_cpus`/`num_gpus` (Ray sets CUDA_VISIBLE_DEVICES
         for the task; the run's subprocess inherits it). `ray.init()` starts a local Ray unless
         `address` joins a cluster (`ray start --head` on one machine, `ray start --address=...` on
         the others); the results root must then be a folder every node sees (a shared file system).
         Needs `pip install -e ".[cluster]"`.

Both relaunch a run whose subprocess fails or is killed, up to `max_retries` times (Ray: the task is
retried by Ray itself, `max_retries` with `retry_exceptions`, also when its worker or node dies);
every attempt is the same `accumbens.train` command, so it resumes from the run's last checkpoint.

One attempt (`run_attempt`): takes an exclusive `flock` on `<base_dir>/.sweep.lock` (held by the
subprocess too, so a second sweep never writes the same run concurrently), appends the output to
`<base_dir>/sweep.log` after a header line naming the attempt, writes the subprocess id to
`<base_dir>/.sweep.pid`, and on Linux asks the kernel to kill the subprocess if its launcher dies
(a killed Ray worker leaves no orphan writing to the run folder; exit status 111: the launcher died
before the subprocess started).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import fcntl
import os
import subprocess
import sys
import threading
import time
import uuid
import warnings
from typing import Callable, Optional, Sequence

from accumbens.sweep import LOG_FILE, Run, Sweep

PID_FILE = ".sweep.pid"
LOCK_FILE = ".sweep.lock"
_HEADER = "=== accumbens.sweep attempt"


@dataclasses.dataclass
class RunResult:
    """How a run ended: ok (exit status 0), the last exit status, attempts made, its log."""

    name: str
    ok: bool
    returncode: Optional[int]
    attempts: int
    log: str
    seconds: float
    log_tail: str = ""


class RunFailed(RuntimeError):
    """An attempt's subprocess exited with a non-zero status (raised so Ray retries the task)."""


def _tail(path: str, lines: int = 8) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip()
    except OSError:
        return ""


# Linux: the run's process asks the kernel for SIGKILL when its launcher dies, then becomes the
# training process (PR_SET_PDEATHSIG survives exec). Done in a tiny Python prefix, not a
# `preexec_fn`, so no Python code runs between fork and exec in the (multi-threaded) launcher.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGKILL); "  # PR_SET_PDEATHSIG = 1
    "os.getppid() == int(sys.argv[1]) or sys.exit(111); os.execv(sys.argv[2], sys.argv[2:])"
)
# Forking to exec at once is safe, whatever JAX (imported here to validate gin configs) warns.
warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)


def _with_parent_death_signal(command: list[str]) -> list[str]:
    if not sys.platform.startswith("linux"):
        return command
    return [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *command]


def _lock(path: str, timeout: float) -> int:
    """Opens and exclusively flocks `path`, waiting up to `timeout` s; returns the descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise RunFailed(f"{path} is locked: another process is running this run") from None
            time.sleep(0.5)


def count_attempts(log: str, token: str) -> int:
    """Attempts this sweep launch (`token`) has made, from the headers in the run's log."""
    try:
        with open(log, errors="replace") as f:
            return sum(1 for line in f if line.startswith(_HEADER) and token in line)
    except OSError:
        return 0


def run_attempt(run: Run, env: dict, token: str, lock_timeout: float = 120.0, cwd: Optional[str] = None) -> int:
    """Runs `run`'s `accumbens.train` command once, to completion; returns its exit status.

    `env`: extra environment variables (on top of this process's); `token`: identifies the sweep
    launch in the log headers (attempts are counted from them).
    """
    os.makedirs(run.base_dir, exist_ok=True)
    log = os.path.join(run.base_dir, LOG_FILE)
    fd = _lock(os.path.join(run.base_dir, LOCK_FILE), lock_timeout)
    try:
        attempt = count_attempts(log, token) + 1
        with open(log, "a") as out:
            out.write(f"{_HEADER} {attempt} (sweep {token}) host {os.uname().nodename} at {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n")
            out.flush()
            process = subprocess.Popen(
                _with_parent_death_signal(run.command()),
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                cwd=cwd if cwd and os.path.isdir(cwd) else None,
                pass_fds=(fd,),  # the child holds the lock too, for as long as it lives
            )
            with open(os.path.join(run.base_dir, PID_FILE), "w") as f:
                f.write(str(process.pid))
            returncode = process.wait()
            out.write(f"=== exit status {returncode} ===\n")
        return returncode
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- local
def run_local(
    runs: Sequence[Run],
    sweep: Sweep,
    on_done: Callable[[RunResult], None] = lambda r: None,
    token: Optional[str] = None,
) -> list[RunResult]:
    """Runs `runs` in a pool of `sweep.max_parallel` concurrent subprocesses; each retried up to
    `sweep.max_retries` times."""
    token = token or uuid.uuid4().hex[:8]
    cwd = os.getcwd()

    def one(run: Run) -> RunResult:
        start = time.time()
        returncode = None
        for _ in range(sweep.max_retries + 1):
            try:
                returncode = run_attempt(run, sweep.env, token, cwd=cwd)
            except RunFailed as e:  # locked by another process
                log = os.path.join(run.base_dir, LOG_FILE)
                result = RunResult(run.name, False, None, count_attempts(log, token), log, time.time() - start, str(e))
                on_done(result)
                return result
            if returncode == 0:
                break
        log = os.path.join(run.base_dir, LOG_FILE)
        ok = returncode == 0
        result = RunResult(run.name, ok, returncode, count_attempts(log, token), log, time.time() - start, "" if ok else _tail(log))
        on_done(result)
        return result

    workers = sweep.max_parallel or os.cpu_count() or 1
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sweep") as pool:
        return list(pool.map(one, runs))


# ----------------------------------------------------------------------------- ray
def _ray_task(run_json: dict, env: dict, token: str, cwd: str) -> dict:
    """One attempt inside a Ray worker; raises `RunFailed` on a non-zero exit so Ray retries it."""
    run = Run(**{k: tuple(v) if isinstance(v, list) else v for k, v in run_json.items()})
    start = time.time()
    returncode = run_attempt(run, env, token, cwd=cwd)
    if returncode != 0:
        raise RunFailed(f"{run.name}: exit status {returncode}")
    log = os.path.join(run.base_dir, LOG_FILE)
    return dataclasses.asdict(RunResult(run.name, True, 0, count_attempts(log, token), log, time.time() - start))


def run_ray(
    runs: Sequence[Run],
    sweep: Sweep,
    address: Optional[str] = None,
    on_done: Callable[[RunResult], None] = lambda r: None,
    token: Optional[str] = None,
    shutdown: bool = True,
) -> list[RunResult]:
    """Runs each run as a Ray task (`sweep.resources` per task, retried `sweep.max_retries` times).

    address None: a local Ray (limited to `sweep.max_parallel` CPUs if set) unless one is already
    initialised in this process; otherwise `ray.init(address=address)` joins that cluster.
    """
    try:
        import ray
    except ImportError as e:
        raise ImportError('the ray executor needs Ray: pip install -e ".[cluster]" (or pip install "ray>=2.9")') from e
    token = token or uuid.uuid4().hex[:8]
    started = False
    if not ray.is_initialized():
        kwargs = {"address": address} if address else ({"num_cpus": sweep.max_parallel} if sweep.max_parallel else {})
        ray.init(**kwargs, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        task = ray.remote(
            num_cpus=sweep.resources.get("num_cpus", 1),
            num_gpus=sweep.resources.get("num_gpus", 0),
            max_retries=sweep.max_retries,
            retry_exceptions=True,
        )(_ray_task)
        cwd = os.getcwd()
        pending = {task.remote(run.to_json(), sweep.env, token, cwd): run for run in runs}
        results = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            run = pending.pop(ref)
            log = os.path.join(run.base_dir, LOG_FILE)
            try:
                result = RunResult(**ray.get(ref))
            except Exception as e:  # noqa: BLE001 - the task failed on its last retry (or its node died)
                result = RunResult(run.name, False, None, count_attempts(log, token), log, 0.0, f"{_tail(log)}\n{type(e).__name__}: {e}".strip())
            results[run.name] = result
            on_done(result)
        return [results[run.name] for run in runs]
    finally:
        if started and shutdown:
            ray.shutdown()


EXECUTORS = {"local": run_local, "ray": run_ray}


def launch(executor: str, runs: Sequence[Run], sweep: Sweep, address: Optional[str] = None, progress: bool = True) -> list[RunResult]:
    """Runs `runs` with the named executor behind a progress bar (runs finished / failed)."""
    import tqdm

    lock = threading.Lock()
    bar = tqdm.tqdm(total=len(runs), desc=f"sweep ({executor})", unit="run", disable=not progress, file=sys.stdout)
    failed = [0]

    def on_done(result: RunResult) -> None:
        with lock:
            failed[0] += not result.ok
            bar.set_postfix(failed=failed[0], last=result.name)
            bar.update(1)

    try:
        if executor == "local":
            if address:
                raise ValueError("--address is for the ray executor")
            return run_local(runs, sweep, on_done)
        if executor == "ray":
            return run_ray(runs, sweep, address, on_done)
        raise ValueError(f"unknown executor {executor!r}; valid: {sorted(EXECUTORS)}")
    finally:
        bar.close()


__all__ = ["EXECUTORS", "RunFailed", "RunResult", "count_attempts", "launch", "run_attempt", "run_local", "run_ray"]
