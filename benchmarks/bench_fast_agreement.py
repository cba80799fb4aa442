"""The fast path (``sim/fast.py``) against the exact event-by-event engine, run by run (same seed).

For each size, every seed is simulated by both engines (``--engine exact`` and ``fast`` of
``palsgd.sim.engine.simulate``), and the per-run difference of the wall-clock is printed per algorithm:
its mean and largest absolute value, the mean signed difference with its standard error, and the
exact engine's own seed-to-seed spread (the floor of a per-run difference when the two engines do not
share their draws). Where the fast path draws every step of every worker (few workers, short intervals)
it draws the exact engine's factors, so the difference is rounding; where it draws sums and maxima from
their distributions it draws from a stream of its own, so one run differs from the other by about the
seed-to-seed spread, and only the distribution (the mean over seeds) can agree.

Settings: the issue's (gpt-neo-125m on ``a100-4x8-ib100``, ``cluster.nodes`` = workers / 8, jitter cv
0.05, straggler probability 0.001 x 3, ddp, local_sgd, diloco, palsgd). Figures: docs/benchmarks-sim.md.

Run: ``.venv/bin/python benchmarks/bench_fast_agreement.py [--sizes 1024x10000:8,4096x10000:4]``
(workers x steps : seeds).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from palsgd.core.config import load
from palsgd.sim.engine import simulate

ALGOS = ["ddp", "local_sgd", "diloco", "palsgd"]
NOISE = ["cluster.variability.jitter_cv=0.05", "cluster.variability.straggler_prob=0.001",
         "cluster.variability.straggler_factor=3.0"]
SMALL = [  # (label, workers, steps, extra overrides): every step drawn, so the draws are the exact engine's
    ("16 workers x 400 steps, H = 8, 2 slow workers", 16, 400,
     ["algorithm.sync_every=8", "cluster.variability.slow_workers=2", "cluster.variability.slow_factor=1.2"]),
    ("32 workers x 300 steps, H = 10, PALSGD independent draws", 32, 300,
     ["algorithm.sync_every=10", "algorithm.skip_draws=independent"]),
    ("64 workers x 2,000 steps, H = 50, failures (mtbf 2,000 s, restart 30 s)", 64, 2000,
     ["algorithm.sync_every=50", "cluster.failures.mtbf_s=2000", "cluster.failures.restart_s=30"]),
]


def compare(label: str, workers: int, steps: int, seeds: int, extra: list[str]) -> None:
    exp = load(workload="gpt-neo-125m", cluster="a100-4x8-ib100", algorithms=ALGOS, steps=steps,
               overrides=[f"cluster.nodes={max(1, workers // 8)}", *NOISE, *extra, f"repeats={seeds}"])
    runs, took = {}, {}
    for engine in ("exact", "fast"):
        t0 = time.perf_counter()
        runs[engine] = simulate(exp, record_steps=False, keep_totals=False, engine=engine).runs
        took[engine] = time.perf_counter() - t0
    print(f"== {label}: {seeds} seeds; engine time exact {took['exact']:.1f} s, fast {took['fast']:.1f} s "
          f"(load average {os.getloadavg()[0]:.1f}) ==")
    lost = runs["exact"]
    for algo in ALGOS:
        e, f = (runs[k].loc[runs[k]["algorithm"] == algo].sort_values("run")["wall_clock_s"].to_numpy()
                for k in ("exact", "fast"))
        rel = f / e - 1
        se = rel.std(ddof=1) / np.sqrt(len(rel)) if len(rel) > 1 else float("nan")
        print(f"{algo:10s} per run |fast/exact - 1|: mean {100 * np.abs(rel).mean():.2e} %, "
              f"largest {100 * np.abs(rel).max():.2e} %; mean signed {100 * rel.mean():+.3f} % "
              f"(standard error {100 * se:.3f} %); exact seed-to-seed sd {100 * e.std(ddof=1) / e.mean():.3f} %"
              + (f"; mean time lost to failures {lost.loc[lost['algorithm'] == algo, 'failure_s'].mean():.1f} s"
                 if exp.cluster.failures.mtbf_s > 0 else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024x10000:8,4096x10000:4,16384x10000:2",
                        help="workers x steps : seeds, comma-separated")
    parser.add_argument("--no-small", action="store_true", help="skip the small, cell-by-cell cases")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    if not args.no_small:
        for label, workers, steps, extra in SMALL:
            compare(label, workers, steps, 6, extra)
    for size in filter(None, args.sizes.split(",")):
        shape, seeds = size.split(":")
        workers, steps = (int(x) for x in shape.split("x"))
        compare(f"{workers:,} workers x {steps:,} steps", workers, steps, int(seeds), [])


if __name__ == "__main__":
    main()
