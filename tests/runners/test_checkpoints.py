"""Checkpoint manager: atomic writes, pruning, corruption detection and fallback."""
import os

import pytest

from accumbens.runners.checkpoints import CheckpointManager, CorruptCheckpointError


def _writer(payload):
    def write(directory):
        os.makedirs(os.path.join(directory, "sub"))
        with open(os.path.join(directory, "sub", "data.bin"), "wb") as f:
            f.write(payload)

    return write


def _reader(into):
    def read(directory, manifest):
        with open(os.path.join(directory, "sub", "data.bin"), "rb") as f:
            into.append((manifest["iteration"], f.read()))

    return read


def test_keeps_last_n_and_restores_newest(tmp_path):
    manager = CheckpointManager(str(tmp_path), keep=2)
    for i in range(4):
        manager.save(i, _writer(bytes([i]) * 10))
    assert manager.iterations() == [2, 3]
    got = []
    assert manager.restore_latest(_reader(got)) == 3
    assert got == [(3, bytes([3]) * 10)]


def test_corrupt_newest_falls_back_with_a_warning(tmp_path):
    manager = CheckpointManager(str(tmp_path), keep=3)
    manager.save(0, _writer(b"good"))
    manager.save(1, _writer(b"newer"))
    with open(os.path.join(manager.path(1), "sub", "data.bin"), "wb") as f:
        f.write(b"bit rot")
    with pytest.raises(CorruptCheckpointError, match="digest"):
        manager.verify(1)
    got = []
    with pytest.warns(RuntimeWarning, match="falling back"):
        assert manager.restore_latest(_reader(got)) == 0
    assert got == [(0, b"good")]


def test_missing_manifest_and_leftover_temporaries(tmp_path):
    manager = CheckpointManager(str(tmp_path))
    manager.save(0, _writer(b"a"))
    os.makedirs(os.path.join(str(tmp_path), "ckpt-000001"))  # a partial directory without manifest
    os.makedirs(os.path.join(str(tmp_path), ".tmp-ckpt-000002-123"))
    manager = CheckpointManager(str(tmp_path))  # a restart cleans temporaries
    assert not any(n.startswith(".tmp-") for n in os.listdir(str(tmp_path)))
    with pytest.warns(RuntimeWarning):
        assert manager.restore_latest(_reader([])) == 0


def test_no_checkpoint_restores_nothing(tmp_path):
    assert CheckpointManager(str(tmp_path)).restore_latest(_reader([])) is None
