"""Exposed communication with a whole round of delay and eager outer steps, measured and predicted (issue 27).

Runs the cluster suite's ``eager-delay-2x4-1gbit`` case alone (``harness/commands/validate_cluster.py``):
emulated accelerators on 2 emulated nodes of 4 ranks joined by 1 Gbit/s and 5 ms, GPT-Neo-8M's payload,
H = 8; DDP, DiLoCo (tau = 0) and Streaming DiLoCo with P = 1, tau = H, eager. Prints, per algorithm, the
exposed communication (``comm_exposed_s``, per worker over the run) measured and predicted, and the ratio
of the delayed run's to DiLoCo's, which the issue wants at most 10 %.

    sudo .venv/bin/python benchmarks/bench_eager_delay.py OUT [--time-dilation K]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from palsgd.core import io
from palsgd.harness.commands import validate, validate_cluster
from palsgd.harness.machinery import netem, store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--time-dilation", type=float, default=1.0)
    args = ap.parse_args()
    case = next(c for c in validate_cluster.cases(quick=False) if c.name == "eager-delay-2x4-1gbit")
    netem.preflight(netem.NetemSpec.parse(case.network).dilated(args.time_dilation))
    out = store.prepare(args.out, overwrite=True)
    validate.run_case("cluster", case, out, {}, print, args.time_dilation)
    runs = store.read_table(out / "cases" / case.name / "run", io.RUNS)
    means = runs.groupby(["algorithm", "source"])[["comm_exposed_s", "wall_clock_s", "step_time_mean_s"]].mean()
    print(means.round(4).to_string())
    for source in ("real", "sim"):
        delayed, blocking = (means.loc[(a, source), "comm_exposed_s"] for a in ("streaming_diloco", "diloco"))
        print(f"{source}: exposed communication, tau = H eager / tau = 0: {delayed:.4f} / {blocking:.4f} s "
              f"= {100 * delayed / blocking:.1f} %")


if __name__ == "__main__":
    main()
