"""Learning curves from run directories: mean over seeds with a shaded band.

    python -m accumbens.plot runs/breakout_seed0 runs/breakout_seed1 runs/pong -o curves.png

Runs are grouped into one curve per experiment: directories whose names differ only by a
trailing `seed<N>` / `_<N>` share a curve (mean over seeds, band = min..max, or +-1 standard
error with `--band sem`). The x axis is total training agent steps; the y axis any metric the
runner logs (default `eval_return_mean`, falling back to `train_return_mean`). Only the files the
runner writes (`metrics.jsonl`) are read.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from collections import defaultdict
from typing import Optional, Sequence

import numpy as np

from accumbens.runners.logging import read_records

_SEED_SUFFIX = re.compile(r"([_-]?seed[_-]?\d+|[_-]\d+)$")


def group_name(run_dir: str) -> str:
    """The experiment a run belongs to: its directory name without a trailing seed marker.

    A directory named only by its seed (the compiled runner's `base_dir/seed_3`) belongs to its
    parent's experiment (`base_dir`).
    """
    path = os.path.normpath(run_dir)
    name = os.path.basename(path)
    stripped = _SEED_SUFFIX.sub("", name)
    if not stripped and os.path.basename(os.path.dirname(path)):
        return os.path.basename(os.path.dirname(path))
    return stripped or name


def load_curve(run_dir: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(x = cumulative training steps, y = metric) per iteration for one run."""
    records = read_records(run_dir)
    if not records:
        raise ValueError(f"{run_dir} has no iterations logged yet")
    if metric not in records[0]:
        raise ValueError(f"{run_dir}: metric {metric!r} not logged; available: {sorted(records[0])}")
    x = np.array([r.get("total_train_steps", r["iteration"]) for r in records], dtype=np.float64)
    y = np.array([np.nan if r[metric] is None else r[metric] for r in records], dtype=np.float64)
    return x, y


def aggregate(curves: Sequence[tuple[np.ndarray, np.ndarray]], band: str = "minmax"):
    """Mean and band over seeds, truncated to the iterations all seeds have reached."""
    length = min(len(x) for x, _ in curves)
    x = curves[0][0][:length]
    ys = np.stack([y[:length] for _, y in curves])
    mean = np.nanmean(ys, axis=0)
    if band == "sem" and len(curves) > 1:
        half = np.nanstd(ys, axis=0, ddof=1) / np.sqrt(len(curves))
        return x, mean, mean - half, mean + half
    return x, mean, np.nanmin(ys, axis=0), np.nanmax(ys, axis=0)


def plot(run_dirs: Sequence[str], output: str, metric: Optional[str] = None, band: str = "minmax", title: str = "") -> str:
    """Draws one curve per experiment group into `output` (PNG/PDF/SVG); returns the metric used."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if metric is None:
        first = read_records(run_dirs[0])
        metric = "eval_return_mean" if first and "eval_return_mean" in first[0] else "train_return_mean"
    groups: dict[str, list] = defaultdict(list)
    for run_dir in run_dirs:
        groups[group_name(run_dir)].append(load_curve(run_dir, metric))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curves in sorted(groups.items()):
        x, mean, low, high = aggregate(curves, band)
        label = f"{name} ({len(curves)} seed{'s' if len(curves) > 1 else ''})"
        (line,) = ax.plot(x, mean, label=label)
        if len(curves) > 1:
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.25)
    ax.set_xlabel("training agent steps")
    ax.set_ylabel(metric)
    ax.set_title(title or metric)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return metric


def plot_groups(
    groups: dict, output: str, metric: Optional[str] = None, band: str = "minmax", title: str = ""
) -> str:
    """Like `plot`, with the curves named by the caller: {label: [run dirs (seeds)]} (sweeps).

    Returns the metric drawn (default `eval_return_mean`, else `train_return_mean`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not groups or not all(groups.values()):
        raise ValueError("plot_groups needs at least one group, each with at least one run dir")
    if metric is None:
        first = read_records(next(iter(groups.values()))[0])
        metric = "eval_return_mean" if first and "eval_return_mean" in first[0] else "train_return_mean"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, run_dirs in sorted(groups.items()):
        curves = [load_curve(d, metric) for d in run_dirs]
        x, mean, low, high = aggregate(curves, band)
        (line,) = ax.plot(x, mean, label=f"{name} ({len(curves)} seed{'s' if len(curves) > 1 else ''})")
        if len(curves) > 1:
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.25)
    ax.set_xlabel("training agent steps")
    ax.set_ylabel(metric)
    ax.set_title(title or metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return metric


def performance_profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Fraction of `scores` (all games and seeds, flattened) strictly above each threshold in `taus`.

    The run-score distribution of Agarwal et al. (2021, "Deep RL at the Edge of the Statistical
    Precipice"), Fig. 5: P(score > tau).
    """
    scores = np.asarray(scores, np.float64).ravel()
    if scores.size == 0:
        raise ValueError("performance_profile of no scores")
    return (scores[None, :] > np.asarray(taus, np.float64)[:, None]).mean(axis=1)


def plot_performance_profiles(scores: dict, output: str, xlabel: str = "score", title: str = "", points: int = 201) -> None:
    """Draws `performance_profile` for each {label: scores} on a shared threshold axis into `output`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    everything = np.concatenate([np.asarray(v, np.float64).ravel() for v in scores.values()]) if scores else np.array([])
    if everything.size == 0:
        raise ValueError("plot_performance_profiles needs at least one score")
    low, high = float(everything.min()), float(everything.max())
    pad = 0.05 * (high - low) if high > low else 1.0
    taus = np.linspace(low - pad, high + pad, points)
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, values in sorted(scores.items()):
        ax.plot(taus, performance_profile(values, taus), label=f"{label} ({np.asarray(values).size})")
    ax.set_xlabel(f"{xlabel} threshold tau")
    ax.set_ylabel("fraction of runs with score > tau")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title or "performance profile")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m accumbens.plot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="run directories (each with metrics.jsonl)")
    parser.add_argument("-o", "--output", default="curves.png")
    parser.add_argument("--metric", default=None, help="logged key to plot (default eval_return_mean)")
    parser.add_argument("--band", choices=("minmax", "sem"), default="minmax")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    try:
        metric = plot(args.run_dirs, args.output, args.metric, args.band, args.title)
    except (OSError, ValueError) as e:
        print(f"accumbens.plot: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({metric} for {len(args.run_dirs)} run(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
