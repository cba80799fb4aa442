"""Error against time dilation (issue 23, item 2): the cluster suite's base and 4 x 2 cases at K = 1, 2, 4, 8.

Each (case, K) is one ``palsgd validate --suite cluster`` case run through the suite's own pipeline
(``validate.run_case``: a fresh calibration of the links at K, the real run at K, the simulator's
prediction), with fewer steps and algorithms than the suite so that K = 8 (8x longer) fits. Every
comparison row goes to ``--csv`` with K, the case and the machine's load average during that (case, K):
``/proc/loadavg``'s 1-minute figure sampled every 5 s, mean and max, since other work on this machine is the
host noise dilation is meant to remove.

    sudo .venv/bin/python benchmarks/bench_dilation_error.py --out /tmp/dilation --csv docs/data/dilation_error.csv

What falls with K is the testbed (the host's share of each step shrinks to 1/K); what stays is the model.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import threading
import time
from pathlib import Path

import pandas as pd

from palsgd.harness.commands import validate, validate_cluster
from palsgd.harness.machinery.compare import rel_error_pct

ALGORITHMS = ("ddp", "local_sgd", "diloco")


class LoadSampler:
    """The 1-minute load average every ``period_s`` while running (a daemon thread)."""

    def __init__(self, period_s: float = 5.0):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period_s,), daemon=True)

    def _run(self, period_s: float) -> None:
        while not self._stop.is_set():
            self.samples.append(float(Path("/proc/loadavg").read_text().split()[0]))
            self._stop.wait(period_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def the_cases(steps: int) -> list:
    base = dataclasses.replace(validate_cluster.BASE, steps=steps, algorithms=ALGORITHMS)
    return [base, dataclasses.replace(base, label="layout-4x2", nodes=4, ranks_per_node=2)]


def run_one(case, k: float, out: Path) -> pd.DataFrame:
    folder = out / f"K{k:g}"
    t0 = time.time()
    with LoadSampler() as load:
        rows, _replay = validate.run_case("cluster", case, folder, {}, print, k)
    rows = rows.assign(time_dilation=k, wall_s=round(time.time() - t0, 1),
                       load_mean=round(sum(load.samples) / len(load.samples), 2), load_max=max(load.samples),
                       rel_error_pct=rel_error_pct(rows["predicted"], rows["measured"]))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the runs")
    p.add_argument("--csv", type=Path, required=True, help="comparison rows of every (case, K), appended")
    p.add_argument("--dilations", default="1,8,2,4", help="K values, in the order run")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--cases", default="base-2x4-1gbit,layout-4x2")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    wanted = args.cases.split(",")
    for k in (float(x) for x in args.dilations.split(",")):
        for case in (c for c in the_cases(args.steps) if c.label in wanted):
            print(f"== {case.label} at K={k:g}", flush=True)
            try:
                rows = run_one(case, k, args.out)
            except Exception as err:  # one failed (case, K) is reported; the others still run
                print(f"== {case.label} at K={k:g} failed: {err}", flush=True)
                continue
            args.csv.parent.mkdir(parents=True, exist_ok=True)
            rows.to_csv(args.csv, mode="a", header=not args.csv.exists(), index=False)
            print(rows.to_string(index=False), flush=True)


if __name__ == "__main__":
    main()
