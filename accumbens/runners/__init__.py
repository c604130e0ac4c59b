"""Runners drive agents through experiments; `create_runner` picks one by name (gin or CLI).

  'host'      `runner.Runner`: Dopamine's host loop over a gymnasium environment.
  'compiled'  `compiled.CompiledRunner`: the whole loop under jit on a gymnax environment, many
              seeds at once (vmap), sharded over all visible devices.
  'offline'   `offline.OfflineRunner`: gradient steps on a fixed dataset, then online evaluation.
  'multi_seed' `multi_seed.MultiSeedRunner`: the host loop for several seeds in one process
              (batched acting, vmapped updates, update overlapped with environment steps).
"""
from __future__ import annotations

import importlib
from typing import Optional

import gin

from accumbens.runners.runner import ConfigMismatchError, Runner

# name -> "module:Class"; imported on use so optional dependencies stay optional.
RUNNERS: dict[str, str] = {
    "host": "accumbens.runners.runner:Runner",
    "compiled": "accumbens.runners.compiled:CompiledRunner",
    "offline": "accumbens.runners.offline:OfflineRunner",
    "multi_seed": "accumbens.runners.multi_seed:MultiSeedRunner",
}


@gin.configurable
def create_runner(base_dir: str, runner_name: Optional[str] = None, default_runner: str = "host"):
    """Builds the runner called `runner_name` (CLI) or `default_runner` (gin) for `base_dir`."""
    name = runner_name or default_runner
    if name not in RUNNERS:
        raise ValueError(f"unknown runner {name!r}; valid runners: {sorted(RUNNERS)}")
    module, cls = RUNNERS[name].split(":")
    return getattr(importlib.import_module(module), cls)(base_dir=base_dir)


__all__ = ["ConfigMismatchError", "RUNNERS", "Runner", "create_runner"]
