"""Command line: run (or resume) one experiment from gin files.

    python -m accumbens.train --base_dir runs/pong --gin_files dqn/atari \
        --gin_bindings "create_environment.name = 'atari:Breakout'"

`--gin_files` takes paths or packaged configs by short name (`dqn/minatar` is
`accumbens/configs/dqn/minatar.gin`); gin files may `include 'dqn/minatar.gin'` the same way.
With no arguments it runs the embedded default (`quickstart.gin`: a short DQN run on MinAtar
Breakout) into `./runs/quickstart`. Re-running with the same `--base_dir` resumes.
"""
from __future__ import annotations

import argparse
import logging
import os
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


class _QuietIncludeProbes(logging.Filter):
    """Drops gin's "Path not found" errors, logged while it probes the include search path."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Path not found")


def parse_config(gin_files: Sequence[str], gin_bindings: Sequence[str]) -> None:
    """Parses gin files (paths or short names) and bindings, with packaged configs on the include path."""
    import_configurables()
    gin.clear_config()
    gin.add_config_file_search_path(CONFIG_ROOT)
    quiet = _QuietIncludeProbes()
    logging.getLogger().addFilter(quiet)
    try:
        gin.parse_config_files_and_bindings([resolve_gin_file(f) for f in gin_files], list(gin_bindings), finalize_config=False)
    finally:
        logging.getLogger().removeFilter(quiet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="accumbens-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base_dir", default=None, help="where checkpoints, logs and config.gin go (default: runs/<first gin file>)")
    parser.add_argument("--gin_files", nargs="+", default=[DEFAULT_GIN_FILE], help="gin files or packaged config names")
    parser.add_argument("--gin_bindings", nargs="*", default=[], help="extra bindings, e.g. \"Runner.num_iterations = 3\"")
    parser.add_argument("--runner", default=None, help="runner by name (default: create_runner.runner_name in gin, else 'host')")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    base_dir = args.base_dir or os.path.join("runs", os.path.splitext(args.gin_files[0])[0].replace("/", "_"))
    try:
        parse_config(args.gin_files, args.gin_bindings)
    except (ValueError, FileNotFoundError, IOError) as e:
        print(f"accumbens-train: configuration error: {e}", file=sys.stderr)
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
    runs = os.path.join(base_dir, "seed_*") if hasattr(runner, "seed_dir") else base_dir  # compiled: one folder per seed
    print(
        f"[accumbens] done. Results in {runner.base_dir}: metrics.csv, metrics.jsonl, tensorboard/, "
        f"config.gin, checkpoints/. Plot with: python -m accumbens.plot {runs} -o curves.png",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
