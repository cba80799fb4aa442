"""Simulator speed and memory: prints the figures recorded in docs/benchmarks-sim.md.

1. 1,024 workers x 10,000 steps of each algorithm, with jitter and stragglers (target: < 10 s each).
2. A sweep of 1,000 configurations of 64-worker runs (4 algorithms x 1,000 steps each) on every
   core (target: < 60 s on two cores).
3. Peak resident memory of ``palsgd simulate`` (each in a fresh process) for 1,024 and 16,384 workers
   and for ``--repeats 1000``, next to the simulator's own estimate (``palsgd.sim.bounds``).

Run: ``.venv/bin/python benchmarks/bench_sim.py [--quick] [--memory-only | --speed-only]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

from palsgd.core.config import load
from palsgd.harness.machinery.sweep import sweep
from palsgd.sim import bounds
from palsgd.sim.engine import simulate

NOISE = ["cluster.variability.jitter_cv=0.05", "cluster.variability.straggler_prob=0.001",
         "cluster.variability.straggler_factor=3.0"]


def big_runs(steps: int) -> None:
    print(f"== 1,024 workers x {steps:,} steps (gpt-neo-125m, 128 nodes x 8 A100, IB 100 Gb/s) ==")
    for algo in ("ddp", "local_sgd", "diloco", "palsgd"):
        exp = load(workload="gpt-neo-125m", cluster="a100-4x8-ib100", algorithms=[algo], steps=steps,
                   overrides=["cluster.nodes=128", *NOISE])
        tracemalloc.start()
        t0 = time.perf_counter()
        res = simulate(exp)
        dt = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        # Events: one per (worker, step, phase) row the engine accounts for.
        events = int(res.totals["count"].sum())
        row = res.runs.iloc[0]
        print(f"{algo:10s} {dt:6.2f} s  {events / dt / 1e6:6.1f} M worker-phase events/s  "
              f"peak traced memory {peak / 2**20:7.1f} MiB  simulated wall clock {row.wall_clock_s:9.1f} s")


def sweep_bench(configs: int, steps: int) -> None:
    print(f"== sweep: {configs:,} configurations x 4 algorithms x 64 workers x {steps:,} steps ==")
    base = load(workload="gpt-neo-8m", cluster="a100-4x8-ib100", steps=steps,
                overrides=["cluster.nodes=8", *NOISE])
    bandwidths = np.geomspace(1, 3200, configs // 25).round(3).tolist()
    syncs = np.linspace(10, steps // 2, 25).astype(int).tolist()  # H from 10 to 500: 25 values
    jobs = os.cpu_count()
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    res = sweep(base, [("cluster.inter_node.bandwidth_gbps", bandwidths), ("algorithm.sync_every", syncs)],
                jobs=jobs)
    dt = time.perf_counter() - t0
    cpu = _cpu_s() - cpu0
    points = len(bandwidths) * len(syncs)
    print(f"{points} configurations on {jobs} processes: {dt:.1f} s wall ({points / dt:.0f} configurations/s), "
          f"{cpu:.1f} s CPU in all processes (= {cpu / jobs:.1f} s wall on {jobs} idle cores), "
          f"{len(res.table)} run rows, {len(res.crossovers)} crossovers")
    print(f"load average during the sweep: {os.getloadavg()[0]:.1f} (other processes share the cores)")


MEMORY_CASES = [
    ("default workload, 1,024 workers (128 nodes)", ["--steps", "1000", "--set", "cluster.nodes=128"]),
    ("default workload, 16,384 workers (2,048 nodes)", ["--steps", "1000", "--set", "cluster.nodes=2048"]),
    ("gpt-tiny, --repeats 1000 (32 workers x 60 steps)", ["--workload", "gpt-tiny", "--repeats", "1000"]),
]


def memory_runs() -> None:
    """Each case in a fresh ``palsgd simulate`` process, as a user runs it (no --out)."""
    print("== peak resident memory of `palsgd simulate` (fresh process each) ==")
    for name, args in MEMORY_CASES:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "palsgd.cli", "simulate", "--json", *args],
                                stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        dt = time.perf_counter() - t0
        steps = _arg(args, "--steps")
        exp = load(workload=_arg(args, "--workload"), steps=int(steps) if steps else None, overrides=_sets(args))
        est = bounds.estimate(exp, record_steps=False, keep_totals=False)
        print(f"{name:50s} exit {os.waitstatus_to_exitcode(status)}  {dt:7.1f} s  peak RSS "
              f"{usage.ru_maxrss / 1024:7.0f} MiB  estimate {est.peak_bytes / 2**20:7.0f} MiB "
              f"(+ the interpreter)  {exp.workers:,} workers x {exp.nominal_steps:,} steps x {exp.repeats} repeats")


def _arg(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def _sets(args: list[str]) -> list[str]:
    out = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    return out + ([f"repeats={_arg(args, '--repeats')}"] if "--repeats" in args else [])


def _cpu_s() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the work, for a smoke test")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory measurements")
    parser.add_argument("--speed-only", action="store_true", help="only the speed measurements (1 and 2)")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}")
    if not args.speed_only:
        memory_runs()
    if args.memory_only:
        return
    big_runs(10_000 // scale)
    sweep_bench(1_000 // scale, 1_000)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of this process: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
