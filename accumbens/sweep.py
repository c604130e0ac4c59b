"""Sweeps: expand a JSON spec of gin grids into runs, skip the finished ones, launch the rest.

    python -m accumbens.sweep examples/sweeps/cartpole_lr.json                 # local process pool
    python -m accumbens.sweep SPEC.json --executor ray                         # local Ray
    python -m accumbens.sweep SPEC.json --executor ray --address HEAD:6379     # a Ray cluster
    python -m accumbens.sweep SPEC.json --dry_run                              # list runs and status

A spec is a small JSON object (every key but `grid`/`runs` optional):

    {
      "gin_files": ["dqn/cartpole"],                       # packaged names or paths
      "gin_bindings": ["Runner.num_iterations = 10"],      # fixed for every run
      "grid": {"create_optimizer.learning_rate": [1e-3, 3e-4], "Runner.seed": [0, 1, 2]},
      "runs": [{"create_environment.name": "gym:CartPole-v1"}, ...],   # a list of binding sets
      "names": {"create_optimizer.learning_rate": "lr"},   # short names in run names
      "results_root": "runs/cartpole_lr",
      "runner": "host",                                    # train.py's --runner
      "gin_modules": [], "env": {"XLA_FLAGS": "..."},
      "executor": "local", "max_parallel": 2, "max_retries": 1,
      "resources": {"num_cpus": 1, "num_gpus": 0}           # per run (Ray)
    }

Runs are the product of the `runs` list (each entry a set of bindings applied together; default
one empty entry) and the `grid` (every combination of its values). A binding key is a gin
parameter (`Scope/Configurable.param`) or `gin_files` (extra gin files for that run, e.g. one per
agent). JSON values become gin literals (strings are quoted, lists become tuples); a string that
starts with `@` or `%` is passed through as a gin reference/macro. Each run gets a readable name,
one folder level per swept key in spec order (`lr=0.001/seed=1`), and its own `--base_dir`
`results_root/<name>`, where `sweep_run.json` records its bindings and swept values.

Before anything is launched, the gin configuration of every run is parsed (unknown
configurables or parameters, missing gin files and bad values fail here, naming the run).
A run whose runner has checkpointed its last iteration is *complete* and skipped; one with an
earlier checkpoint or logged iterations is *partial* and re-launched, and the runner resumes it
from its own last checkpoint (`accumbens.train`'s resume). Each run is `python -m accumbens.train`
in a subprocess whose output goes to `<base_dir>/sweep.log`. Executors: `accumbens.sweep_executors`.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import re
import sys
import time
from typing import Any, Optional, Sequence

from accumbens.atomic import atomic_write

SPEC_KEYS = (
    "gin_files",
    "gin_bindings",
    "gin_modules",
    "grid",
    "runs",
    "names",
    "results_root",
    "runner",
    "env",
    "executor",
    "max_parallel",
    "max_retries",
    "resources",
)
RESOURCE_KEYS = ("num_cpus", "num_gpus")
RUN_FILE = "sweep_run.json"
SWEEP_FILE = "sweep.json"
LOG_FILE = "sweep.log"
_GIN_KEY = re.compile(r"^([A-Za-z_][\w.]*/)*[A-Za-z_][\w.]*\.[A-Za-z_]\w*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


class SpecError(ValueError):
    """The sweep spec is malformed; the message says which key or run and how to fix it."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a sweep.

    name: relative folder under the results root (`lr=0.001/seed=1`, or `run` for a sweep of one);
    base_dir: absolute; gin_files: absolute paths or packaged names; gin_bindings: the spec's fixed
    bindings then the run's own; params: swept key (short name) -> JSON value, in spec order.
    """

    name: str
    base_dir: str
    gin_files: tuple[str, ...]
    gin_bindings: tuple[str, ...]
    params: dict
    gin_modules: tuple[str, ...] = ()
    runner: Optional[str] = None
    num_iterations: Optional[int] = None

    def command(self, python: str = sys.executable) -> list[str]:
        """The `accumbens.train` command line that runs (or resumes) this run."""
        cmd = [python, "-m", "accumbens.train", "--base_dir", self.base_dir, "--gin_files", *self.gin_files]
        if self.gin_bindings:
            cmd += ["--gin_bindings", *self.gin_bindings]
        if self.gin_modules:
            cmd += ["--gin_modules", *self.gin_modules]
        if self.runner:
            cmd += ["--runner", self.runner]
        return cmd

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Sweep:
    """An expanded spec: the runs plus how to launch them."""

    runs: list[Run]
    results_root: str
    env: dict
    executor: str = "local"
    max_parallel: Optional[int] = None
    max_retries: int = 0
    resources: dict = dataclasses.field(default_factory=lambda: {"num_cpus": 1, "num_gpus": 0})


# ----------------------------------------------------------------------------- spec -> runs
def gin_literal(value: Any) -> str:
    """A JSON value as gin source: 'text' quoted, lists as tuples, '@ref'/'%MACRO' as given."""
    if isinstance(value, str):
        return value if value[:1] in ("@", "%") else repr(value)
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        inner = ", ".join(gin_literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{gin_literal(k)}: {gin_literal(v)}" for k, v in value.items()) + "}"
    raise SpecError(f"cannot write {value!r} ({type(value).__name__}) as a gin value")


def _name_value(value: Any) -> str:
    """A value as it appears in a run name: short and safe as a folder name."""
    if isinstance(value, (list, tuple)):
        text = "-".join(_name_value(v) for v in value)
    elif isinstance(value, str):
        text = os.path.splitext(value)[0] if value.endswith(".gin") else value
        text = text.lstrip("@%")
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    return _UNSAFE.sub("_", text).strip("_") or "_"


def _short_name(key: str, names: dict) -> str:
    if key in names:
        return names[key]
    return "agent" if key == "gin_files" else key.rsplit(".", 1)[-1]


def _check_key(key: Any, where: str) -> None:
    if not isinstance(key, str) or not (key == "gin_files" or _GIN_KEY.match(key)):
        raise SpecError(
            f"{where}: {key!r} is not a gin parameter ('Configurable.param' or 'scope/Configurable.param') "
            "nor 'gin_files'"
        )


def _string_list(spec: dict, key: str) -> list[str]:
    value = spec.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"spec key {key!r} must be a list of strings, got {value!r}")
    return value


def _resolve_gin_file(name: str, spec_dir: str) -> str:
    """A gin file path as given, else relative to the spec's folder, else a packaged name (checked at parse)."""
    for candidate in (name, os.path.join(spec_dir, name)):
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    return name


def expand(spec: dict, spec_dir: str = ".", results_root: Optional[str] = None) -> Sweep:
    """Checks a spec's shape and expands it into runs (gin is not parsed here: see `validate`).

    Raises:
      SpecError: unknown keys, an empty grid or run list, non-gin keys, values that cannot be
        written as gin, or two runs that would share a folder.
    """
    if not isinstance(spec, dict):
        raise SpecError(f"a sweep spec is a JSON object, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise SpecError(f"unknown spec key(s) {unknown}; valid keys: {list(SPEC_KEYS)}")
    gin_files = [_resolve_gin_file(f, spec_dir) for f in _string_list(spec, "gin_files")]
    bindings = _string_list(spec, "gin_bindings")
    modules = _string_list(spec, "gin_modules")
    names = spec.get("names", {})
    if not isinstance(names, dict) or not all(isinstance(v, str) and v for v in names.values()):
        raise SpecError(f"'names' maps gin keys to short names (strings), got {names!r}")
    grid = spec.get("grid", {})
    if not isinstance(grid, dict):
        raise SpecError(f"'grid' maps gin keys to lists of values, got {type(grid).__name__}")
    for key, values in grid.items():
        _check_key(key, "grid")
        if not isinstance(values, list) or not values:
            raise SpecError(f"grid[{key!r}] must be a non-empty list of values, got {values!r}")
    entries = spec.get("runs", [{}])
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise SpecError("'runs' must be a non-empty list of objects (binding -> value)")
    for i, entry in enumerate(entries):
        for key in entry:
            _check_key(key, f"runs[{i}]")
    if "grid" in spec and not grid:
        raise SpecError("'grid' is empty: give at least one key with a list of values, or drop it")
    if not gin_files and not any("gin_files" in e for e in entries) and "gin_files" not in grid:
        raise SpecError("no gin files: set 'gin_files' (e.g. [\"dqn/cartpole\"])")
    root = results_root or spec.get("results_root")
    if not isinstance(root, str) or not root:
        raise SpecError("set 'results_root' (where the runs' folders go) in the spec or with --results_root")
    root = os.path.abspath(root)
    executor = spec.get("executor", "local")
    resources = {"num_cpus": 1, "num_gpus": 0}
    extra = spec.get("resources", {})
    if not isinstance(extra, dict) or set(extra) - set(RESOURCE_KEYS):
        raise SpecError(f"'resources' takes {list(RESOURCE_KEYS)}, got {extra!r}")
    resources.update(extra)
    env = spec.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise SpecError(f"'env' maps environment variable names to strings, got {env!r}")

    swept_keys: list[str] = []  # run-list keys first, then grid keys, in spec order
    for entry in entries:
        swept_keys += [k for k in entry if k not in swept_keys]
    swept_keys += [k for k in grid if k not in swept_keys]
    shorts = [_short_name(k, names) for k in swept_keys]
    duplicates = sorted({s for s in shorts if shorts.count(s) > 1})
    if duplicates:
        raise SpecError(f"several swept keys share the short name(s) {duplicates}; give them distinct 'names'")

    runs, seen = [], {}
    grid_items = list(grid.items())
    for entry in entries:
        for combo in itertools.product(*(values for _, values in grid_items)):
            values = dict(entry)
            values.update({k: v for (k, _), v in zip(grid_items, combo)})
            run_files = list(gin_files)
            run_bindings = list(bindings)
            for key, value in values.items():
                if key == "gin_files":
                    extra_files = [value] if isinstance(value, str) else value
                    if not isinstance(extra_files, list) or not all(isinstance(f, str) for f in extra_files):
                        raise SpecError(f"a 'gin_files' value is a gin file or list of them, got {value!r}")
                    run_files += [_resolve_gin_file(f, spec_dir) for f in extra_files]
                else:
                    run_bindings.append(f"{key} = {gin_literal(value)}")
            params = {_short_name(k, names): values[k] for k in swept_keys if k in values}
            name = "/".join(f"{k}={_name_value(v)}" for k, v in params.items()) or "run"
            if name in seen:
                raise SpecError(
                    f"two runs would share the folder {name!r} ({seen[name]} and {params}); "
                    "make the values distinct or drop a duplicate entry"
                )
            seen[name] = params
            runs.append(
                Run(
                    name=name,
                    base_dir=os.path.join(root, name),
                    gin_files=tuple(run_files),
                    gin_bindings=tuple(run_bindings),
                    params=params,
                    gin_modules=tuple(modules),
                    runner=spec.get("runner"),
                )
            )
    max_parallel = spec.get("max_parallel")
    max_retries = spec.get("max_retries", 0)
    if max_parallel is not None and (not isinstance(max_parallel, int) or max_parallel < 1):
        raise SpecError(f"'max_parallel' must be a positive integer, got {max_parallel!r}")
    if not isinstance(max_retries, int) or max_retries < 0:
        raise SpecError(f"'max_retries' must be an integer >= 0, got {max_retries!r}")
    return Sweep(runs, root, dict(env), executor, max_parallel, max_retries, resources)


def load_spec(path: str) -> dict:
    """Reads a JSON sweep spec; errors name the file and the position of a syntax error."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise SpecError(f"{path}: not valid JSON ({e})") from e


# ----------------------------------------------------------------------------- gin validation
def _runner_num_iterations(runner_name: Optional[str]) -> int:
    """num_iterations the chosen runner will use under the gin config parsed now."""
    import importlib
    import inspect

    import gin

    from accumbens.runners import RUNNERS

    def query(binding):
        try:
            return gin.query_parameter(binding)
        except (ValueError, KeyError):
            return None

    name = runner_name or query("create_runner.default_runner") or "host"
    if name not in RUNNERS:
        raise ValueError(f"unknown runner {name!r}; valid runners: {sorted(RUNNERS)}")
    module, cls_name = RUNNERS[name].split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    value = query(f"{cls_name}.num_iterations")
    if value is None:
        value = query("Runner.num_iterations")  # compiled runners fall back to the host Runner's
    if value is None:
        value = inspect.signature(cls.__init__).parameters["num_iterations"].default
    if value is None:  # a fallback default (CompiledRunner): the host Runner's default
        from accumbens.runners.runner import Runner

        value = inspect.signature(Runner.__init__).parameters["num_iterations"].default
    return int(value)


def validate(runs: Sequence[Run]) -> list[Run]:
    """Parses every run's gin config (in this process); returns the runs with `num_iterations` set.

    Raises:
      SpecError: naming the run and gin's message (unknown configurable or parameter, a gin file
        that does not exist, a module that cannot be imported, a bad value).
    """
    from accumbens import train

    checked = []
    for run in runs:
        try:
            train.parse_config(run.gin_files, run.gin_bindings, run.gin_modules)
            num_iterations = _runner_num_iterations(run.runner)
        except (ValueError, FileNotFoundError, ImportError, IOError, SyntaxError) as e:
            raise SpecError(f"run {run.name!r}: bad gin configuration: {e}") from e
        checked.append(dataclasses.replace(run, num_iterations=num_iterations))
    return checked


# ----------------------------------------------------------------------------- run status
def completed_iterations(base_dir: str) -> int:
    """How many iterations a run has checkpointed (0 for none).

    Reads the runner's checkpoint folders (`checkpoints/ckpt-<iteration>/manifest.json`, whose
    presence means the checkpoint was completely written), which the host, multi-seed and compiled
    runners all write; the newest one counts.
    """
    from accumbens.runners.checkpoints import _NAME, MANIFEST

    folder = os.path.join(base_dir, "checkpoints")
    if not os.path.isdir(folder):
        return 0
    done = [
        int(m.group(1))
        for m in map(_NAME.match, os.listdir(folder))
        if m and os.path.isfile(os.path.join(folder, m.group(0), MANIFEST))
    ]
    return max(done) + 1 if done else 0


def run_status(run: Run) -> str:
    """'complete' (last iteration checkpointed), 'partial' (some progress) or 'new'."""
    done = completed_iterations(run.base_dir)
    if run.num_iterations is not None and done >= run.num_iterations:
        return "complete"
    if done or os.path.exists(os.path.join(run.base_dir, "metrics.jsonl")) or os.path.isdir(
        os.path.join(run.base_dir, "checkpoints")
    ):
        return "partial"
    return "new"


def _write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, lambda f: json.dump(payload, f, indent=1, default=str), text=True)


def record_runs(sweep: Sweep, spec: dict) -> None:
    """Writes `results_root/sweep.json` (the spec and every run) and each run's `sweep_run.json`."""
    _write_json(
        os.path.join(sweep.results_root, SWEEP_FILE),
        {"spec": spec, "runs": [{"name": r.name, "params": r.params} for r in sweep.runs]},
    )
    for run in sweep.runs:
        _write_json(os.path.join(run.base_dir, RUN_FILE), {**run.to_json(), "command": run.command()})


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m accumbens.sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("spec", help="the sweep spec (JSON)")
    parser.add_argument("--executor", choices=("local", "ray"), default=None, help="default: the spec's, else local")
    parser.add_argument("--results_root", default=None, help="overrides the spec's results_root")
    parser.add_argument("--max_parallel", type=int, default=None, help="local: concurrent runs (default: CPU count)")
    parser.add_argument("--max_retries", type=int, default=None, help="relaunches of a failed or killed run (resumes)")
    parser.add_argument("--address", default=None, help="ray: an existing cluster ('auto' or HEAD_IP:6379); default: local Ray")
    parser.add_argument("--num_cpus", type=float, default=None, help="ray: CPUs per run (default 1)")
    parser.add_argument("--num_gpus", type=float, default=None, help="ray: GPUs per run (default 0)")
    parser.add_argument("--dry_run", action="store_true", help="list the runs and their status, launch nothing")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from accumbens import sweep_executors

    try:
        spec = load_spec(args.spec)
        sweep = expand(spec, os.path.dirname(os.path.abspath(args.spec)), args.results_root)
        sweep.runs = validate(sweep.runs)
    except (SpecError, OSError) as e:
        print(f"accumbens.sweep: {e}", file=sys.stderr)
        return 2
    executor = args.executor or sweep.executor
    if executor not in sweep_executors.EXECUTORS:
        print(f"accumbens.sweep: unknown executor {executor!r}; valid: {sorted(sweep_executors.EXECUTORS)}", file=sys.stderr)
        return 2
    if args.address and executor != "ray":
        print("accumbens.sweep: --address joins a Ray cluster; add --executor ray", file=sys.stderr)
        return 2
    if args.max_parallel is not None:
        sweep.max_parallel = args.max_parallel
    if args.max_retries is not None:
        sweep.max_retries = args.max_retries
    if args.num_cpus is not None:
        sweep.resources["num_cpus"] = args.num_cpus
    if args.num_gpus is not None:
        sweep.resources["num_gpus"] = args.num_gpus

    statuses = {run.name: run_status(run) for run in sweep.runs}
    counts = {s: sum(v == s for v in statuses.values()) for s in ("complete", "partial", "new")}
    print(
        f"[sweep] {len(sweep.runs)} runs under {sweep.results_root}: {counts['complete']} complete (skipped), "
        f"{counts['partial']} partial (resumed), {counts['new']} new",
        flush=True,
    )
    if args.dry_run:
        width = max(len(r.name) for r in sweep.runs)
        for run in sweep.runs:
            print(f"  {run.name:<{width}}  {statuses[run.name]:<8}  {completed_iterations(run.base_dir)}/{run.num_iterations} iterations")
        return 0
    record_runs(sweep, spec)
    todo = [run for run in sweep.runs if statuses[run.name] != "complete"]
    start = time.time()
    try:
        results = sweep_executors.launch(executor, todo, sweep, address=args.address, progress=not args.no_progress) if todo else []
    except (ImportError, ValueError) as e:  # Ray not installed, --address without Ray
        print(f"accumbens.sweep: {e}", file=sys.stderr)
        return 2
    failed = [r for r in results if not r.ok]
    print(
        f"[sweep] done in {time.time() - start:.0f} s: {counts['complete']} skipped (complete), "
        f"{len(results) - len(failed)} finished, {len(failed)} failed",
        flush=True,
    )
    for result in failed:
        print(f"[sweep] FAILED {result.name} (exit {result.returncode}, {result.attempts} attempt(s)); log {result.log}", flush=True)
        for line in result.log_tail.splitlines():
            print(f"    {line}")
    print(f"[sweep] aggregate with: python -m accumbens.aggregate {sweep.results_root}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
