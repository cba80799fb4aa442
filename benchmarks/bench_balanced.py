"""``sync_every = "balanced"`` against a fixed H, simulated and measured: ``python benchmarks/bench_balanced.py``.

Two ``palsgd run`` of DiLoCo (and DDP, the reference) on 4 gloo ranks of this machine with emulated
accelerators (compute sleeps c = 0.1 s a step, ``real/emulated_compute.py``), the last rank 1.5x slower
(``cluster.variability.slow_workers = 1, slow_factor = 1.5``), H = 8, 40 steps: one with the fixed H, one
balanced. Prints, for each, the seconds the three fast workers wait at the barriers (mean per worker), the
slow worker's, the local steps each worker took and the wall-clock, measured (the runs' step tables) and
simulated (the runs' own experiment files, ``repeats`` seeds), and the fall of the fast workers' waits.
Target (issue 27): at least 80 % less. The waits are sleeps and barriers, so a loaded host (the load
average is printed) adds its scheduling delays to the measured ones.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from palsgd.core.config import load
from palsgd.sim.engine import simulate

ALGORITHM, SLOW_WORKER = "diloco", 3
COMMON = ["--workload", "gpt-tiny", "--cluster", "cpu-4rank-gloo", "--algorithms", f"ddp,{ALGORITHM}",
          "--steps", "40", "--nproc-per-node", "4", "--emulate-compute",
          "--set", "cluster.compute.step_time_s=0.1", "--set", "cluster.compute.optimizer_time_s=0.005",
          "--set", "cluster.variability.slow_workers=1", "--set", "cluster.variability.slow_factor=1.5",
          "--set", "algorithm.sync_every=8", "--set", "algorithm.warmup_steps=0",
          "--set", "train.threads_per_rank=1"]
MODES = {"fixed H = 8": [], "balanced": ["--set", "algorithm.sync_every=balanced"]}


def figures(steps: pd.DataFrame) -> dict:
    """Mean over runs: the fast workers' barrier waits (per worker), the slow one's, local steps, wall-clock."""
    s = steps[steps.algorithm == ALGORITHM]
    runs = s.run.nunique()
    wait = s[s.phase == "wait"]
    wait_s = (wait.end_s - wait.start_s).groupby(wait.worker).sum() / runs
    fast = [w for w in sorted(s.worker.unique()) if w != SLOW_WORKER]
    computed = s[s.phase == "compute"].groupby("worker").size() / runs
    return {"fast_wait_s": float(wait_s.reindex(fast, fill_value=0.0).mean()),
            "slow_wait_s": float(wait_s.get(SLOW_WORKER, 0.0)),
            "local_steps": "/".join(f"{computed.get(w, 0):g}" for w in sorted(s.worker.unique())),
            "wall_s": float(s.groupby("run").end_s.max().mean())}


def main() -> None:
    load_avg = Path("/proc/loadavg").read_text().split()[:3]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode, extra in MODES.items():
            out = Path(tmp) / mode.split()[0]
            subprocess.run([sys.executable, "-m", "palsgd.cli", "run", *COMMON, *extra, "--out", str(out)],
                           check=True, capture_output=True, timeout=900)
            rows.append({"mode": mode, "side": "measured", **figures(pd.read_parquet(out / "steps.parquet"))})
            exp = load(out / "experiment.toml")
            rows.append({"mode": mode, "side": "simulated", **figures(simulate(exp, record_steps=True).steps)})
    table = pd.DataFrame(rows).set_index(["side", "mode"]).sort_index()
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    for side in ("simulated", "measured"):
        before, after = (table.loc[(side, m), "fast_wait_s"] for m in MODES)
        print(f"{side}: the fast workers' barrier waits fall by {1 - after / before:.1%} (target >= 80 %)")
    print(f"load average before the runs: {' '.join(load_avg)} (2 cores shared with other work)")


if __name__ == "__main__":
    main()
