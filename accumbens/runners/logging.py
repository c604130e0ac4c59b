"""Per-iteration statistics: one record, the same keys, in CSV, JSON lines and TensorBoard.

Files under `base_dir`: `metrics.csv`, `metrics.jsonl` and `tensorboard/` event files. When a run
resumes from the checkpoint after iteration k, rows for iterations > k (written before a crash
but not covered by a checkpoint) are dropped so the files hold each iteration exactly once.
`accumbens.plot` reads only these files.
"""
from __future__ import annotations

import csv
import json
import math
import os
from typing import Iterable, Optional

CSV_FILE = "metrics.csv"
JSONL_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def read_records(base_dir: str) -> list[dict]:
    """The per-iteration records of a run (from metrics.jsonl), in iteration order."""
    path = os.path.join(base_dir, JSONL_FILE)
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                records.append(json.loads(line))
    return sorted(records, key=lambda r: r["iteration"])


def _json_value(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; readers treat null as missing
    return value


class StatisticsWriter:
    """Appends one record per iteration to CSV, JSON lines and TensorBoard."""

    def __init__(self, base_dir: str, resume_after_iteration: Optional[int] = None, tensorboard: bool = True):
        self.base_dir = base_dir
        os.makedirs(base_dir, exist_ok=True)
        self._csv_path = os.path.join(base_dir, CSV_FILE)
        self._jsonl_path = os.path.join(base_dir, JSONL_FILE)
        keep_below = -1 if resume_after_iteration is None else resume_after_iteration
        self._truncate(keep_below)
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            purge = None if resume_after_iteration is None else resume_after_iteration + 1
            self._tb = SummaryWriter(os.path.join(base_dir, TENSORBOARD_DIR), purge_step=purge)

    def _truncate(self, last_kept_iteration: int) -> None:
        """Drops rows with iteration > last_kept_iteration (all rows when it is -1)."""
        if os.path.exists(self._jsonl_path):
            kept = [r for r in read_records(self.base_dir) if r["iteration"] <= last_kept_iteration]
            self._rewrite(kept)

    def _rewrite(self, records: Iterable[dict]) -> None:
        records = list(records)
        for path in (self._jsonl_path, self._csv_path):
            if os.path.exists(path):
                os.remove(path)
        for record in records:
            self._append_files(record)

    def _append_files(self, record: dict) -> None:
        with open(self._jsonl_path, "a") as f:
            f.write(json.dumps({k: _json_value(v) for k, v in record.items()}) + "\n")
        new_file = not os.path.exists(self._csv_path)
        with open(self._csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(record))
            if new_file:
                writer.writeheader()
            writer.writerow({k: float("nan") if v is None else v for k, v in record.items()})

    def write(self, record: dict) -> None:
        """Writes one iteration's record; `record['iteration']` is the TensorBoard step."""
        self._append_files(record)
        if self._tb is not None:
            step = record["iteration"]
            for key, value in record.items():
                if key != "iteration" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
