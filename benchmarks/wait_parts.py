"""Where a measured wait of DDP comes from (issue 23): the workers' compute, or ranks leaving the
previous all-reduce at different times.

A real DDP step's wait (``core.schema.split_ddp_wait``) runs from a worker's compute end to the slowest
worker's. It has two parts:

* **durations**: the slowest worker's compute duration minus the worker's own, the part the simulator
  models (its workers leave a collective together and start the next step together);
* **start skew**: the rest. The ranks leave the previous step's all-reduce at different times (a ring
  ends rank by rank) and start their compute apart; the simulator has no such term.

For every case of ``palsgd validate`` folders (or ``palsgd run`` folders) with DDP, per run: the
predicted wait (the simulated run of the real run's seed), the measured one and its two parts, seconds
per worker over the run, and the median spread of the ranks' all-reduce end times per step.

    .venv/bin/python benchmarks/wait_parts.py VALIDATE_OR_RUN_DIR... [--algorithm ddp] [--csv rows.csv]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from palsgd.core import io


def run_folders(paths: list[str]) -> list[Path]:
    """The run folders under each path: a validate folder's cases/*/run, or the path itself."""
    out = []
    for p in map(Path, paths):
        out += sorted(p.glob("cases/*/run")) if (p / "cases").is_dir() else [p]
    return [f for f in out if (f / io.STEPS).is_file()]


def parts(steps: pd.DataFrame) -> dict[str, float]:
    """One real run of one algorithm: measured wait, its durations part and start skew (s per worker),
    and the median per-step spread of the all-reduce's end over the ranks (ms)."""
    workers = steps["worker"].nunique()
    comp = steps[steps["phase"] == "compute"].assign(dur=lambda d: d["end_s"] - d["start_s"])
    dur = comp.pivot_table(index="step", columns="worker", values="dur")
    waits = steps[steps["phase"] == "wait"]
    measured = float((waits["end_s"] - waits["start_s"]).sum()) / workers
    from_durations = float(dur.rsub(dur.max(axis=1), axis=0).to_numpy().mean() * len(dur))
    ends = steps[steps["phase"] == "allreduce"].groupby(["step", "worker"])["end_s"].max().unstack()
    return {"wait_measured_s": measured, "from_durations_s": from_durations,
            "start_skew_s": measured - from_durations,
            "allreduce_end_spread_ms": float((ends.max(axis=1) - ends.min(axis=1)).median() * 1e3)}


def rows(folder: Path, algorithm: str) -> list[dict]:
    steps = pd.read_parquet(folder / io.STEPS)
    steps = steps[(steps["source"] == "real") & (steps["algorithm"] == algorithm)]
    runs = pd.read_csv(folder / io.RUNS)
    predicted = runs[(runs["source"] == "sim") & (runs["algorithm"] == algorithm) & (runs["run"] == 0)]
    out = []
    for run, one in steps.groupby("run"):
        row = {"case": folder.parent.name, "algorithm": algorithm, "run": run,
               "wait_predicted_s": float(predicted["wait_s"].iloc[0]) if len(predicted) else float("nan")}
        out.append({**row, **parts(one)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--algorithm", default="ddp")
    ap.add_argument("--csv", default="")
    args = ap.parse_args()
    table = pd.DataFrame([r for f in run_folders(args.folders) for r in rows(f, args.algorithm)])
    if table.empty:
        raise SystemExit(f"no run of {args.algorithm} with a step table under {', '.join(args.folders)}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.csv:
        io.write_csv(args.csv, table)


if __name__ == "__main__":
    main()
