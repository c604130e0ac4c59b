"""Compares the per-seed logs of two compiled runs (e.g. one process vs several): same numbers?

    python examples/sweeps/compare_runs.py runs/one_process runs/two_processes

Prints, per seed, whether every logged number other than timings is equal, and the largest
relative difference; exits 1 if a seed differs beyond --rtol (default 0: bitwise equal).
"""
from __future__ import annotations

import argparse
import glob
import os
import sys


from accumbens.runners.logging import read_records

TIMING = ("_seconds", "_per_second", "wall_time")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rtol", type=float, default=0.0)
    args = parser.parse_args()
    seeds = sorted(os.path.basename(p) for p in glob.glob(os.path.join(args.a, "seed_*")))
    if not seeds or seeds != sorted(os.path.basename(p) for p in glob.glob(os.path.join(args.b, "seed_*"))):
        print(f"different or no seed folders: {args.a} vs {args.b}")
        return 1
    bad = 0
    for seed in seeds:
        ra, rb = read_records(os.path.join(args.a, seed)), read_records(os.path.join(args.b, seed))
        worst, same_keys = 0.0, len(ra) == len(rb)
        for x, y in zip(ra, rb):
            for key in x:
                if key.endswith(TIMING):
                    continue
                if x[key] is None or y.get(key) is None:  # NaN (no episode ended) must match NaN
                    same_keys &= x[key] is None and y.get(key) is None
                    continue
                worst = max(worst, abs(x[key] - y[key]) / max(abs(x[key]), 1e-12))
        ok = same_keys and worst <= args.rtol
        bad += not ok
        print(f"{seed}: {len(ra)} vs {len(rb)} iterations, max relative difference {worst:.3g} {'OK' if ok else 'DIFFERENT'}")
    print(f"{len(seeds) - bad}/{len(seeds)} seeds match")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
