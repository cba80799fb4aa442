"""Simulator speed and memory: prints the figures recorded in docs/benchmarks-sim.md.

1. 1,024 workers x 10,000 steps of each algorithm, with jitter and stragglers (target: < 10 s each).
2. A sweep of 1,000 configurations of 64-worker runs (4 algorithms x 1,000 steps each) on every
   core (target: < 60 s on two cores).
3. Peak resident memory of ``palsgd simulate`` (each in a fresh process) for 1,024 and 16,384 workers
   and for ``--repeats 1000``, next to the simulator's own estimate (``palsgd.sim.bounds``).
4. ``--scale``: the fast path through the CLI, each point a fresh ``palsgd simulate`` process: the
   scaling curve (wall and peak RSS against workers 256 ... 65,536 and steps 1,000 ... 1,000,000, per
   algorithm), the targets of 16,384 workers x 100,000 steps x 4 algorithms (<= 60 s, <= 2 GB) and
   65,536 x 100,000 x 5 (<= 60 s, <= 4 GB), 100,000 Monte-Carlo repeats of a 2-worker, 60-step
   experiment (<= 60 s), and the fast path's wall-clocks against the exact engine's at 1,024 x 10,000.

Run: ``.venv/bin/python benchmarks/bench_sim.py [--quick] [--memory-only | --speed-only | --scale]``.
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


ALGORITHMS = ("ddp", "local_sgd", "diloco", "palsgd", "streaming_diloco")
BIG = ["--workload", "gpt-neo-125m", "--cluster", "a100-4x8-ib100", *[a for n in NOISE for a in ("--set", n)]]


def _cli(args: list[str]) -> tuple[float, float, int]:
    """(seconds, peak RSS in MB, exit status) of one fresh ``palsgd simulate`` process, its table to /dev/null."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "palsgd.cli", "simulate", *args], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - t0, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def _big(workers: int, steps: int, algorithms) -> list[str]:
    return [*BIG, "--algorithms", ",".join(algorithms), "--steps", str(steps), "--set", f"cluster.nodes={workers // 8}"]


def scaling(quick: bool) -> None:
    print("== scaling curve: one algorithm per fresh `palsgd simulate` process (jitter cv 0.05, stragglers "
          "0.1 % x 3) ==")
    print("| algorithm | workers | steps | engine | wall s | peak RSS MB | estimate MB |")
    print("|---|---|---|---|---|---|---|")
    workers = (256, 1024, 4096, 16384) if quick else (256, 1024, 4096, 16384, 65536)
    steps = (1_000, 10_000, 100_000) if quick else (1_000, 10_000, 100_000, 1_000_000)
    points = [(w, 10_000) for w in workers] + [(1024, s) for s in steps if s != 10_000]
    for algo in ALGORITHMS:
        for w, s in points:
            args = _big(w, s, [algo])
            exp = load(workload="gpt-neo-125m", cluster="a100-4x8-ib100", algorithms=[algo], steps=s,
                       overrides=[f"cluster.nodes={w // 8}", *NOISE])
            est = bounds.estimate(exp, record_steps=False, keep_totals=False)
            dt, rss, code = _cli(args)
            print(f"| {algo} | {w:,} | {s:,} | {est.engine} | {dt:.1f}{'' if code == 0 else f' (exit {code})'} | "
                  f"{rss:.0f} | {est.peak_bytes / 2**20:.0f} |", flush=True)


def targets() -> None:
    print("== targets through the CLI (fresh process each) ==")
    for workers, algos, goal in ((16384, ALGORITHMS[:4], "<= 60 s, <= 2 GB"), (65536, ALGORITHMS, "<= 60 s, <= 4 GB")):
        dt, rss, code = _cli(_big(workers, 100_000, algos))
        print(f"{workers:,} workers x 100,000 steps x {len(algos)} algorithms: {dt:.1f} s, peak RSS {rss:.0f} MB, "
              f"exit {code} (target {goal}); load average {os.getloadavg()[0]:.1f}", flush=True)
    args = ["--workload", "gpt-tiny", "--cluster", "cpu-2core-gloo", "--repeats", "100000",
            *[a for n in NOISE for a in ("--set", n)]]
    dt, rss, code = _cli(args)
    print(f"100,000 repeats of gpt-tiny, 2 workers x 60 steps x 4 algorithms: {dt:.1f} s, peak RSS {rss:.0f} MB, "
          f"exit {code} (target <= 60 s); load average {os.getloadavg()[0]:.1f}", flush=True)


def agreement(workers: int = 1024, steps: int = 10_000, repeats: int = 8) -> None:
    """The fast path's wall-clock against the exact engine's: mean over ``repeats`` seeds, its standard
    error, and the exact engine's own seed-to-seed spread (the yardstick of a difference)."""
    print(f"== fast path vs exact engine: {workers:,} workers x {steps:,} steps, {repeats} seeds each ==")
    exp = load(workload="gpt-neo-125m", cluster="a100-4x8-ib100", algorithms=list(ALGORITHMS), steps=steps,
               overrides=[f"cluster.nodes={workers // 8}", *NOISE, f"repeats={repeats}"])
    runs, took = {}, {}
    for engine in ("exact", "fast"):
        t0 = time.perf_counter()
        runs[engine] = simulate(exp, record_steps=False, keep_totals=False, engine=engine).runs
        took[engine] = time.perf_counter() - t0
    for algo in ALGORITHMS:
        e, f = (runs[k].loc[runs[k]["algorithm"] == algo, "wall_clock_s"] for k in ("exact", "fast"))
        se = np.sqrt(e.var() / len(e) + f.var() / len(f))
        print(f"{algo:17s} exact {e.mean():10.2f} s  fast {f.mean():10.2f} s  difference "
              f"{100 * (f.mean() / e.mean() - 1):+.3f} % (standard error {100 * se / e.mean():.3f} %; one exact "
              f"seed to the next: sd {100 * e.std() / e.mean():.3f} %)")
    print(f"engine time: exact {took['exact']:.1f} s, fast {took['fast']:.1f} s")


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
    parser.add_argument("--scale", action="store_true", help="only the fast path's scaling, targets and agreement (4)")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}")
    if args.scale:
        agreement()
        targets()
        scaling(args.quick)
        return
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
