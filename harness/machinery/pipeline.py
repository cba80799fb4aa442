"""The middle floor of the harness: launch an experiment for real, predict the same experiment, compare.

``palsgd run`` and both suites of ``palsgd validate`` end the same way: the experiment's ranks start as a
``Launch`` says (torchrun's layout, the emulated network, limits, an injected fault), the tables are merged
into a results folder (``launch.py``), and the simulator's prediction of exactly that experiment is added
beside the measurement and compared (``compare.py``). ``measure_and_predict`` is that path, once; the
``check_*`` functions are what a launch is refused for before anything is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ...core import config, io
from ...core.config import Experiment
from ...core.errors import ConfigError
from ...core.faults import FaultSpec
from ...core.schema import COMPARED_METRICS
from ...sim import engine
from . import launch as launcher
from . import netem, store
from .compare import PAIRED, compare

PREFLIGHT_BAD_INPUT = 2
UNSHAPED = "unshaped"
"""The network of a run without emulation: loopback or the machines' own links."""


@dataclass(frozen=True)
class Launch:
    """How an experiment's ranks are started: what ``palsgd run``'s options say, as one value."""

    ranks_per_node: int
    nodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    network: str | None = None
    """An emulated network (``--emulate-network``, ``netem.NetemSpec``); None: unshaped."""
    fault: FaultSpec | None = None
    resume: bool = False
    timeout_s: float = 300.0
    time_dilation: float = 1.0
    """K >= 1: the emulated links and compute run K times slower and every measured time is divided by K
    (``dilation.py``)."""

    @property
    def ranks(self) -> int:
        return self.ranks_per_node * self.nodes

    @property
    def lead(self) -> bool:
        """The launcher given node rank 0 writes the manifest, merges and predicts."""
        return self.node_rank == 0

    @property
    def network_name(self) -> str:
        return self.network or UNSHAPED

    @property
    def netem_spec(self) -> netem.NetemSpec | None:
        return netem.NetemSpec.parse(self.network) if self.network else None


def measure(exp: Experiment, folder: Path, launch: Launch) -> launcher.RealResult:
    """Run every algorithm of ``exp`` for real into ``folder`` (on the emulated network, if any)."""
    spec = launch.netem_spec
    network = (netem.EmulatedNetwork(launch.ranks, spec.dilated(launch.time_dilation)) if spec is not None
               else contextlib.nullcontext())
    with network as net:
        return launcher.run_real(exp, folder, nproc_per_node=launch.ranks_per_node, nnodes=launch.nodes,
                                 node_rank=launch.node_rank, rdzv_endpoint=launch.rdzv_endpoint, network=net,
                                 fault=launch.fault, resume=launch.resume, timeout_s=launch.timeout_s,
                                 time_dilation=launch.time_dilation)


def predict(exp: Experiment, folder: Path, *, network: str = "", case: str = "",
            extra_metrics: tuple[str, ...] = ()) -> pd.DataFrame:
    """Simulate ``exp``; append the sim rows to the folder's runs.csv and write comparison.csv. Returns the
    comparison. ``extra_metrics``: run-table columns compared beyond ``COMPARED_METRICS`` (e.g. ``wait_s``)."""
    measured = store.read_table(folder, io.RUNS)
    metrics = (*COMPARED_METRICS, *extra_metrics)
    paired = paired_metrics(exp, metrics)
    # paired metrics need the exact engine: its run 0 draws the real run's compute factors; the fast
    # path's draws only share their distribution
    predicted = engine.simulate(exp, engine="exact" if paired else "auto").runs
    real = measured[measured["source"] == "real"]
    store.write_table(folder, io.RUNS, pd.concat([real, predicted], ignore_index=True))
    comparison = compare(predicted, real, case=case or exp.workload.name, workload=exp.workload.name,
                         network=network, ranks=exp.workers, metrics=metrics, paired=paired)
    store.write_table(folder, "comparison.csv", comparison)
    return comparison


def paired_metrics(exp: Experiment, metrics: tuple[str, ...]) -> tuple[str, ...]:
    """The metrics compared with the simulated run of the real run's seed rather than the mean over seeds.

    The simulator's run 0 draws what the real run drew wherever the run's randomness is the simulator's:
    the plan always (``core.algorithms.plan_for``: PALSGD's pseudo-sync steps from ``exp.seed``), the compute
    factors where the accelerators are emulated (``core/variability.py``). With emulated accelerators that
    is all of the run's randomness, so every metric is compared like for like: in a 24-step run PALSGD drew
    2 pseudo-sync steps where five seeds average 4.4, 10 % of its step time that no model could predict.
    With real compute the host's own noise is not drawn, and only the waits (``compare.PAIRED``) are."""
    if exp.train.compute == "emulated":
        return metrics
    return tuple(m for m in metrics if m in PAIRED)


def measure_and_predict(exp: Experiment, folder: Path, launch: Launch, calibration: Path | None = None, *,
                        case: str = "", extra_metrics: tuple[str, ...] = ()
                        ) -> tuple[launcher.RealResult, pd.DataFrame | None]:
    """``measure`` then, on the lead launcher, ``predict``: the run's result and the comparison rows
    (None on the other nodes). ``calibration``: a cluster profile (``palsgd calibrate``) that ``exp`` is
    moved onto first (``config.calibrated``), for the run and its prediction alike; the folder's manifest
    records the experiment that ran. Raises ``launch.RunFailed`` when the run failed."""
    if calibration is not None:
        exp = config.calibrated(exp, calibration)
    result = measure(exp, folder, launch)
    if not launch.lead:
        return result, None
    return result, predict(exp, Path(folder), network=launch.network_name, case=case, extra_metrics=extra_metrics)


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


def on_emulated_nodes(exp: Experiment, spec: netem.NetemSpec, ranks: int) -> Experiment:
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


def check_fault(fault: FaultSpec, *, world: int, steps: int) -> None:
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
