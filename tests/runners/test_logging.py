"""Statistics files: same keys in CSV and JSON lines, rows past a resume point dropped."""
import csv
import math

from accumbens.runners.logging import StatisticsWriter, read_records


def test_resume_drops_rows_not_covered_by_the_checkpoint(tmp_path):
    writer = StatisticsWriter(str(tmp_path), tensorboard=False)
    for i in range(4):
        writer.write({"iteration": i, "train_return_mean": float(i), "loss": float("nan")})
    writer.close()
    writer = StatisticsWriter(str(tmp_path), resume_after_iteration=1, tensorboard=False)
    writer.write({"iteration": 2, "train_return_mean": 20.0, "loss": 0.5})
    writer.close()
    records = read_records(str(tmp_path))
    assert [r["iteration"] for r in records] == [0, 1, 2]
    assert records[2]["train_return_mean"] == 20.0
    assert records[0]["loss"] is None  # NaN is written as null in JSON
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2]
    assert set(rows[0]) == set(records[0])
    assert math.isnan(float(rows[0]["loss"]))


def test_tensorboard_events_are_written(tmp_path):
    writer = StatisticsWriter(str(tmp_path))
    writer.write({"iteration": 0, "train_return_mean": 1.0})
    writer.close()
    assert any(p.name.startswith("events") for p in (tmp_path / "tensorboard").iterdir())
