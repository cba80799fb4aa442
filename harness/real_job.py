"""`palsgd run` and `palsgd calibrate`: real runs, with the simulator's prediction for the same experiment.

The launcher (``launch.py``) measures; this module adds what a user asks next: what did the simulator
predict for exactly this experiment, and how far off was it? The prediction uses the experiment's own
cluster description, so it is only meaningful when that describes the machines at hand (a profile
written by ``palsgd calibrate``); the printout says which cluster it used.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ..core import io
from ..core.config import Experiment
from ..core.errors import ConfigError
from . import store
from .compare import compare, format_comparison


def run_to_folder(exp: Experiment, out: Path, *, nproc_per_node: int, nnodes: int, node_rank: int,
                  rdzv_endpoint: str | None, overwrite: bool, resume: bool, emulate_network: str | None,
                  inject_fault: str | None, timeout_s: float, echo: Callable[[str], None] = print) -> int:
    """Run, merge, predict, compare; the exit status (0 complete, 1 failed)."""
    from ..core.faults import FaultSpec
    from .launch import RunFailed, run_real
    from .netem import EmulatedNetwork, NetemSpec, preflight

    spec = NetemSpec.parse(emulate_network) if emulate_network is not None else None
    fault = FaultSpec.parse(inject_fault) if inject_fault is not None else None
    if fault is not None:  # before anything is written
        check_fault(fault, world=nproc_per_node * nnodes, steps=exp.nominal_steps)
    if spec is not None:
        if nnodes != 1:
            raise ConfigError("emulates a network between the ranks of one machine; use --nnodes 1",
                              key="--emulate-network", value=emulate_network, source="command line")
        preflight(spec)
    if node_rank == 0:
        store.prepare(out, overwrite=overwrite, resume=resume, kind="run", job=rdzv_endpoint or "")
    hosts = nproc_per_node * nnodes
    network = EmulatedNetwork(hosts, spec) if spec is not None else contextlib.nullcontext()
    try:
        with network as net:
            result = run_real(exp, out, nproc_per_node=nproc_per_node, nnodes=nnodes, node_rank=node_rank,
                              rdzv_endpoint=rdzv_endpoint, network=net, fault=fault, resume=resume,
                              timeout_s=timeout_s)
    except RunFailed as err:
        echo(f"palsgd: run failed: {err}")
        return 1
    if node_rank != 0:
        return 0
    if result.slow_ranks:
        echo(f"slow ranks: {result.slow_ranks}")
    comparison = add_prediction(exp, Path(out), network=str(spec) if spec else "unshaped")
    echo(f"measured vs predicted on cluster {exp.cluster.name!r} (calibrate with `palsgd calibrate` "
         "for a prediction of this machine):")
    echo(format_comparison(comparison))
    echo(f"wrote {out}/")
    return 0


def check_fault(fault, *, world: int, steps: int) -> None:
    """A fault that cannot happen (no such rank, a step after the run) would make a test pass vacuously."""
    rule = None
    if fault.rank >= world:
        rule = f"rank must be < {world}"
    elif fault.step >= steps:
        rule = f"step must be < the run's {steps} steps"
    elif not math.isfinite(fault.factor):
        rule = "factor must be a finite number"
    if rule is not None:
        raise ConfigError(rule, key="--inject-fault", value=fault.to_text(), source="command line")


def add_prediction(exp: Experiment, out: Path, *, network: str = "", case: str = "") -> pd.DataFrame:
    """Simulate ``exp``; append the sim rows to runs.csv and write comparison.csv. Returns the comparison."""
    from ..sim.engine import simulate

    measured = store.read_table(out, io.RUNS)
    predicted = simulate(exp).runs
    real = measured[measured["source"] == "real"]
    store.write_table(out, io.RUNS, pd.concat([real, predicted], ignore_index=True))
    comparison = compare(predicted, real, case=case or exp.workload.name, workload=exp.workload.name,
                         network=network, ranks=exp.workers)
    store.write_table(out, "comparison.csv", comparison)
    return comparison


def calibrate_to_file(exp: Experiment, out: Path, *, nproc_per_node: int, emulate_network: str | None,
                      echo: Callable[[str], None] = print) -> Path:
    from .calibrate import calibrate
    from .netem import NetemSpec, preflight

    spec = NetemSpec.parse(emulate_network) if emulate_network is not None else None
    if spec is not None:
        preflight(spec)
    path = calibrate(exp, out, nproc_per_node=nproc_per_node, network=spec, command=" ".join(sys.argv))
    echo(f"wrote {path} (use it with `palsgd simulate --cluster {path}`)")
    return path
