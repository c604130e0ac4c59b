"""Saving and loading replay contents: one `.npz` of arrays plus JSON metadata, never pickle.

A replay checkpoint in `directory` is two files:

  replay.npz   the arrays (np.savez, uncompressed); it also embeds the metadata as UTF-8 bytes under
               the key `__metadata__`, so that the arrays and the metadata that describes them are
               written in one atomic rename and can never disagree;
  replay.json  the same metadata, human readable (informational; `load` trusts the embedded copy).

Both are written to a temporary name in the same directory and renamed into place
(`os.replace`, atomic on POSIX). Loading uses `np.load(..., allow_pickle=False)` and turns every
way a file can be missing, truncated or corrupt into a `ReplayCheckpointError` that names the file.
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Mapping

import numpy as np

ARRAYS_FILENAME = "replay.npz"
METADATA_FILENAME = "replay.json"
_METADATA_KEY = "__metadata__"
FORMAT_VERSION = 1


class ReplayCheckpointError(ValueError):
    """A replay checkpoint is missing, corrupt, or does not match the buffer loading it."""


def _atomic_write_bytes(path: str, writer) -> None:
    """Calls `writer(file)` on a temporary file next to `path`, fsyncs it, then renames it."""
    tmp_path = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp_path, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def save_arrays(directory: str, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any]) -> None:
    """Writes `arrays` and `metadata` (JSON-serialisable) atomically into `directory`."""
    os.makedirs(directory, exist_ok=True)
    meta = dict(metadata, format_version=FORMAT_VERSION)
    meta_text = json.dumps(meta, indent=2, sort_keys=True)
    payload = dict(arrays)
    if _METADATA_KEY in payload:
        raise ValueError(f"Array name {_METADATA_KEY!r} is reserved.")
    payload[_METADATA_KEY] = np.frombuffer(meta_text.encode("utf-8"), dtype=np.uint8)
    _atomic_write_bytes(os.path.join(directory, ARRAYS_FILENAME), lambda f: np.savez(f, **payload))
    _atomic_write_bytes(
        os.path.join(directory, METADATA_FILENAME), lambda f: f.write(meta_text.encode("utf-8"))
    )


def load_arrays(directory: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reads what `save_arrays` wrote. Returns (arrays, metadata); raises ReplayCheckpointError."""
    path = os.path.join(directory, ARRAYS_FILENAME)
    if not os.path.exists(path):
        raise ReplayCheckpointError(f"No replay checkpoint at {path!r} (expected {ARRAYS_FILENAME}).")
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}  # reading checks each member's CRC
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise ReplayCheckpointError(
            f"Replay checkpoint {path!r} is corrupt or truncated ({type(e).__name__}: {e}). "
            "Restore it from an earlier checkpoint."
        ) from e
    if _METADATA_KEY not in arrays:
        raise ReplayCheckpointError(f"Replay checkpoint {path!r} has no embedded metadata.")
    try:
        metadata = json.loads(arrays.pop(_METADATA_KEY).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReplayCheckpointError(f"Replay checkpoint {path!r} has unreadable metadata: {e}") from e
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ReplayCheckpointError(
            f"Replay checkpoint {path!r} has format version {metadata.get('format_version')!r}; "
            f"this code reads version {FORMAT_VERSION}."
        )
    return arrays, metadata


def check_array(arrays: Mapping[str, np.ndarray], name: str, shape: tuple, dtype, source: str) -> np.ndarray:
    """Returns arrays[name] after checking its shape and dtype; raises ReplayCheckpointError."""
    if name not in arrays:
        raise ReplayCheckpointError(f"Replay checkpoint {source!r} lacks the array {name!r}.")
    array = arrays[name]
    if tuple(array.shape) != tuple(shape) or array.dtype != np.dtype(dtype):
        raise ReplayCheckpointError(
            f"Replay checkpoint {source!r}: array {name!r} has shape {array.shape} and dtype "
            f"{array.dtype}, expected {tuple(shape)} and {np.dtype(dtype)}."
        )
    return array
