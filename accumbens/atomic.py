"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half.

Every file the framework rewrites in place (replay checkpoints, dataset manifests and chunks, a
run's config.gin, a sweep's run records) goes through `atomic_write`: the content is written to a
temporary file next to the target, flushed and fsynced, then renamed over it (`os.replace`, atomic
on POSIX). A crash mid-write leaves at most the temporary file, which is removed when the writer
raises and which readers never look at.
"""
from __future__ import annotations

import os
from typing import IO, Callable


def atomic_write(path: str, write: Callable[[IO], None], *, text: bool = False) -> None:
    """Calls `write(file)` on a temporary file next to `path`, fsyncs it and renames it into place.

    Args:
      path: the file to (re)write.
      write: writes the whole content to the open file it is given.
      text: open the temporary file in text mode ("w") instead of binary ("wb").
    """
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w" if text else "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
