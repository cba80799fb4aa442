"""`palsgd run` and `palsgd calibrate`: real runs, with the simulator's prediction for the same experiment.

The launcher (``launch.py``) measures; this module adds what a user asks next: what did the simulator
predict for exactly this experiment, and how far off was it? The prediction uses the experiment's own
cluster description, so it is only meaningful when that describes the machines at hand (a profile
written by ``palsgd calibrate``); the printout says which cluster it used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ...core import io
from ...core.config import Experiment
from ...core.errors import ConfigError
from ..machinery import store
from ..machinery.compare import METRICS, compare, format_comparison

PREFLIGHT_BAD_INPUT = 2


def run_to_folder(exp: Experiment, out: Path, *, nproc_per_node: int, nnodes: int, node_rank: int,
                  rdzv_endpoint: str | None, overwrite: bool, resume: bool, emulate_network: str | None,
                  inject_fault: str | None, timeout_s: float, echo: Callable[[str], None] = print) -> int:
    """Run, merge, predict, compare; the exit status (0 complete, 1 failed)."""
    from ...core.faults import FaultSpec
    from ..machinery.launch import RunFailed, check_world, job_id, run_real
    from ..machinery.netem import EmulatedNetwork, NetemSpec, preflight

    spec = NetemSpec.parse(emulate_network) if emulate_network is not None else None
    fault = FaultSpec.parse(inject_fault) if inject_fault is not None else None
    if fault is not None:  # before anything is written
        check_fault(fault, world=nproc_per_node * nnodes, steps=exp.nominal_steps)
    if spec is not None:
        if nnodes != 1:
            raise ConfigError("emulates a network between the ranks of one machine; use --nnodes 1",
                              key="--emulate-network", value=emulate_network, source="command line")
        preflight(spec)
        exp = on_emulated_nodes(exp, spec, nproc_per_node)
    check_nodes(nnodes, node_rank, rdzv_endpoint)
    loose = spec is not None and not spec.nodes  # as run_real checks it, but before --out is made
    check_world(exp, exp.cluster.gpus_per_node if loose else nproc_per_node, exp.cluster.nodes if loose else nnodes,
                node_rank)
    check_before_launch(exp, nproc_per_node)
    hosts = nproc_per_node * nnodes
    network = EmulatedNetwork(hosts, spec) if spec is not None else contextlib.nullcontext()
    if node_rank == 0:  # after every check of the command line: a refused run leaves --out as it was
        store.prepare(out, overwrite=overwrite, resume=resume, kind="run", exp=exp, job=job_id(rdzv_endpoint))
    try:
        with network as net:
            result = run_real(exp, out, nproc_per_node=nproc_per_node, nnodes=nnodes, node_rank=node_rank,
                              rdzv_endpoint=rdzv_endpoint, network=net, fault=fault, resume=resume,
                              timeout_s=timeout_s)
    except RunFailed as err:
        echo(f"palsgd: run {err.status}: {err}")
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


def check_before_launch(exp: Experiment, local_ranks: int) -> None:
    """``real/preflight.py`` in one process (this layer does not import torch): ranks, model, data and
    memory are checked once, so a problem is one line instead of a traceback from every rank."""
    with tempfile.TemporaryDirectory(prefix="palsgd-preflight-") as tmp:
        exp_json = io.write_json(Path(tmp) / "experiment.json", exp.to_dict())
        done = subprocess.run([sys.executable, "-m", "palsgd.real.preflight", "--experiment", str(exp_json),
                               "--local-ranks", str(local_ranks)], capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise ConfigError(lines[-1] if done.returncode == PREFLIGHT_BAD_INPUT else f"preflight failed: {lines[-1]}")


def check_writable(out: Path) -> None:
    """The profile and the files beside it can be written: found now, not after minutes of measuring."""
    io.check_writable(out, "--out")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as err:
        raise ConfigError(f"cannot write files in {out.parent} ({err.strerror})", key="--out", value=str(out),
                          source="command line") from None
    if out.exists() and not os.access(out, os.W_OK):
        raise ConfigError("cannot be written", key="--out", value=str(out), source="command line")


def on_emulated_nodes(exp: Experiment, spec, ranks: int) -> Experiment:
    """``nodes=K`` in --emulate-network splits this machine's ranks into K emulated nodes: the experiment's
    cluster (and so its prediction) is K nodes of ranks / K workers."""
    if not spec.nodes:
        return exp
    if ranks % spec.nodes:
        raise ConfigError(f"{ranks} ranks do not split evenly over nodes={spec.nodes}", key="--emulate-network",
                          value=str(spec), source="command line")
    return exp.replace(cluster=dataclasses.replace(exp.cluster, nodes=spec.nodes,
                                                   gpus_per_node=ranks // spec.nodes))


def check_nodes(nnodes: int, node_rank: int, rdzv_endpoint: str | None) -> None:
    """What torchrun would refuse only after the results folder is made."""
    if not 0 <= node_rank < nnodes:
        raise ConfigError(f"must be in 0..{nnodes - 1} for --nnodes {nnodes}", key="--node-rank", value=node_rank,
                          source="command line")
    if nnodes > 1 and rdzv_endpoint is None:
        raise ConfigError("several nodes need a rendezvous endpoint HOST:PORT", key="--rdzv-endpoint",
                          source="command line")
    if rdzv_endpoint is not None:
        check_endpoint(rdzv_endpoint)


def check_endpoint(endpoint: str) -> None:
    """HOST:PORT (an IPv6 host in brackets), as torchrun's c10d rendezvous parses it; torchrun would only
    fail on it after every node had started."""
    host, sep, port = endpoint.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    bare = host[1:-1] if bracketed else host
    bad_host = not bare or any(c.isspace() or c in "[]/" for c in bare) or (":" in bare and not bracketed)
    if not sep or bad_host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("must be HOST:PORT with a port in 1..65535 (an IPv6 host in brackets)",
                          key="--rdzv-endpoint", value=endpoint, source="command line")


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


def add_prediction(exp: Experiment, out: Path, *, network: str = "", case: str = "",
                   extra_metrics: tuple[str, ...] = ()) -> pd.DataFrame:
    """Simulate ``exp``; append the sim rows to runs.csv and write comparison.csv. Returns the comparison.
    ``extra_metrics``: run-table columns compared beyond ``compare.METRICS`` (e.g. ``wait_s``)."""
    from ...sim.engine import simulate

    measured = store.read_table(out, io.RUNS)
    predicted = simulate(exp).runs
    real = measured[measured["source"] == "real"]
    store.write_table(out, io.RUNS, pd.concat([real, predicted], ignore_index=True))
    comparison = compare(predicted, real, case=case or exp.workload.name, workload=exp.workload.name,
                         network=network, ranks=exp.workers, metrics=(*METRICS, *extra_metrics))
    store.write_table(out, "comparison.csv", comparison)
    return comparison


def calibrate_to_file(exp: Experiment, out: Path, *, nproc_per_node: int, emulate_network: str | None,
                      echo: Callable[[str], None] = print) -> Path:
    from ..machinery.calibrate import calibrate
    from ..machinery.netem import NetemSpec, preflight

    spec = NetemSpec.parse(emulate_network) if emulate_network is not None else None
    if spec is not None:
        preflight(spec)
    check_before_launch(exp, nproc_per_node)  # first: it writes nothing, check_writable makes --out's folder
    check_writable(Path(out))
    path = calibrate(exp, out, nproc_per_node=nproc_per_node, network=spec, command=" ".join(sys.argv),
                     ddp_buckets=True)
    echo(f"wrote {path} (use it with `palsgd simulate --cluster {path}`)")
    return path
