"""The CPU suite of ``palsgd validate`` (the default): tiny models trained on this machine's cores.

A matrix of cases (workload x ranks x network). Each case calibrates the machine afresh on its network
(``machinery/calibrate.py``: all-reduce times fitted to the simulator's cost model, compute measured on N
concurrent ranks, once per workload and ranks) and returns the experiment on that profile and its launch;
``validate.py`` runs and predicts it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...core.algorithms import ALGORITHMS
from ...core.config import Experiment, load
from ..machinery import calibrate
from ..machinery.pipeline import UNSHAPED, Launch

NETWORKS = (UNSHAPED, "rate=1gbit,delay=5ms", "rate=100mbit,delay=10ms")
WORKLOADS = ("gpt-tiny", "resnet-tiny")
FULL_RANKS = (2, 4)
FULL_STEPS = 60
QUICK_STEPS = 24
STREAMING = ("algorithm.streaming_diloco.fragments=2", "algorithm.streaming_diloco.fragment_sync_delay=1")
"""Streaming DiLoCo as validated (both suites): two fragments, each all-reduce overlapped with one inner step."""
TARGETS = {"step_time_mean_s": (5.0, 15.0), "speedup_vs_ddp": (5.0, 5.0)}
"""metric -> (median, maximum) of |error| we aim for (% for times, percentage points for speedup)."""

# Calibration sized for the tiny workloads, whose payloads are 1-2 MB: sizes from 4 KiB to 4 MiB cover
# the DDP buckets (1 MiB first, the rest after) and a sync's flat buffer, in ~20 s per network.
CALIBRATION = {"min_bytes": 4096, "max_bytes": 4 * 2**20, "reps": 5, "per_octave": 1.0}
COMPUTE_STEPS = 80
"""Compute calibration steps per rank. With 20, two concurrent calibration ranks measured c = 155-175 ms
for gpt-tiny against 52-87 ms with 80 and 75-112 ms in the runs (docs/validation.md): a short window is
dominated by the sibling ranks' start-up."""


@dataclass(frozen=True)
class Case:
    workload: str
    ranks: int
    network: str
    """``unshaped`` (loopback, no emulation) or a NetemSpec string such as ``rate=1gbit,delay=5ms``."""
    steps: int

    @property
    def name(self) -> str:
        net = self.network.replace("rate=", "").replace("delay=", "").replace(",", "-")
        return f"{self.workload}-{self.ranks}r-{net}"

    @property
    def shaped(self) -> bool:
        return self.network != UNSHAPED

    def describe(self) -> dict:
        return {"workload": self.workload, "ranks": self.ranks, "network": self.network, "steps": self.steps}


def cases(*, quick: bool, emulate: bool) -> list[Case]:
    """The cases: the full matrix, or the quick subset CI runs (gpt-tiny, 2 ranks, few steps)."""
    networks = NETWORKS if emulate else (UNSHAPED,)
    if quick:
        return [Case("gpt-tiny", 2, net, QUICK_STEPS) for net in networks[:2]]
    return [Case(w, n, net, FULL_STEPS) for w in WORKLOADS for n in FULL_RANKS for net in networks]


def case_experiment(case: Case, cluster: str | None = None) -> Experiment:
    """The experiment of a case: the workload preset on one node of ``case.ranks`` ranks, all five
    algorithms, ``case.steps`` steps; on ``cluster`` (a calibrated profile) when given.

    Threads per rank are fixed to the cores divided among the ranks, as the compute calibration runs:
    under emulation each rank is alone in its namespace (LOCAL_WORLD_SIZE = 1) and took every core
    before the launcher learnt otherwise: 2 ranks x 2 threads on 2 cores ran 3-4x slower (measured)."""
    threads = max(1, len(os.sched_getaffinity(0)) // case.ranks)
    return load(workload=case.workload, cluster=cluster, steps=case.steps, algorithms=list(ALGORITHMS),
                overrides=[f"cluster.gpus_per_node={case.ranks}", "cluster.nodes=1",
                           f"train.threads_per_rank={threads}", *STREAMING])


def prepare(case: Case, folder: Path, out: Path, computed: dict, time_dilation: float = 1.0
            ) -> tuple[Experiment, Launch, Path]:
    """Calibrate on the case's network (compute once per workload and ranks, kept in ``out/compute``);
    the case's experiment, its launch and the profile, which the pipeline moves the experiment onto. The
    compute is real, so ``time_dilation`` is always 1 here (``dilation.check`` refuses another)."""
    launch = Launch(case.ranks, network=case.network if case.shaped else None, time_dilation=time_dilation)
    base = case_experiment(case)
    key = (case.workload, case.ranks)
    if key not in computed:  # compute does not depend on the network: measure once, reuse
        path = out / "compute" / f"{case.workload}-{case.ranks}r.json"
        computed[key] = calibrate.run_compute(base, case.ranks, path, COMPUTE_STEPS, timeout_s=600.0)
    profile = calibrate.calibrate(base, folder / "profile" / "cluster.toml", nproc_per_node=case.ranks,
                                  network=launch.netem_spec, measured_compute=computed[key],
                                  command=f"palsgd validate ({case.name})", **CALIBRATION)
    return base, launch, Path(profile)
