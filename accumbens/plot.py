"""Learning curves from run directories: mean over seeds with a shaded band.

    python -m accumbens.plot runs/breakout_seed0 runs/breakout_seed1 runs/pong -o curves.png

Runs are grouped into one curve per experiment: directories whose names differ only by a
trailing `seed<N>` / `_<N>` share a curve (mean over seeds, band = min..max, or +-1 standard
error with `--band sem`). The x axis is total training agent steps; the y axis any metric the
runner logs (default `eval_return_mean`, falling back to `train_return_mean`). Only the files the
runner writes (`metrics.jsonl`) are read.

    python -m accumbens.plot reproduce benchmarks/results/reproduce_minatar.json -o benchmarks/results

draws the figures and tables of the reproduction scripts (benchmarks/reproduce/) from their results
files: per-game curves with 95% bootstrap bands, final scores beside the published ones, IQM.
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



# ----------------------------------------------------------------------------- reproduction studies
# `python -m accumbens.plot reproduce benchmarks/results/reproduce_<study>.json ... -o DIR` draws the
# figures of the reproduction scripts (benchmarks/reproduce/) from their results files alone: per-game
# learning curves (mean over seeds, 95% bootstrap band), a table of final returns with 95% bootstrap
# intervals beside the published numbers, and the IQM across games (stratified bootstrap).

_REFERENCES = {"minatar_compiled": "minatar.json", "minatar_host": "minatar.json", "atari100k_der": "atari100k.json"}


def bootstrap_band(values: np.ndarray, confidence: float = 0.95, resamples: int = 2000, seed: int = 0):
    """Per column of `values` [seeds, T] (NaN = missing): (mean, low, high) of the mean over seeds,
    with a percentile bootstrap interval over the seeds that have a value (NaN if none)."""
    from accumbens.analysis import bootstrap_ci

    values = np.asarray(values, np.float64)
    out = np.full((3, values.shape[1]), np.nan)
    for t in range(values.shape[1]):
        column = values[:, t][np.isfinite(values[:, t])]
        if column.size:
            out[:, t] = bootstrap_ci(column, confidence=confidence, resamples=resamples, seed=seed)
    return out[0], out[1], out[2]


def _matrix(curves) -> np.ndarray:
    """Per-seed curves (lists with None) -> [seeds, T] float array, NaN-padded."""
    length = max((len(c) for c in curves), default=0)
    out = np.full((len(curves), length), np.nan)
    for i, c in enumerate(curves):
        out[i, : len(c)] = [np.nan if v is None else v for v in c]
    return out


def load_reproduction(path: str) -> dict:
    """A reproduction results file (see benchmarks/reproduce/repro_common.py), checked for its keys."""
    import json

    with open(path) as f:
        results = json.load(f)
    if "study" not in results or "pieces" not in results:
        raise ValueError(f"{path} is not a reproduction results file (no 'study'/'pieces')")
    return results


def load_reference_for(results: dict, results_path: str, reference: Optional[str] = None) -> Optional[dict]:
    """The published numbers of a study: `reference`, else benchmarks/reference/<file> beside the results."""
    import json

    if reference is None:
        name = _REFERENCES.get(results["study"])
        if name is None:
            return None
        reference = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(results_path))), "reference", name)
    if not os.path.exists(reference):
        return None
    with open(reference) as f:
        return json.load(f)


def piece_scores(results: dict, piece: dict) -> np.ndarray:
    """The per-seed final score a study compares with the literature: the full-game evaluation
    (Atari 100k), the last Dopamine iteration's training return (Pong DQN), else the last finished
    iteration's mean training return (MinAtar)."""
    if results["study"] == "atari100k_der":
        values = piece.get("eval_scores") or []
    elif piece.get("dopamine_iteration_return"):
        values = [c[-1] if c else None for c in piece["dopamine_iteration_return"]]
    else:
        values = [c[-1] if c else None for c in piece.get("train_return") or []]
    return np.asarray([v for v in values if v is not None], np.float64)


def published_score(reference: Optional[dict], agent: str, game: str, frames: Optional[float] = None) -> Optional[dict]:
    """{"value", "source", "frames"} of the published score for (agent, game), or None if not recorded.

    With `frames` below the paper's budget and a published curve in the reference ("curve": {game:
    {"frames", "return"}}), the value is the curve's, linearly interpolated at `frames`, so that a
    shorter run is compared with the paper at the same point of training.
    """
    if not reference:
        return None
    published = reference.get("published", {})
    entry = published.get(agent) or next((v for k, v in published.items() if k.lower() == str(agent).lower()), None)
    if not entry:
        return None
    value = entry.get("scores", {}).get(game)
    source = entry.get("source", {}).get("short", "")
    curve = entry.get("curve", {}).get(game)
    budget = entry.get("frames")
    if frames and curve and budget and frames < budget:
        points = [(x, y) for x, y in zip(curve["frames"], curve["return"]) if y is not None]
        if not points or frames < points[0][0]:
            return None  # before the curve's first point: no published number at this stage of training
        xs, ys = zip(*points)
        return {"value": float(np.interp(frames, xs, ys)), "source": source, "frames": float(frames), "from_curve": True}
    if value is None:
        return None
    return {"value": float(value), "source": source, "frames": budget, "from_curve": False}


def _piece_frames(piece: dict) -> Optional[float]:
    steps = piece.get("total_train_steps") or []
    return float(steps[-1] * piece.get("frames_per_step", 1)) if steps else None


def normalised_scores(results: dict, reference: Optional[dict], piece: dict, scores: np.ndarray) -> Optional[np.ndarray]:
    """Atari: human-normalised, (s - random) / (human - random). MinAtar: (s - random) / (reference -
    random), the reference being the published score of the agent named by the reference file's
    "normalise_with" (else the piece's own agent) at the piece's frame count, so 1 = that published
    agent at the same point of training. None when the numbers needed are not recorded."""
    if not reference:
        return None
    game = piece["game"]
    random = reference.get("random", {}).get(game)
    if random is None:
        return None
    if "human" in reference:
        top = reference["human"].get(game)
    else:
        agent = reference.get("normalise_with", piece["agent"])
        published = published_score(reference, agent, game, _piece_frames(piece))
        top = None if published is None else published["value"]
    if top is None or top == random:
        return None
    return (scores - float(random)) / (float(top) - float(random))


def reproduction_table(results: dict, reference: Optional[dict]) -> list[dict]:
    """One row per piece: game, agent, status, seeds, iterations, our score with its 95% interval,
    the published score and source."""
    from accumbens.analysis import bootstrap_ci

    rows = []
    for key, piece in sorted(results["pieces"].items(), key=lambda kv: (kv[1].get("agent", ""), kv[1].get("game", ""))):
        scores = piece_scores(results, piece)
        row = {"game": piece.get("game"), "agent": piece.get("agent"), "status": piece.get("status"),
               "seeds": int(scores.size), "iterations": f"{piece.get('iterations_done', 0)}/{piece.get('iterations_planned', '?')}",
               "frames": int((piece.get("total_train_steps") or [0])[-1] * piece.get("frames_per_step", 1)) if piece.get("total_train_steps") else 0}
        if scores.size:
            row["ours"], row["low"], row["high"] = bootstrap_ci(scores)
        published = published_score(reference, piece.get("agent"), piece.get("game"), row["frames"] or None)
        if published:
            row["published"], row["source"] = published["value"], published["source"]
            if published["from_curve"]:
                row["source"] += f" (curve at {row['frames'] / 1e6:.2f}M frames)"
        compared = (results.get("comparison", {}).get(key) or []) if isinstance(results.get("comparison", {}).get(key), list) else []
        if "published" not in row and compared:  # Pong DQN: Dopamine's seeds at our last iteration
            last = compared[-1]
            row["published"], row["source"] = last["dopamine_mean"], f"Dopamine, 5 seeds, iteration {last['iteration']}"
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """Markdown table of `reproduction_table` rows."""
    lines = ["| game | agent | seeds | frames | ours (95% CI) | published | published inside our CI? | source | status |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | --- |"]
    for r in rows:
        ours = f"{r['ours']:.2f} [{r['low']:.2f}, {r['high']:.2f}]" if "ours" in r else "not yet run"
        published = f"{r['published']:.2f}" if "published" in r else "n/a"
        inside = "-"
        if "ours" in r and "published" in r:  # 'no' marks a game to investigate (issue 8)
            inside = "yes" if r["low"] <= r["published"] <= r["high"] else ("no, ours higher" if r["low"] > r["published"] else "no, ours lower")
        frames = (f"{r['frames'] / 1e6:.2f}M" if r["frames"] >= 1e5 else f"{r['frames']:,}") if r["frames"] else "-"
        lines.append(f"| {r['game']} | {r['agent']} | {r['seeds']} | {frames} | {ours} | {published} | {inside} | "
                     f"{r.get('source', '')} | {r['status']} |")
    return "\n".join(lines)


def aggregate_iqm(results: dict, reference: Optional[dict]) -> dict:
    """Per agent: IQM of the normalised final scores over all (game, seed) runs with a 95% stratified
    bootstrap interval (strata = games), from `accumbens.aggregate.stratified_bootstrap_ci`."""
    from accumbens.aggregate import stratified_bootstrap_ci

    strata: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for piece in results["pieces"].values():
        scores = piece_scores(results, piece)
        if not scores.size:
            continue
        normalised = normalised_scores(results, reference, piece, scores)
        if normalised is not None:
            strata[piece["agent"]][piece["game"]] = normalised
    out = {}
    for agent, games in sorted(strata.items()):
        point, low, high = stratified_bootstrap_ci([games[g] for g in sorted(games)])
        out[agent] = {"iqm": point, "low": low, "high": high, "games": sorted(games), "runs": int(sum(v.size for v in games.values()))}
    return out


def plot_reproduction(results_path: str, output_dir: str, reference: Optional[str] = None) -> list[str]:
    """Draws a study's figures into `output_dir` and writes its table; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = load_reproduction(results_path)
    ref = load_reference_for(results, results_path, reference)
    study = results["study"]
    os.makedirs(output_dir, exist_ok=True)
    written = []

    games = sorted({p["game"] for p in results["pieces"].values()})
    agents = sorted({p["agent"] for p in results["pieces"].values()})
    columns = min(len(games), 5) or 1
    rows_n = (len(games) + columns - 1) // columns or 1
    fig, axes = plt.subplots(rows_n, columns, figsize=(max(6.0, 3.6 * columns), 3.2 * rows_n), squeeze=False)
    colors = {a: f"C{i}" for i, a in enumerate(agents)}
    for ax, game in zip(axes.ravel(), games):
        x_max = 0.0  # the frames our runs reached: published curves are shown up to there
        for agent in agents:
            piece = results["pieces"].get(f"{game}/{agent}")
            if not piece:
                continue
            curves = piece.get("dopamine_iteration_return") or piece.get("train_return") or []
            values = _matrix(curves)
            if values.size:
                if piece.get("dopamine_iteration_return"):
                    x = (np.arange(values.shape[1]) + 1) * piece["steps_per_iteration"] * piece["chunks_per_dopamine_iteration"]
                else:
                    x = np.asarray(piece["total_train_steps"][: values.shape[1]], np.float64)
                x = x * piece.get("frames_per_step", 1)
                mean, low, high = bootstrap_band(values)
                ax.plot(x, mean, color=colors[agent], marker="o", markersize=2.5, label=f"{agent} ({values.shape[0]} seeds)")
                x_max = max(x_max, float(np.nanmax(x)))
                ax.fill_between(x, low, high, color=colors[agent], alpha=0.25)
            entry = (ref or {}).get("published", {}).get(agent, {})
            curve = entry.get("curve", {}).get(game)
            published = published_score(ref, agent, game)
            if curve:
                curve_x = np.asarray(curve["frames"], np.float64)
                curve_y = np.asarray([np.nan if v is None else v for v in curve["return"]], np.float64)
                piece_frames = _piece_frames(piece) if piece else None
                if piece_frames:  # up to a little past the frames our run reached (keeps the y range readable)
                    shown = curve_x <= piece_frames * 1.1 + 2.5e5
                    curve_x, curve_y = curve_x[shown], curve_y[shown]
                ax.plot(curve_x, curve_y, color=colors[agent], linestyle="--", linewidth=1, label=f"{agent}, published curve")
            elif published:
                ax.axhline(published["value"], color=colors[agent], linestyle="--", linewidth=1, label=f"{agent}, published")
        for j, curve in enumerate(results.get("reference_curves", {}).get(game, {}).values()):  # e.g. Dopamine's seeds
            x = (np.asarray(curve["iterations"]) + 1) * float(curve["frames_per_iteration"])
            shown = x <= x_max * 1.1 + curve["frames_per_iteration"] if x_max > 0 else np.ones_like(x, bool)
            shade = ("k", "0.45", "0.7")[j % 3]
            band = {k: np.asarray(curve[k], dtype=np.float64) for k in ("mean", "min", "max")}  # None -> NaN
            ax.plot(x[shown], band["mean"][shown], color=shade, linewidth=1, linestyle=":" if j else "-",
                    label=curve.get("label", "reference"))
            ax.fill_between(x[shown], band["min"][shown], band["max"][shown], color=shade, alpha=0.12)
        if x_max > 0:
            ax.set_xlim(0, x_max * 1.05)
        ax.set_title(game)
        ax.set_xlabel("frames")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(games):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("training return" if study != "atari100k_der" else "training return per life")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(f"{study}: mean over seeds, 95% bootstrap band")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    if handles:  # below the panels; savefig's tight box keeps it whole
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), 2 if columns == 1 else 4),
                   fontsize="small")
    path = os.path.join(output_dir, f"reproduce_{study}_curves.png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    written.append(path)

    table = reproduction_table(results, ref)
    iqm_stats = aggregate_iqm(results, ref)
    text = format_table(table)
    if iqm_stats:
        what = ("human-normalised score" if ref and "human" in ref else
                f"score normalised as (ours - random) / ({(ref or {}).get('normalise_with', 'published')} at the same frames - random)")
        text += f"\n\nIQM of the {what}, 95% stratified bootstrap over seeds within games:\n\n"
        text += "\n".join(f"- {a}: {s['iqm']:.3f} [{s['low']:.3f}, {s['high']:.3f}] ({len(s['games'])} games, {s['runs']} runs)"
                          for a, s in iqm_stats.items())
        fig, ax = plt.subplots(figsize=(5, 0.6 + 0.5 * len(iqm_stats)))
        for i, (agent, s) in enumerate(iqm_stats.items()):
            ax.errorbar([s["iqm"]], [i], xerr=[[s["iqm"] - s["low"]], [s["high"] - s["iqm"]]], fmt="o", color=colors.get(agent, "C0"), capsize=4)
        ax.set_yticks(range(len(iqm_stats)), list(iqm_stats))
        scale = "human-normalised" if ref and "human" in ref else f"1 = {(ref or {}).get('normalise_with', 'published')} at the same frames"
        ax.set_xlabel(f"IQM ({scale})")
        ax.grid(alpha=0.3, axis="x")
        fig.tight_layout()
        path = os.path.join(output_dir, f"reproduce_{study}_iqm.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    path = os.path.join(output_dir, f"reproduce_{study}_table.md")
    with open(path, "w") as f:
        f.write(text + "\n")
    written.append(path)
    print(text)
    return written


def reproduce_main(argv: Sequence[str]) -> int:
    """`python -m accumbens.plot reproduce RESULTS.json [...] [-o DIR] [--reference REF.json]`."""
    parser = argparse.ArgumentParser(prog="python -m accumbens.plot reproduce", description="Figures and tables of benchmarks/reproduce/ results files.")
    parser.add_argument("results", nargs="+", help="benchmarks/results/reproduce_<study>.json files")
    parser.add_argument("-o", "--output_dir", default=None, help="default: the folder of each results file")
    parser.add_argument("--reference", default=None, help="published numbers (default: benchmarks/reference/<study's file>)")
    args = parser.parse_args(list(argv))
    for path in args.results:
        try:
            written = plot_reproduction(path, args.output_dir or os.path.dirname(os.path.abspath(path)), args.reference)
        except (OSError, ValueError, KeyError) as e:
            print(f"accumbens.plot reproduce: {path}: {e}", file=sys.stderr)
            return 2
        print("wrote " + ", ".join(written))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["reproduce"] and not os.path.isdir("reproduce"):  # figures of benchmarks/reproduce/ results files
        return reproduce_main(argv[1:])
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
