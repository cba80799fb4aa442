"""Sweep executors: the same 10,000-point sweep on the local process pool and as Ray tasks.

Prints points per second and the peak resident memory of this process plus every process it started
(pool workers; Ray's raylet, GCS and workers), sampled every 0.2 s. Checks that both tables are equal.
Figures with their machine: docs/sweeps.md.

Run: ``.venv/bin/python benchmarks/bench_sweep_executors.py [--points N] [--jobs J] [--repeats R]`` (Ray:
``pip install 'palsgd[ray]'``; a local Ray instance with J CPUs is started and stopped). With ``--repeats``
every point runs R seeds with jitter (cv 0.05), so a point is R runs, and the fast path simulates
points of many repeats (``sim.bounds.engine_for``): ``--points 100 --repeats 1000`` is a 100,000-run sweep.
``--cli-ray --points 100000``: only ``palsgd sweep --executor ray`` in a fresh process, as a user runs it,
on a 100,000-point grid of one seed each with jitter and stragglers.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

from palsgd.core.config import load
from palsgd.core.results import read_table_file
from palsgd.harness.machinery.sweep import sweep


def tree_rss_bytes(root: int) -> int:
    """Resident memory of ``root`` and all its descendants, from /proc (Linux)."""
    parent, rss = {}, {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:  # the process ended while we read
            continue
        pid = int(status.parent.name)
        parent[pid] = int(fields.get("PPid", "0"))
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    total = 0
    for pid, size in rss.items():
        p = pid
        while p and p != root:
            p = parent.get(p, 0)
        total += size if p == root else 0
    return total


class PeakMemory:
    """Sample ``tree_rss_bytes`` of this process in a thread; ``peak_bytes`` after ``with``."""

    def __enter__(self) -> PeakMemory:
        self.peak_bytes, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_bytes = max(self.peak_bytes, tree_rss_bytes(os.getpid()))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def grid(points: int) -> list[tuple[str, list]]:
    side = math.isqrt(points)
    return [("cluster.inter_node.bandwidth_gbps", [round(1 + i * 399 / (side - 1), 3) for i in range(side)]),
            ("cluster.inter_node.latency_us", [round(1 + i * 99 / (side - 1), 3) for i in range(side)])]


def timed(label: str, points: int, run) -> pd.DataFrame:
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        table = run()
        dt = time.perf_counter() - t0
    print(f"{label:28s} {dt:7.1f} s  {points / dt:7.1f} points/s  peak resident memory (all processes) "
          f"{mem.peak_bytes / 2**20:7.0f} MiB", flush=True)
    return table


def cli_ray(points: int, noise: bool) -> None:
    """``palsgd sweep --executor ray`` as a user runs it (a fresh process, a local Ray instance it starts,
    each finished chunk stored under ``--out``): wall-clock and peak resident memory of it and every
    process it started (Ray's daemons and workers)."""
    vary = grid(points)
    n = len(vary[0][1]) * len(vary[1][1])
    sets = ["cluster.nodes=2", "algorithm.warmup_steps=0", "algorithm.sync_every=10"]
    if noise:
        sets += ["cluster.variability.jitter_cv=0.05", "cluster.variability.straggler_prob=0.001",
                 "cluster.variability.straggler_factor=3.0"]
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "palsgd.cli", "sweep", "--workload", "gpt-neo-8m", "--cluster", "a100-4x8-ib100",
                "--steps", "100", "--algorithms", "ddp,local_sgd", *[a for s in sets for a in ("--set", s)],
                *[a for key, values in vary for a in ("--vary", f"{key}={','.join(map(str, values))}")],
                "--executor", "ray", "--out", str(Path(tmp) / "sweep")]
        print(f"== palsgd sweep --executor ray: {n:,} points x 2 algorithms (gpt-neo-8m, 16 workers, 100 steps"
              f"{', jitter and stragglers' if noise else ''}); {platform.machine()}, {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.1f} ==", flush=True)
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            done = subprocess.run(argv, stdout=subprocess.DEVNULL, check=False)
            dt = time.perf_counter() - t0
        rows = len(read_table_file(Path(tmp) / "sweep" / "sweep.csv")) if done.returncode == 0 else 0
    print(f"exit {done.returncode}: {dt:.1f} s, {n / dt:.1f} points/s, {rows:,} rows, peak resident memory (all "
          f"processes) {mem.peak_bytes / 2**20:.0f} MiB; load average {os.getloadavg()[0]:.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=10_000, help="grid points (a square number is exact)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count(), help="processes / Ray CPUs")
    ap.add_argument("--repeats", type=int, default=1, help="seeds per point (with jitter cv 0.05 when > 1)")
    ap.add_argument("--cli-ray", action="store_true",
                    help="only `palsgd sweep --executor ray` through the CLI (with jitter and stragglers)")
    args = ap.parse_args()
    if args.cli_ray:
        cli_ray(args.points, noise=True)
        return
    jitter = 0.05 if args.repeats > 1 else 0.0
    base = load(workload="gpt-neo-8m", cluster="a100-4x8-ib100", steps=100, algorithms=["ddp", "local_sgd"],
                overrides=["cluster.nodes=2", "algorithm.warmup_steps=0", "algorithm.sync_every=10",
                           f"cluster.variability.jitter_cv={jitter}", f"repeats={args.repeats}"])
    vary = grid(args.points)
    n = len(vary[0][1]) * len(vary[1][1])
    print(f"== {n:,} points x {args.repeats:,} repeats = {n * args.repeats:,} runs x 2 algorithms (gpt-neo-8m, "
          f"16 workers, 100 steps), {args.jobs} CPUs; "
          f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} ==")
    local = timed("local process pool", n, lambda: sweep(base, vary, jobs=args.jobs).table)
    try:
        import ray
    except ImportError:
        print("ray is not installed: pip install 'palsgd[ray]'")
        return
    t0 = time.perf_counter()
    ray.init(num_cpus=args.jobs, include_dashboard=False, log_to_driver=False)
    print(f"{'ray.init (local instance)':28s} {time.perf_counter() - t0:7.1f} s", flush=True)
    try:
        remote = timed("ray tasks", n, lambda: sweep(base, vary, executor="ray").table)
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(remote, local)
    print("tables equal: yes")


if __name__ == "__main__":
    main()
