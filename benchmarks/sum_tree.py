"""Cost of the NumPy sum tree and of host replay sampling, on this CPU.

    python benchmarks/sum_tree.py              # full run (about a minute)
    python benchmarks/sum_tree.py --quick      # fewer sizes and repeats

Part 1, `SumTree` against its size N (1e4 .. 1e6 leaves, random priorities with 10% zeros):
  sample(32)             independent proportional draws of a batch of 32
  sample(32, strat.)     one draw per equal-mass stratum (Dopamine's scheme)
  set(32)                a batched update of 32 leaves (update_priorities after a train step)
  set_one                one leaf (what replay does on every add)
Goal (issue 5): a batch of 32 in under 50 us on a 1M tree, and logarithmic growth.

Part 2, replay `sample(rng, 32)` (and `add`) for MinAtar (10x10x4 bool -> uint8, no stacking,
the MinAtar DQN setting, 1M steps; prioritized n = 3 as Rainbow, 100k steps) and Atari (84x84
uint8, stacks of 4; n = 1 for DQN, n = 3 prioritized for Rainbow). Atari and prioritized buffers
hold 100k steps here, to spare memory (1M Atari frames take ~7 GB) and fill time: sampling cost
does not depend on the capacity beyond cache effects and the prefix's length (part 1).

Timing: `repeat` rounds of `number` calls; the table shows, per call, the wall-clock median over
rounds, the best round, and the median of this process's CPU time. The load average is recorded
alongside: other work on a 2-core machine inflates wall time (the CPU-time column much less), so
compare the goal against the wall time of a quiet run, or the CPU time when the machine is busy.
Results go to benchmarks/results/sum_tree.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]  # don't shadow modules

from accumbens.atomic import atomic_write  # noqa: E402
from accumbens.replay import PrioritizedReplayBuffer, ReplayBuffer, SumTree  # noqa: E402


def time_call(fn, number: int, repeat: int) -> dict:
    """Microseconds per call of `fn()` over `repeat` rounds of `number` calls.

    median_us / best_us: wall clock (what a quiet machine shows); cpu_median_us: this process's
    CPU time, which other processes competing for the cores inflate much less than wall time.
    """
    for _ in range(max(3, number // 10)):
        fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(number):
            fn()
        wall.append((time.perf_counter() - start) / number)
        cpu.append((time.process_time() - start_cpu) / number)
    return {
        "median_us": statistics.median(wall) * 1e6,
        "best_us": min(wall) * 1e6,
        "cpu_median_us": statistics.median(cpu) * 1e6,
    }


def bench_sum_tree(sizes, number, repeat, seed=0) -> list[dict]:
    rows = []
    for size in sizes:
        rng = np.random.default_rng(seed)
        tree = SumTree(size)
        priorities = rng.random(size)
        priorities[rng.random(size) < 0.1] = 0.0
        tree.set(np.arange(size), priorities)
        index = rng.integers(0, size, 32)
        values = rng.random(32)
        row = {"size": size, "block_size": tree.block_size, "num_blocks": tree.num_blocks}
        row["sample32"] = time_call(lambda: tree.sample(rng, 32), number, repeat)
        row["sample32_stratified"] = time_call(lambda: tree.sample(rng, 32, True), number, repeat)
        row["set32"] = time_call(lambda: tree.set(index, values), number, repeat)
        row["set_one"] = time_call(lambda: tree.set_one(int(index[0]), 0.5), number, repeat)

        def step():  # one prioritized training step: an add, a batch, its new priorities
            tree.set_one(int(index[1]), 0.5)
            tree.set(tree.sample(rng, 32, True), values)

        # The prefix over block masses is rebuilt lazily on the first read after a write: the
        # sample32 rows above read a fresh tree; `step` pays one rebuild, as training does.
        row["train_step"] = time_call(step, number, repeat)
        rows.append(row)
    return rows


def fill(buffer, steps: int, seed: int = 0, episode_length: int = 200) -> None:
    rng = np.random.default_rng(seed)
    shape = buffer.observation_shape
    frames = rng.integers(0, 255, (16, *shape), dtype=np.uint8)
    for t in range(steps):
        end = (t + 1) % episode_length == 0
        buffer.add(frames[t % 16], t % 4, 1.0, end and t % 2 == 0, end and t % 2 == 1,
                   frames[(t + 1) % 16] if end else None)


def bench_replay(number, repeat, minatar_capacity, atari_capacity) -> list[dict]:
    cases = [
        ("minatar dqn (10x10x4, k=1, n=1)", ReplayBuffer, (10, 10, 4), 1, 1, minatar_capacity),
        ("minatar rainbow prioritized (k=1, n=3)", PrioritizedReplayBuffer, (10, 10, 4), 1, 3, atari_capacity),
        ("atari dqn (84x84, k=4, n=1)", ReplayBuffer, (84, 84), 4, 1, atari_capacity),
        ("atari rainbow prioritized (k=4, n=3)", PrioritizedReplayBuffer, (84, 84), 4, 3, atari_capacity),
    ]
    rows = []
    for name, cls, shape, stack, horizon, capacity in cases:
        buffer = cls(capacity, shape, np.uint8, stack, horizon, 0.99)
        start = time.perf_counter()
        fill(buffer, capacity + capacity // 10)  # wrapped around once
        add_us = (time.perf_counter() - start) / (capacity + capacity // 10) * 1e6
        rng = np.random.default_rng(1)
        atari = shape == (84, 84)
        n = max(10, number // 10) if atari else number
        row = {
            "case": name,
            "capacity": capacity,
            "add_us_mean_while_filling": add_us,
            "sample32": time_call(lambda: buffer.sample(rng, 32), n, repeat),
        }
        if isinstance(buffer, PrioritizedReplayBuffer):
            index = buffer.sample(rng, 32).index
            priority = rng.random(32)
            row["update_priorities32"] = time_call(lambda: buffer.update_priorities(index, priority), n, repeat)
        rows.append(row)
        del buffer
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and rounds")
    parser.add_argument("--out", default=os.path.join(_HERE, "results", "sum_tree.json"))
    args = parser.parse_args(argv)
    sizes = [10**4, 10**5, 10**6] if args.quick else [10**4, 3 * 10**4, 10**5, 3 * 10**5, 10**6]
    number, repeat = (300, 5) if args.quick else (2000, 9)

    load_before = os.getloadavg()
    tiny = np.ones(32)
    call_overhead = time_call(lambda: tiny + tiny, 20 * number, repeat)  # one small NumPy call
    tree_rows = bench_sum_tree(sizes, number, repeat)
    replay_rows = bench_replay(number, repeat, 10**6 if not args.quick else 10**5, 10**5)
    load_after = os.getloadavg()

    def cell(t):
        return f"{t['median_us']:7.1f} {t['best_us']:7.1f} {t['cpu_median_us']:7.1f}"

    print(f"SumTree (blocks of {tree_rows[0]['block_size']}), microseconds per call over {repeat} rounds of {number} calls:")
    print("each cell: wall median, wall best round, CPU-time median; train step = set_one + sample(32, strat.) + set(32)")
    names = ("sample32", "sample32_stratified", "set32", "set_one", "train_step")
    titles = ("sample(32)", "sample(32) stratified", "set(32)", "set_one", "train step")
    print(f"{'leaves':>9} {'blocks':>6} " + " ".join(f"{t:>23}" for t in titles))
    for r in tree_rows:
        cells = [cell(r[k]) for k in names]
        print(f"{r['size']:>9} {r['num_blocks']:>6} " + " ".join(f"{c:>23}" for c in cells))
    print("\nReplay, microseconds per call (wall median, wall best round, CPU-time median)")
    for r in replay_rows:
        extra = ""
        if "update_priorities32" in r:
            extra = f"   update_priorities(32) {cell(r['update_priorities32'])}"
        print(f"  {r['case']:<40} cap {r['capacity']:>8}  sample(32) {cell(r['sample32'])}"
              f"   add (mean, wall) {r['add_us_mean_while_filling']:.1f}{extra}")
    print(f"\none small NumPy call (32-element add): {cell(call_overhead)} us; every number above scales with it")
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}; {os.cpu_count()} CPUs")

    result = {
        "benchmark": "sum_tree",
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__},
        "load_average_before": load_before,
        "load_average_after": load_after,
        "timing": {"number": number, "repeat": repeat, "unit": "microseconds per call"},
        "numpy_small_call": call_overhead,
        "sum_tree": tree_rows,
        "replay": replay_rows,
        "goal": "SumTree.sample(32) under 50 us at 1e6 leaves",
        "goal_met_wall_median": tree_rows[-1]["size"] == 10**6 and tree_rows[-1]["sample32"]["median_us"] < 50,
        "goal_met_cpu_median": tree_rows[-1]["size"] == 10**6 and tree_rows[-1]["sample32"]["cpu_median_us"] < 50,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    atomic_write(args.out, lambda f: json.dump(result, f, indent=2), text=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
