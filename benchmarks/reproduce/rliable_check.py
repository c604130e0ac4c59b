"""Cross-check: accumbens' IQM and stratified bootstrap interval against rliable's.

The reproduction figures aggregate games with `accumbens.analysis.iqm` and
`accumbens.aggregate.stratified_bootstrap_ci` (rliable is not a dependency). This script computes
the IQM and its 95% stratified-bootstrap interval of the same score matrices with both: rliable
(Agarwal et al. 2021, `rliable.library.get_interval_estimates` with `metrics.aggregate_iqm`, run in
a separate Python that has rliable installed) and accumbens. The point estimates must agree exactly;
the interval endpoints agree up to Monte-Carlo error (independent random resamples on each side).

    python benchmarks/reproduce/rliable_check.py --rliable_python /tmp/rlv/bin/python

Writes benchmarks/results/reproduce_rliable_check.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import repro_common as common  # noqa: E402

RESULTS = os.path.join(common.RESULTS_DIR, "reproduce_rliable_check.json")

# Runs x games score matrices like the studies' (human-normalised Atari 100k, normalised MinAtar),
# plus a skewed one; fixed seeds so that the check is repeatable.
CASES = {
    "3 runs x 5 games, normal": (3, 5, "normal"),
    "5 runs x 5 games, normal": (5, 5, "normal"),
    "10 runs x 5 games, lognormal": (10, 5, "lognormal"),
}

RLIABLE_SNIPPET = r"""
import json, sys
import numpy as np
from rliable import library as rly, metrics
data = json.load(sys.stdin)
out = {}
for name, case in data["cases"].items():
    scores = {"agent": np.asarray(case["scores"], np.float64)}  # [runs, games]
    point, ci = rly.get_interval_estimates(scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=data["reps"])
    out[name] = {"iqm": float(point["agent"][0]), "low": float(ci["agent"][0, 0]), "high": float(ci["agent"][1, 0])}
import rliable
out["_version"] = getattr(rliable, "__version__", "unknown")
json.dump(out, sys.stdout)
"""


def score_matrix(runs: int, games: int, kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.0, 1.5, games)
    if kind == "lognormal":
        return centres[None, :] * rng.lognormal(0.0, 0.8, (runs, games))
    return centres[None, :] + rng.normal(0.0, 0.3, (runs, games))


def accumbens_estimate(scores: np.ndarray, reps: int) -> dict:
    from accumbens.aggregate import stratified_bootstrap_ci
    from accumbens.analysis import iqm

    point, low, high = stratified_bootstrap_ci([scores[:, g] for g in range(scores.shape[1])], iqm, resamples=reps, seed=0)
    return {"iqm": point, "low": low, "high": high}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rliable_python", required=True, help="a Python with rliable installed")
    parser.add_argument("--reps", type=int, default=20000)
    parser.add_argument("--results", default=RESULTS)
    args = parser.parse_args(argv)

    cases = {name: score_matrix(r, g, kind, seed=i) for i, (name, (r, g, kind)) in enumerate(CASES.items())}
    payload = json.dumps({"reps": args.reps, "cases": {n: {"scores": s.tolist()} for n, s in cases.items()}})
    run = subprocess.run([args.rliable_python, "-c", RLIABLE_SNIPPET], input=payload, capture_output=True, text=True, check=True)
    theirs = json.loads(run.stdout)
    rows = []
    print(f"{'case':<30} {'IQM rliable':>12} {'IQM ours':>10} {'95% CI rliable':>20} {'95% CI ours':>20} {'max endpoint gap':>17}")
    for name, scores in cases.items():
        ours = accumbens_estimate(scores, args.reps)
        ref = theirs[name]
        gap = max(abs(ours["low"] - ref["low"]), abs(ours["high"] - ref["high"]))
        width = ref["high"] - ref["low"]
        rows.append({"case": name, "rliable": ref, "accumbens": ours, "max_endpoint_gap": gap, "rliable_ci_width": width,
                     "gap_relative_to_width": gap / width if width else None})
        ci_ref = f"[{ref['low']:.3f}, {ref['high']:.3f}]"
        ci_ours = f"[{ours['low']:.3f}, {ours['high']:.3f}]"
        print(f"{name:<30} {ref['iqm']:>12.4f} {ours['iqm']:>10.4f} {ci_ref:>20} {ci_ours:>20} {gap:>17.4f}")
    out = {"benchmark": "rliable_check", "rliable_version": theirs.get("_version"), "reps": args.reps, "rows": rows,
           "note": "independent resamples on each side: endpoints differ by Monte-Carlo error only; points must be equal"}
    common.save_results(args.results, out)
    print(f"wrote {os.path.relpath(args.results, common.REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
