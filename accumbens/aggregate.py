"""Collect a sweep's runs into one table, with IQM and bootstrap intervals, curves and profiles.

    python -m accumbens.aggregate runs/sweeps/cartpole_lr                # -> runs/.../aggregate/
    python -m accumbens.aggregate ROOT --metric train_return_mean --normalize minmax

Every folder under ROOT with a `metrics.jsonl` is one seed of one run: a host-runner run folder,
or a `seed_<n>/` folder of a compiled or multi-seed run (its parent is the run; a compiled run
that sweeps hyperparameters has one `<binding>=<value>/` folder per setting). A row of the
table is (run, game, agent, the swept keys, seed) with the run's final and mean value of `metric`
(default `eval_return_mean`, else `train_return_mean`). Swept keys come from the run's
`sweep_run.json` (written by `accumbens.sweep`), else from `key=value` folder names; game and
agent from its `config.gin`.

Written to `--output` (default ROOT/aggregate/):
  runs.csv, runs.json      the table, one row per (run, seed)
  groups.csv               per (game, agent, swept keys but seed): seeds, mean and IQM of the
                           final scores with 95% percentile-bootstrap intervals over seeds
  summary.json             the groups, plus per configuration (agent and swept keys but seed and
                           game) the IQM and mean over all games and seeds with *stratified*
                           bootstrap intervals (seeds resampled within each game, as rliable does;
                           Agarwal et al. 2021), on per-game normalised scores (`--normalize`)
  curves.png               learning curves, one per group (mean over seeds, min..max band)
  profiles.png             performance profiles of the normalised final scores per configuration

Normalisation (`--normalize`): `none` (raw scores; fine for one game), `minmax` (per game, by the
lowest and highest final score in the table), or a JSON file {game: [low, high]} (e.g. random
and human scores) applied as (score - low) / (high - low).
"""
from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import json
import os
import re
import sys
from collections import defaultdict
from typing import Callable, Optional, Sequence

import numpy as np

from accumbens.analysis import bootstrap_ci, iqm
from accumbens.runners.logging import JSONL_FILE, read_records

_SEED_DIR = re.compile(r"^seed_(\d+)$")
RUN_FILE = "sweep_run.json"  # accumbens.sweep.RUN_FILE (not imported: aggregate must not need gin)
CONFIG_FILE = "config.gin"
OUTPUT_DIR = "aggregate"


@dataclasses.dataclass
class SeedRun:
    """One seed of one run: where its metrics are and what it is (game, agent, swept keys, seed)."""

    run: str
    metrics_dir: str
    params: dict


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def read_gin_values(path: str) -> dict:
    """`Configurable.param = value` lines of an operative config.gin, values as Python literals."""
    values = {}
    try:
        with open(path) as f:
            for line in f:
                match = re.match(r"^([\w./]+)\s*=\s*(.+?)\s*$", line)
                if match:
                    values[match.group(1)] = _literal(match.group(2))
    except OSError:
        pass
    return values


def _game_and_agent(run_dir: str) -> dict:
    gin_values = read_gin_values(os.path.join(run_dir, CONFIG_FILE))
    game = (
        gin_values.get("CompiledRunner.resolved_environment_name")
        or gin_values.get("create_jax_environment.name")
        or gin_values.get("create_environment.name")
    )
    agent = gin_values.get("create_agent.agent_fn")
    if agent in (None, "None"):
        agent = gin_values.get("create_agent.agent_name")
    if isinstance(agent, str):
        agent = agent.lstrip("@").rstrip("()")
    seed = gin_values.get("Runner.seed", gin_values.get("CompiledRunner.resolved_seed"))
    return {"game": game, "agent": agent, "seed": seed}


def _path_params(root: str, run_dir: str) -> dict:
    rel = os.path.relpath(run_dir, root)
    params = {}
    for part in rel.split(os.sep):
        if "=" in part:
            key, value = part.split("=", 1)
            params[key] = _literal(value)
    return params


def _nearest(start: str, root: str, name: str) -> Optional[str]:
    """The folder holding `name`, from `start` up to `root` (inclusive), or None."""
    folder, root = os.path.abspath(start), os.path.abspath(root)
    while True:
        if os.path.isfile(os.path.join(folder, name)):
            return folder
        if folder == root or os.path.dirname(folder) == folder:
            return None
        folder = os.path.dirname(folder)


def find_runs(root: str) -> list[SeedRun]:
    """Every seed of every run under `root` (sorted by run name, then seed).

    Layouts: `<run>/metrics.jsonl` (host runner), `<run>/seed_<n>/metrics.jsonl` (compiled and
    multi-seed runners), `<run>/<binding>=<value>/seed_<n>/metrics.jsonl` (the compiled runner's
    hyperparameter members). Game and agent come from the nearest `config.gin` above the metrics,
    swept values from the `key=value` folder names and the nearest `sweep_run.json`.

    Raises:
      FileNotFoundError: `root` does not exist or holds no `metrics.jsonl`.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root} is not a folder")
    found = []
    for folder, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in ("checkpoints", "tensorboard", OUTPUT_DIR))
        if JSONL_FILE not in files:
            continue
        seed_match = _SEED_DIR.match(os.path.basename(folder))
        run_dir = os.path.dirname(folder) if seed_match else folder
        config_dir = _nearest(folder, root, CONFIG_FILE)
        info = _game_and_agent(config_dir) if config_dir else {"game": None, "agent": None, "seed": None}
        swept = _path_params(root, run_dir)
        sweep_dir = _nearest(run_dir, root, RUN_FILE)
        if sweep_dir:
            try:
                with open(os.path.join(sweep_dir, RUN_FILE)) as f:
                    swept.update(json.load(f)["params"])
            except (OSError, ValueError, KeyError):
                pass
        seed = int(seed_match.group(1)) if seed_match else swept.get("seed", info["seed"])
        params = {"game": info["game"], "agent": info["agent"]}
        params.update({k: v for k, v in swept.items() if k not in ("seed", "game", "agent")})
        params["seed"] = seed
        found.append(SeedRun(os.path.relpath(run_dir, root), folder, params))
    if not found:
        raise FileNotFoundError(f"no {JSONL_FILE} under {root}: nothing to aggregate")
    return sorted(found, key=lambda r: (r.run, str(r.params["seed"])))


def default_metric(runs: Sequence[SeedRun]) -> str:
    records = read_records(runs[0].metrics_dir)
    return "eval_return_mean" if records and "eval_return_mean" in records[0] else "train_return_mean"


def collect(root: str, metric: Optional[str] = None) -> list[dict]:
    """The table: one row per (run, seed) with its params, iterations, steps, final and mean metric."""
    runs = find_runs(root)
    metric = metric or default_metric(runs)
    rows = []
    for seed_run in runs:
        records = read_records(seed_run.metrics_dir)
        values = np.array([np.nan if r.get(metric) is None else r[metric] for r in records], np.float64)
        row = {"run": seed_run.run, **seed_run.params}
        row["iterations"] = len(records)
        row["total_train_steps"] = records[-1].get("total_train_steps") if records else None
        row["metric"] = metric
        row["final"] = float(values[-1]) if values.size else float("nan")
        row["mean"] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- statistics
def stratified_bootstrap_ci(
    scores_per_stratum: Sequence[np.ndarray],
    statistic: Callable[[np.ndarray], float] = iqm,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(statistic, low, high) of `statistic` over all scores, resampling within each stratum.

    `scores_per_stratum`: one 1-D array of seed scores per game (lengths may differ). Each
    resample draws, for every game independently, as many seeds as it has with replacement, and
    applies `statistic` to the concatenation (rliable's stratified bootstrap). With one game this
    is `analysis.bootstrap_ci` (same draws for the same `seed`).
    """
    strata = [np.asarray(s, np.float64).ravel() for s in scores_per_stratum]
    if not strata or any(s.size == 0 for s in strata):
        raise ValueError("stratified_bootstrap_ci needs at least one score in every stratum")
    point = float(statistic(np.concatenate(strata)))
    if all(s.size == 1 for s in strata):
        return point, point, point
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, s.size, (resamples, s.size)) for s in strata]
    stats = np.array([statistic(np.concatenate([s[d[i]] for s, d in zip(strata, draws)])) for i in range(resamples)])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return point, float(low), float(high)


def _swept_keys(rows: Sequence[dict]) -> list[str]:
    fixed = {"run", "game", "agent", "seed", "iterations", "total_train_steps", "metric", "final", "mean"}
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in fixed and k not in keys]
    return keys


def _label(key: tuple, names: Sequence[str]) -> str:
    return " ".join(f"{n}={v}" for n, v in zip(names, key) if v is not None) or "all"


def normalizer(rows: Sequence[dict], how: str) -> Callable[[str, float], float]:
    """score -> normalised score per game: 'none', 'minmax', or a JSON file {game: [low, high]}."""
    if how == "none":
        return lambda game, x: x
    if how == "minmax":
        bounds = {}
        for game in {r["game"] for r in rows}:
            finals = [r["final"] for r in rows if r["game"] == game and np.isfinite(r["final"])]
            bounds[game] = (min(finals), max(finals)) if finals else (0.0, 1.0)
    else:
        with open(how) as f:
            bounds = {g: tuple(v) for g, v in json.load(f).items()}
        missing = sorted({r["game"] for r in rows} - set(bounds))
        if missing:
            raise ValueError(f"{how} has no [low, high] for game(s) {missing}")

    def apply(game, x):
        low, high = bounds[game]
        return (x - low) / (high - low) if high != low else 0.0

    return apply


def summarize(rows: Sequence[dict], normalize: str = "none", resamples: int = 2000) -> dict:
    """Per-group and per-configuration statistics of the final scores (see the module docstring)."""
    swept = _swept_keys(rows)
    group_names = ["game", "agent"] + swept
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row.get(k) for k in group_names)].append(row)
    group_stats = []
    for key, members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        finals = np.array([r["final"] for r in members if np.isfinite(r["final"])])
        entry = dict(zip(group_names, key))
        entry["seeds"] = len(members)
        entry["runs"] = sorted({r["run"] for r in members})
        if finals.size:
            entry["mean"], entry["mean_low"], entry["mean_high"] = bootstrap_ci(finals, np.mean, resamples=resamples)
            entry["iqm"], entry["iqm_low"], entry["iqm_high"] = bootstrap_ci(finals, iqm, resamples=resamples)
        group_stats.append(entry)

    norm = normalizer(rows, normalize)
    config_names = ["agent"] + swept
    configs: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if np.isfinite(row["final"]):
            configs[tuple(row.get(k) for k in config_names)][row["game"]].append(norm(row["game"], row["final"]))
    config_stats = []
    for key, per_game in sorted(configs.items(), key=lambda kv: str(kv[0])):
        strata = [np.array(per_game[g]) for g in sorted(per_game, key=str)]
        entry = dict(zip(config_names, key))
        entry["label"] = _label(key, config_names)
        entry["games"] = len(strata)
        entry["scores"] = int(sum(s.size for s in strata))
        entry["iqm"], entry["iqm_low"], entry["iqm_high"] = stratified_bootstrap_ci(strata, iqm, resamples=resamples)
        entry["mean"], entry["mean_low"], entry["mean_high"] = stratified_bootstrap_ci(strata, np.mean, resamples=resamples)
        config_stats.append(entry)
    return {"metric": rows[0]["metric"] if rows else None, "normalize": normalize, "groups": group_stats, "configurations": config_stats}


# ----------------------------------------------------------------------------- output
def write_csv(path: str, rows: Sequence[dict]) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ";".join(v) if isinstance(v, list) else v for k, v in row.items()})


def _json_safe(value):
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _table(stats: Sequence[dict], names: Sequence[str]) -> str:
    lines = []
    for entry in stats:
        label = _label(tuple(entry.get(n) for n in names), names)
        if "iqm" in entry:
            lines.append(
                f"  {label:<48} n={entry.get('seeds', entry.get('scores')):<4} IQM {entry['iqm']:9.2f} "
                f"[{entry['iqm_low']:.2f}, {entry['iqm_high']:.2f}]  mean {entry['mean']:9.2f} "
                f"[{entry['mean_low']:.2f}, {entry['mean_high']:.2f}]"
            )
        else:
            lines.append(f"  {label:<48} no finite scores")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m accumbens.aggregate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="a sweep's results root (or any folder of runs)")
    parser.add_argument("-o", "--output", default=None, help="output folder (default ROOT/aggregate)")
    parser.add_argument("--metric", default=None, help="logged key (default eval_return_mean, else train_return_mean)")
    parser.add_argument("--normalize", default="none", help="none | minmax | a JSON file {game: [low, high]}")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--no_plots", action="store_true")
    args = parser.parse_args(argv)
    try:
        rows = collect(args.root, args.metric)
        summary = summarize(rows, args.normalize, args.resamples)
    except (OSError, ValueError) as e:
        print(f"accumbens.aggregate: {e}", file=sys.stderr)
        return 2
    out = args.output or os.path.join(args.root, OUTPUT_DIR)
    os.makedirs(out, exist_ok=True)
    write_csv(os.path.join(out, "runs.csv"), rows)
    with open(os.path.join(out, "runs.json"), "w") as f:
        json.dump(_json_safe(rows), f, indent=1)
    write_csv(os.path.join(out, "groups.csv"), summary["groups"])
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(_json_safe(summary), f, indent=1)
    swept = _swept_keys(rows)
    games = sorted({str(r["game"]) for r in rows})
    print(f"[aggregate] {len(rows)} (run, seed) rows, {len(summary['groups'])} groups, metric {summary['metric']} (final iteration)")
    print(_table(summary["groups"], ["game", "agent"] + swept))
    if len(games) > 1:
        note = "" if args.normalize != "none" else "  (raw scores across games: pass --normalize)"
        print(f"[aggregate] over {len(games)} games, stratified bootstrap, normalize={args.normalize}{note}")
        print(_table(summary["configurations"], ["agent"] + swept))
    if not args.no_plots:
        from accumbens import plot

        groups: dict[str, list[str]] = defaultdict(list)
        for seed_run in find_runs(args.root):
            key = tuple(seed_run.params.get(k) for k in ["game", "agent"] + swept)
            groups[_label(key, ["game", "agent"] + swept)].append(seed_run.metrics_dir)
        plot.plot_groups(dict(groups), os.path.join(out, "curves.png"), metric=summary["metric"])
        norm = normalizer(rows, args.normalize)
        scores: dict[str, list[float]] = defaultdict(list)
        for row in rows:
            if np.isfinite(row["final"]):
                key = tuple(row.get(k) for k in ["agent"] + swept)
                scores[_label(key, ["agent"] + swept)].append(norm(row["game"], row["final"]))
        xlabel = f"final {summary['metric']}" + ("" if args.normalize == "none" else " (normalised)")
        plot.plot_performance_profiles({k: np.array(v) for k, v in scores.items()}, os.path.join(out, "profiles.png"), xlabel=xlabel)
    print(f"[aggregate] wrote {out}/: runs.csv, runs.json, groups.csv, summary.json" + ("" if args.no_plots else ", curves.png, profiles.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
