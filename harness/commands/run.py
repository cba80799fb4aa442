"""`palsgd run` and `palsgd calibrate`: real runs, with the simulator's prediction for the same experiment.

The launcher (``machinery/launch.py``) measures; ``palsgd run`` adds what a user asks next: what did the
simulator predict for exactly this experiment, and how far off was it (``machinery/pipeline.py``)? The
prediction uses the experiment's own cluster description, so it is only meaningful when that describes the
machines at hand (a profile written by ``palsgd calibrate``); the printout says which cluster it used.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ...core import io
from ...core.config import Experiment
from ...core.errors import ConfigError
from ...core.faults import FaultSpec
from ..machinery import calibrate, calibrate_ddp, dilation, netem, pipeline, store
from ..machinery.compare import format_comparison
from ..machinery.launch import RunFailed, check_layout, job_id
from ..machinery.pipeline import Launch


def launch_of(*, nproc_per_node: int, nnodes: int, node_rank: int, rdzv_endpoint: str | None,
              emulate_network: str | None, inject_fault: str | None, timeout_s: float, resume: bool,
              time_dilation: float = 1.0) -> Launch:
    """``palsgd run``'s options as a Launch; a malformed --emulate-network or --inject-fault raises."""
    spec = netem.NetemSpec.parse(emulate_network) if emulate_network is not None else None
    fault = FaultSpec.parse(inject_fault) if inject_fault is not None else None
    return Launch(nproc_per_node, nnodes, node_rank, rdzv_endpoint, str(spec) if spec else None, fault, resume,
                  timeout_s, time_dilation)


def run_to_folder(exp: Experiment, out: Path, launch: Launch, *, overwrite: bool,
                  echo: Callable[[str], None] = print) -> int:
    """Run, merge, predict, compare; the exit status (0 complete, 1 failed)."""
    if launch.fault is not None:  # before anything is written
        pipeline.check_fault(launch.fault, world=launch.ranks, steps=exp.nominal_steps)
    spec = launch.netem_spec
    if spec is not None:
        if launch.nodes != 1:
            raise ConfigError("emulates a network between the ranks of one machine; use --nnodes 1",
                              key="--emulate-network", value=launch.network, source="command line")
        netem.preflight(spec.dilated(launch.time_dilation))
        exp = pipeline.on_emulated_nodes(exp, spec, launch.ranks_per_node)
    dilation.check(launch.time_dilation, emulated_compute=exp.train.compute == "emulated",
                   emulated_network=spec is not None)
    pipeline.check_nodes(launch.nodes, launch.node_rank, launch.rdzv_endpoint)
    check_layout(exp, launch.ranks_per_node, launch.nodes, launch.node_rank, spec)  # as run_real, before --out
    pipeline.check_before_launch(exp, launch.ranks_per_node)
    if launch.lead:  # after every check of the command line: a refused run leaves --out as it was
        store.prepare(out, overwrite=overwrite, resume=launch.resume, kind="run", exp=exp,
                      job=job_id(launch.rdzv_endpoint))
    try:
        result, comparison = pipeline.measure_and_predict(exp, out, launch)
    except RunFailed as err:
        echo(f"palsgd: run {err.status}: {err}")
        return 1
    if comparison is None:
        return 0
    if result.slow_ranks:
        echo(f"slow ranks: {result.slow_ranks}")
    echo(f"measured vs predicted on cluster {exp.cluster.name!r} (calibrate with `palsgd calibrate` "
         "for a prediction of this machine):")
    echo(format_comparison(comparison))
    echo(f"{dilation.label(launch.time_dilation)}; wrote {out}/")
    return 0


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


CALIBRATE_TIMEOUT_S = 1800.0  # calibrate.calibrate's own default for its benchmarks


def calibrate_to_file(exp: Experiment, out: Path, *, nproc_per_node: int, emulate_network: str | None,
                      echo: Callable[[str], None] = print, time_dilation: float = 1.0) -> Path:
    """Calibrate here into ``out``. Under ``time_dilation`` K the links and compute are K times slower and
    the fitted times divided by K (``dilation.py``); DDP's bucket benchmark runs undilated (its backward
    is real CPU work)."""
    spec = netem.NetemSpec.parse(emulate_network) if emulate_network is not None else None
    time_dilation = dilation.check(time_dilation, emulated_compute=exp.train.compute == "emulated",
                                   emulated_network=spec is not None)
    if spec is not None:
        netem.preflight(spec.dilated(time_dilation))
    pipeline.check_before_launch(exp, nproc_per_node)  # first: it writes nothing, check_writable makes --out's folder
    check_writable(Path(out))
    path = calibrate.calibrate(exp, out, nproc_per_node=nproc_per_node, network=spec, command=" ".join(sys.argv),
                               time_dilation=time_dilation)
    # then DDP's bucketed all-reduces beside a backward, fitted to the profile's ddp_bucket_efficiency
    echo(calibrate_ddp.add_efficiency(path, calibrate_ddp.run_ddp_buckets(nproc_per_node, spec, path.parent,
                                                                          CALIBRATE_TIMEOUT_S)))
    echo(f"{dilation.label(time_dilation)}; wrote {path} (use it with `palsgd simulate --cluster {path}`)")
    return path
