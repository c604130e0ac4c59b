"""Command line: run (or resume) one experiment from gin files.

    python -m accumbens.train --base_dir runs/pong --gin_files dqn/atari \
        --gin_bindings "create_environment.name = 'atari:Breakout'"

`--gin_files` takes paths or packaged configs by short name (`dqn/minatar` is
`accumbens/configs/dqn/minatar.gin`); gin files may `include 'dqn/minatar.gin'` the same way.
With no arguments it runs the embedded default (`quickstart.gin`: a short DQN run on MinAtar
Breakout) into `./runs/quickstart`. Re-running with the same `--base_dir` resumes.

Your own agent lives in your own module: a gin file imports it (`import my_agent`; the folder of
every gin file given here is put on the import path first) or `--gin_modules my_agent` does, and
`create_agent.agent_fn = @MyAgent` selects it (docs/writing_an_agent.md). Configuration errors
(unknown bindings, agents or modules) are reported before anything is written to `--base_dir`.
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
import re
import sys
from typing import Optional, Sequence

import gin

CONFIG_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
DEFAULT_GIN_FILE = "quickstart"


def import_configurables() -> None:
    """Imports every module that registers gin configurables, so any binding can be parsed.

    Packaged agents (`registry.PACKAGED_AGENTS`) and runners (`runners.RUNNERS`) are listed in one
    place each; adding an agent or runner there is enough for its bindings to parse.
    """
    import importlib

    import accumbens.agents.networks  # noqa: F401
    import accumbens.environments  # noqa: F401  (imports every family's module)
    import accumbens.replay  # noqa: F401
    from accumbens.agents.registry import PACKAGED_AGENTS
    from accumbens.runners import RUNNERS

    for reference in list(PACKAGED_AGENTS.values()) + list(RUNNERS.values()):
        importlib.import_module(reference.split(":")[0])


def resolve_gin_file(name: str) -> str:
    """A path as given if it exists, else a packaged config by short name ('dqn/atari')."""
    if os.path.isfile(name):
        return name
    for candidate in (name, name + ".gin"):
        path = os.path.join(CONFIG_ROOT, candidate)
        if os.path.isfile(path):
            return path
    packaged = sorted(
        os.path.relpath(os.path.join(folder, f), CONFIG_ROOT)[: -len(".gin")]
        for folder, _, files in os.walk(CONFIG_ROOT)
        for f in files
        if f.endswith(".gin")
    )
    raise FileNotFoundError(f"gin file {name!r} is neither a file nor a packaged config; packaged configs: {packaged}")


def add_gin_file_folders_to_path(gin_files: Sequence[str]) -> list[str]:
    """Puts the folder of each user gin file (not packaged configs), then the working directory, on `sys.path`.

    So `import my_agent` in `path/to/my_agent.gin` finds `path/to/my_agent.py` from any working
    directory, as Python finds a script's neighbours, and `--gin_modules my_agent` finds
    `./my_agent.py` under the `accumbens-train` script as under `python -m`. Returns the folders
    added (none twice).
    """
    added = []
    folders = [os.path.dirname(os.path.abspath(f)) for f in gin_files if os.path.isfile(f)]  # not short names
    for folder in reversed(folders + [os.getcwd()]):  # inserted in reverse: the first gin file's folder first
        if folder not in sys.path:
            sys.path.insert(0, folder)
            added.append(folder)
    return added


def import_gin_modules(modules: Sequence[str]) -> None:
    """Imports user modules (`--gin_modules`) so their gin configurables can be bound and referenced.

    Raises:
      ImportError: a module cannot be imported; the message names it and where Python looked.
    """
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ImportError(f"--gin_modules {module}: {e}", name=e.name) from e


class _QuietIncludeProbes(logging.Filter):
    """Drops gin's "Path not found" errors, logged while it probes the include search path."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Path not found")


def parse_config(gin_files: Sequence[str], gin_bindings: Sequence[str], gin_modules: Sequence[str] = ()) -> None:
    """Parses gin files (paths or short names) and bindings, with packaged configs on the include path.

    `gin_modules` are imported first. Each user gin file's folder is put on `sys.path` and on gin's
    include search path, so its `import` and `include` statements find the modules and gin files
    that sit next to it, whatever the working directory.
    """
    import_configurables()
    add_gin_file_folders_to_path(gin_files)
    import_gin_modules(gin_modules)
    gin.clear_config()
    gin.add_config_file_search_path(CONFIG_ROOT)
    for f in gin_files:  # a user gin file may include its neighbours by name, from any directory
        if os.path.isfile(f):
            gin.add_config_file_search_path(os.path.dirname(os.path.abspath(f)))
    quiet = _QuietIncludeProbes()
    logging.getLogger().addFilter(quiet)
    try:
        gin.parse_config_files_and_bindings([resolve_gin_file(f) for f in gin_files], list(gin_bindings), finalize_config=False)
    finally:
        logging.getLogger().removeFilter(quiet)


def _import_error_message(error: ImportError) -> str:
    """What could not be imported, from where, and where Python looked for it."""
    name = error.name
    if not name:  # gin re-raises import errors with the gin file and line added, dropping `name`
        match = re.search(r"No module named '([^']+)'", str(error))
        name = match.group(1) if match else None
    missing = f"module {name!r}" if name else "a module"
    return (
        f"cannot import {missing}.\n{error}\nPython looked in the folder of each gin file given to "
        f"--gin_files, the working directory ({os.getcwd()}), PYTHONPATH and the installed packages. "
        "Check the module's spelling, put it next to the gin file that imports it or on PYTHONPATH, "
        "or install the package it needs."
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="accumbens-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base_dir", default=None, help="where checkpoints, logs and config.gin go (default: runs/<first gin file>)")
    parser.add_argument("--gin_files", nargs="+", default=[DEFAULT_GIN_FILE], help="gin files or packaged config names")
    parser.add_argument("--gin_bindings", nargs="*", default=[], help="extra bindings, e.g. \"Runner.num_iterations = 3\"")
    parser.add_argument(
        "--gin_modules",
        nargs="*",
        default=[],
        help="Python modules to import before parsing (your agent's module), as gin's `import` would",
    )
    parser.add_argument("--runner", default=None, help="runner by name (default: create_runner.runner_name in gin, else 'host')")
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="one of several processes of a compiled run (jax.distributed; JAX_COORDINATOR_ADDRESS, "
        "JAX_NUM_PROCESSES, JAX_PROCESS_ID): see docs/scaling.md",
    )
    return parser


def results_layout(base_dir: str) -> tuple[str, str]:
    """(what a finished run wrote, the run folders to plot) for the closing message.

    Host runs write their files into `base_dir`; compiled and multi_seed runs into `seed_<n>/`
    folders, which a compiled hyperparameter sweep nests under one `<binding>=<value>/` folder per
    swept binding.
    """
    files = "metrics.csv, metrics.jsonl, tensorboard/"
    per_seed = sorted(glob.glob(os.path.join(glob.escape(base_dir), "**", "seed_*", "metrics.jsonl"), recursive=True))
    if not per_seed:
        return f"{base_dir}: {files}, config.gin, checkpoints/", base_dir
    depth = os.path.relpath(per_seed[0], base_dir).count(os.sep) - 1  # folders above seed_<n>
    layout = "/".join(["<binding>=<value>"] * depth + ["seed_<n>"])
    runs = os.path.join(base_dir, *(["*"] * depth), "seed_*")
    return f"{base_dir}: config.gin, checkpoints/, and per run {layout}/{{{files}}}", runs


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    base_dir = args.base_dir or os.path.join("runs", os.path.splitext(args.gin_files[0])[0].replace("/", "_"))
    if args.distributed:  # before anything computes with JAX
        from accumbens.runners import distributed

        try:
            distributed.initialize()
        except ValueError as e:
            print(f"accumbens-train: {e}", file=sys.stderr)
            return 2
    try:
        parse_config(args.gin_files, args.gin_bindings, args.gin_modules)
    except ImportError as e:
        print(f"accumbens-train: configuration error: {_import_error_message(e)}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, IOError) as e:
        message = str(e)
        if "No configurable matching" in message:
            message += (
                "\nIf it is defined in your own module, import that module first: `import my_module` in "
                "the gin file (its folder is on the import path) or --gin_modules my_module."
            )
        print(f"accumbens-train: configuration error: {message}", file=sys.stderr)
        return 2
    from accumbens.runners import ConfigMismatchError, create_runner

    try:
        runner = create_runner(base_dir=base_dir, runner_name=args.runner)
    except ConfigMismatchError as e:
        print(f"accumbens-train: {e}", file=sys.stderr)
        return 3
    except ValueError as e:
        print(f"accumbens-train: configuration error: {e}", file=sys.stderr)
        return 2
    print(f"[accumbens] writing to {runner.base_dir}", flush=True)
    runner.run_experiment()
    where, runs = results_layout(runner.base_dir)
    print(f"[accumbens] done. Results in {where}. Plot with: python -m accumbens.plot {runs} -o curves.png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
