"""The README's "Reproduced baselines" table, generated from the committed results files.

    python benchmarks/reproduce/readme_table.py            # prints the table
    python benchmarks/reproduce/readme_table.py --check    # exit 1 if README.md does not contain it
    python benchmarks/reproduce/readme_table.py --write    # replace the table in README.md's section

Every (study, game, agent) the reproduction scripts cover gets a row: our final score (mean and
95% bootstrap interval over seeds, with the number of seeds and frames actually trained) when a
committed `benchmarks/results/reproduce_*.json` holds it, else "not yet run"; beside it the
published number from `benchmarks/reference/*.json` (or "not found", with the reason in that file)
and its source. tests/test_reproduce.py checks that README.md contains exactly this table, so the
README can only show numbers that exist in committed results files.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import repro_common as common  # noqa: E402

README = os.path.join(common.REPO, "README.md")

# (study results file, reference file, reference agent key, label, games, agents)
STUDIES = (
    ("reproduce_minatar.json", "minatar", ("asterix", "breakout", "freeway", "seaquest", "space_invaders"),
     (("dqn_minatar_paper", "DQN, MinAtar paper settings, 5M frames"),
      ("dqn_revisiting", "DQN, Revisiting Rainbow settings, 10M frames"),
      ("rainbow_revisiting", "Rainbow, Revisiting Rainbow settings, 10M frames"))),
    ("reproduce_atari100k.json", "atari100k", ("Pong", "Breakout", "Boxing", "Seaquest", "Kangaroo"),
     (("der", "DER, Atari 100k (eval score)"),)),
    ("reproduce_pong_dqn.json", None, ("Pong",), (("dqn", "DQN, dqn/atari.gin, training return of the last iteration run"),
                                                 ("rainbow", "Rainbow, rainbow/atari.gin, training return of the last iteration run"))),
)
HEADER = ("| game | agent | ours: mean [95% CI] (seeds, frames) | published | source |", "| --- | --- | ---: | ---: | --- |")


def _ours(results: dict, piece: dict) -> str:
    from accumbens.analysis import bootstrap_ci
    from accumbens.plot import piece_scores

    scores = piece_scores(results, piece)
    if not scores.size:
        return "not yet run"
    point, low, high = bootstrap_ci(scores)
    frames = (piece.get("total_train_steps") or [0])[-1] * piece.get("frames_per_step", 1)
    budget = f"{frames / 1e6:.2f}M frames" if frames >= 1e5 else f"{frames:,} frames"
    partial = "" if piece.get("status") == "complete" else f", {piece.get('status')}"
    return f"{point:.2f} [{low:.2f}, {high:.2f}] ({scores.size} seeds, {budget}{partial})"


def _published(reference: dict | None, agent_key: str, game: str, piece: dict | None) -> tuple[str, str]:
    """The published number: at our run's frame count when the paper's curve is recorded (and our run
    is shorter than the paper's budget), else at the paper's budget."""
    from accumbens.plot import published_score

    entry = reference["published"].get("DER" if agent_key == "der" else agent_key, {})
    source = entry.get("source", {}).get("short", "")
    frames = None
    if piece and piece.get("total_train_steps"):
        frames = piece["total_train_steps"][-1] * piece.get("frames_per_step", 1)
    published = published_score(reference, "DER" if agent_key == "der" else agent_key, game, frames)
    if published is None and entry.get("scores", {}).get(game) is not None:
        return f"none before {entry['curve'][game]['frames'][0] / 1e6:.2f}M frames", source
    if published is None:
        return "not found", f"{source} (see benchmarks/reference)"
    figure = " (read from figure)" if entry.get("read_from_figure") else ""
    if published["from_curve"]:
        return f"{published['value']:.1f} at {frames / 1e6:.2f}M frames{figure}", source
    return f"{published['value']:.1f}{figure}", source


def table(results_dir: str = common.RESULTS_DIR, reference_dir: str = common.REFERENCE_DIR) -> str:
    """The README table (markdown lines)."""
    lines = list(HEADER)
    for results_file, reference_name, games, agents in STUDIES:
        path = os.path.join(results_dir, results_file)
        results = common.load_results(path, json.load(open(path))["study"], "") if os.path.exists(path) else None
        reference = None
        if reference_name:
            with open(os.path.join(reference_dir, f"{reference_name}.json")) as f:
                reference = json.load(f)
        for agent_key, label in agents:
            for game in games:
                piece = results["pieces"].get(f"{game}/{agent_key}") if results else None
                ours = _ours(results, piece) if piece else "not yet run"
                published, source = _published(reference, agent_key, game, piece) if reference_name else ("", "")
                if reference_name is None:
                    published, source = _dopamine_pong(results, game, agent_key)
                lines.append(f"| {game} | {label} | {ours} | {published} | {source} |")
    return "\n".join(lines)


def _dopamine_pong(results: dict | None, game: str, agent_key: str) -> tuple[str, str]:
    """Dopamine's curve at the last iteration we reached, else at iteration 4 (mean, min..max of 5 seeds)."""
    from pong_dqn import AGENTS, DOPAMINE_CURVES, dopamine_curve

    rows = (results or {}).get("comparison", {}).get(f"{game}/{agent_key}") or []
    iteration = rows[-1]["iteration"] if rows else 4
    ref = dopamine_curve(DOPAMINE_CURVES, AGENTS[agent_key][1])[iteration]
    return (f"{np.mean(ref):.1f} ({min(ref):.1f}..{max(ref):.1f}) at iteration {iteration}",
            "Dopamine's published curve (5 seeds)")


def write_readme(text: str, path: str = README) -> None:
    """Replaces the table (the lines from its header row to the next blank line) in the README's
    "## Reproduced baselines" section, and nothing else."""
    with open(path) as f:
        lines = f.read().split("\n")
    section = lines.index("## Reproduced baselines")
    start = next(i for i in range(section, len(lines)) if lines[i] == HEADER[0])
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    lines[start:end] = text.split("\n")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md does not contain the table")
    parser.add_argument("--write", action="store_true", help="replace the table under '## Reproduced baselines' in README.md")
    args = parser.parse_args(argv)
    text = table()
    if args.write:
        write_readme(text)
        print("README.md: reproduction table updated")
        return 0
    if args.check:
        with open(README) as f:
            if text not in f.read():
                print("README.md does not contain the current reproduction table; paste this:\n" + text)
                return 1
        print("README.md's reproduction table matches the results files")
        return 0
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
