"""Atomic, verifiable, rotating checkpoints: one directory per iteration, never pickle.

Layout under `<base_dir>/checkpoints/`:
    ckpt-000007/            a complete checkpoint of the state after iteration 7
        manifest.json       iteration, free-form metadata, and a BLAKE2 digest of every file
        ...                 whatever the writer put there (agent msgpack, replay npz, JSON)
    .tmp-ckpt-000008-<pid>  a checkpoint being written; renamed into place only when complete

A checkpoint is valid when its manifest parses and every listed file exists with its digest, so
a crash mid-write leaves only a temporary folder (removed at the next start) and a corrupted file
is detected at load time; the loader then falls back to the previous checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from typing import Callable, Optional

MANIFEST = "manifest.json"
_NAME = re.compile(r"^ckpt-(\d+)$")


class CorruptCheckpointError(RuntimeError):
    """A checkpoint directory exists but cannot be trusted."""


def _digest(path: str) -> str:
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _files_under(root: str) -> list[str]:
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            rel = os.path.relpath(os.path.join(folder, name), root)
            if rel != MANIFEST:
                found.append(rel)
    return sorted(found)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointManager:
    """Writes and finds checkpoints in `directory`, keeping the newest `keep` of them."""

    def __init__(self, directory: str, keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = directory
        self.keep = keep
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):  # leftovers of a run killed while writing
            if name.startswith(".tmp-"):
                shutil.rmtree(os.path.join(directory, name), ignore_errors=True)

    def path(self, iteration: int) -> str:
        return os.path.join(self.directory, f"ckpt-{iteration:06d}")

    def iterations(self) -> list[int]:
        """Iterations with a checkpoint directory (valid or not), ascending."""
        found = [int(m.group(1)) for m in map(_NAME.match, os.listdir(self.directory)) if m]
        return sorted(found)

    def save(self, iteration: int, write: Callable[[str], None], metadata: Optional[dict] = None) -> str:
        """Calls `write(tmp_dir)`, seals it with a manifest, renames it into place, prunes old ones."""
        tmp = os.path.join(self.directory, f".tmp-ckpt-{iteration:06d}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        write(tmp)
        files = {rel: _digest(os.path.join(tmp, rel)) for rel in _files_under(tmp)}
        manifest = {"iteration": iteration, "files": files, "metadata": metadata or {}}
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        final = self.path(iteration)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(self.directory)
        for old in self.iterations()[: -self.keep]:
            shutil.rmtree(self.path(old), ignore_errors=True)
        return final

    def verify(self, iteration: int) -> dict:
        """Returns the manifest of a checkpoint, or raises `CorruptCheckpointError`."""
        path = self.path(iteration)
        try:
            with open(os.path.join(path, MANIFEST)) as f:
                manifest = json.load(f)
            files = manifest["files"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CorruptCheckpointError(f"{path}: unreadable manifest ({e})") from e
        if manifest.get("iteration") != iteration:
            raise CorruptCheckpointError(f"{path}: manifest is for iteration {manifest.get('iteration')}")
        for rel, expected in files.items():
            full = os.path.join(path, rel)
            if not os.path.isfile(full):
                raise CorruptCheckpointError(f"{path}: missing file {rel}")
            if _digest(full) != expected:
                raise CorruptCheckpointError(f"{path}: file {rel} does not match its digest")
        return manifest

    def restore_latest(self, read: Callable[[str, dict], None]) -> Optional[int]:
        """Restores the newest checkpoint that verifies and reads; returns its iteration or None.

        A corrupt or unreadable newer checkpoint is reported with a warning and skipped.
        """
        for iteration in reversed(self.iterations()):
            try:
                manifest = self.verify(iteration)
                read(self.path(iteration), manifest)
                return iteration
            except Exception as e:  # noqa: BLE001 - any failure to read means: try the previous one
                warnings.warn(
                    f"checkpoint {self.path(iteration)} could not be restored ({e}); "
                    "falling back to the previous checkpoint",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return None
