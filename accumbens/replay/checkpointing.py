"""Saving and loading replay contents: one `.npz` of arrays plus JSON metadata, never pickle.

A replay checkpoint in `directory` is two files:

  replay.npz   the arrays (np.savez, uncompressed); it also embeds the metadata as UTF-8 bytes under
               the key `__metadata__`, so that the arrays and the metadata that describes them are
               written in one atomic rename and can never disagree;
  replay.json  the same metadata, human readable (informational; `load` trusts the embedded copy).

Both are written to a temporary name in the same directory and renamed into place
(`os.replace`, atomic on POSIX). Loading reads the .npy members with `allow_pickle=False` (large
ones straight into the buffer's storage), checks each member's CRC, and turns every way a file can
be missing, truncated or corrupt into a `ReplayCheckpointError` that names the file.
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Mapping

import numpy as np

from accumbens.atomic import atomic_write

ARRAYS_FILENAME = "replay.npz"
METADATA_FILENAME = "replay.json"
_METADATA_KEY = "__metadata__"
FORMAT_VERSION = 1


class ReplayCheckpointError(ValueError):
    """A replay checkpoint is missing, corrupt, or does not match the buffer loading it."""


def save_arrays(directory: str, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any]) -> None:
    """Writes `arrays` and `metadata` (JSON-serialisable) atomically into `directory`."""
    os.makedirs(directory, exist_ok=True)
    meta = dict(metadata, format_version=FORMAT_VERSION)
    meta_text = json.dumps(meta, indent=2, sort_keys=True)
    payload = dict(arrays)
    if _METADATA_KEY in payload:
        raise ValueError(f"Array name {_METADATA_KEY!r} is reserved.")
    payload[_METADATA_KEY] = np.frombuffer(meta_text.encode("utf-8"), dtype=np.uint8)
    atomic_write(os.path.join(directory, ARRAYS_FILENAME), lambda f: np.savez(f, **payload))
    atomic_write(
        os.path.join(directory, METADATA_FILENAME), lambda f: f.write(meta_text.encode("utf-8"))
    )


class CheckpointReader:
    """Reads a replay checkpoint array by array (use as a context manager).

    `read(name)` returns an array; `read_into(name, out)` streams a large array straight into
    `out` (the replay's own storage), so loading 7 GB of Atari frames needs no second 7 GB.
    Every read checks the member's CRC; every failure is a `ReplayCheckpointError`.
    """

    def __init__(self, directory: str):
        self.path = os.path.join(directory, ARRAYS_FILENAME)
        if not os.path.exists(self.path):
            raise ReplayCheckpointError(f"No replay checkpoint at {self.path!r} (expected {ARRAYS_FILENAME}).")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (OSError, zipfile.BadZipFile, ValueError) as e:
            raise self._corrupt(e) from e
        self.names = [n[:-4] for n in self._zip.namelist() if n.endswith(".npy")]
        if _METADATA_KEY not in self.names:
            self.close()
            raise ReplayCheckpointError(f"Replay checkpoint {self.path!r} has no embedded metadata.")
        try:
            self.metadata = json.loads(self.read(_METADATA_KEY).tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            self.close()
            raise ReplayCheckpointError(f"Replay checkpoint {self.path!r} has unreadable metadata: {e}") from e
        self.names.remove(_METADATA_KEY)
        if self.metadata.get("format_version") != FORMAT_VERSION:
            self.close()
            raise ReplayCheckpointError(
                f"Replay checkpoint {self.path!r} has format version "
                f"{self.metadata.get('format_version')!r}; this code reads version {FORMAT_VERSION}."
            )

    def _corrupt(self, error: Exception) -> ReplayCheckpointError:
        return ReplayCheckpointError(
            f"Replay checkpoint {self.path!r} is corrupt or truncated ({type(error).__name__}: {error}). "
            "Restore it from an earlier checkpoint."
        )

    def _open_member(self, name: str):
        if name not in self.names and name != _METADATA_KEY:
            raise ReplayCheckpointError(f"Replay checkpoint {self.path!r} lacks the array {name!r}.")
        return self._zip.open(name + ".npy")

    def read(self, name: str) -> np.ndarray:
        """The whole array `name`."""
        try:
            with self._open_member(name) as f:
                return np.lib.format.read_array(f, allow_pickle=False)
        except ReplayCheckpointError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise self._corrupt(e) from e

    def read_into(self, name: str, out: np.ndarray) -> None:
        """Reads array `name` into the C-contiguous `out`, which must match its shape and dtype.

        On a CRC or length error, `out` holds partial data and ReplayCheckpointError is raised.
        """
        try:
            with self._open_member(name) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                if tuple(shape) != out.shape or dtype != out.dtype or (fortran and out.ndim > 1):
                    raise ReplayCheckpointError(
                        f"Replay checkpoint {self.path!r}: array {name!r} has shape {tuple(shape)} and "
                        f"dtype {dtype}, expected {out.shape} and {out.dtype}."
                    )
                if not out.flags.c_contiguous:
                    raise ValueError("read_into needs a C-contiguous destination")
                view = memoryview(out.reshape(-1).view(np.uint8))
                done = 0
                while done < view.nbytes:
                    got = f.readinto(view[done:])
                    if not got:
                        raise EOFError(f"array {name!r} ends after {done} of {view.nbytes} bytes")
                    done += got
                if f.read(1):  # also makes zipfile check the CRC at the member's end
                    raise ValueError(f"array {name!r} has trailing bytes")
        except ReplayCheckpointError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise self._corrupt(e) from e

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> "CheckpointReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_arrays(directory: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reads everything `save_arrays` wrote: (arrays, metadata); raises ReplayCheckpointError."""
    with CheckpointReader(directory) as reader:
        return {name: reader.read(name) for name in reader.names}, reader.metadata


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
