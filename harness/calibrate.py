"""`palsgd calibrate`: measure this machine's collectives and compute, fit the simulator's parameters to
them, and write a cluster profile that ``palsgd simulate --cluster PROFILE.toml`` reads.

Steps (files are written next to the profile, atomically):

1. ``collectives.csv``: ``real/bench_collectives.py`` on N ranks, one process per rank (env RANK,
   WORLD_SIZE, MASTER_ADDR, MASTER_PORT), each in its own emulated host when ``network`` is given
   (``harness/netem.py``), else on loopback; plus ``tcp_rtt.json``, one TCP round trip between ranks 0, 1.
2. ``fit.csv``: the fit of the simulator's own cost function to those times (``harness/fit_transport.py``)
   with the residual per size.
3. ``compute.json``: ``real/bench_compute.py`` on N concurrent processes (the cores are shared, as they
   are in a run), each running ``real.profile_compute.measure_compute``.
4. the profile: a ``[cluster]`` table with nodes = 1, gpus_per_node = N and the fitted values.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import tomli_w

from ..core import io
from ..core.config import Experiment, load
from ..core.errors import ConfigError
from .fit_transport import TransportFit, fit
from .netem import EmulatedNetwork, NetemSpec

COMPUTE_FIELDS = ("step_time_s", "optimizer_time_s", "pseudo_sync_time_s", "outer_step_time_s", "data_time_s")


def calibrate(exp: Experiment, out: Path, *, nproc_per_node: int, network: NetemSpec | None = None,
              compute: bool = True, min_bytes: int = 4096, max_bytes: int = 64 * 2**20, reps: int = 7,
              per_octave: float = 0.5, compute_steps: int = 80, timeout_s: float = 1800.0,
              command: str = "", measured_compute: dict | None = None) -> Path:
    """Measure, fit, and write the profile ``out`` (plus collectives.csv, tcp_rtt.json, fit.csv and
    compute.json beside it). Prints the fit's residual per size. Returns ``out``.

    ``measured_compute``: the mean of an earlier ``run_compute`` on the same workload and rank count,
    used instead of measuring again (compute does not depend on the network; ``palsgd validate``
    measures it once per workload and rank count and calibrates each network with it)."""
    if nproc_per_node < 2:
        raise ConfigError("must be >= 2: an all-reduce needs two ranks", key="--nproc-per-node",
                          value=nproc_per_node)
    out = Path(out)
    folder = out.parent
    folder.mkdir(parents=True, exist_ok=True)
    bench = ["--min-bytes", str(min_bytes), "--max-bytes", str(max_bytes), "--reps", str(reps),
             "--per-octave", str(per_octave)]
    csv, rtt_json = folder / "collectives.csv", folder / "tcp_rtt.json"
    run_collectives(nproc_per_node, network, csv, rtt_json, bench, timeout_s)
    table = pd.read_csv(csv)
    rtt = io.read_json(rtt_json)["tcp_rtt_s"]
    backend = str(table["backend"].iloc[0])
    result = fit(table["size_bytes"], table["time_s"], nproc_per_node, rtt_s=rtt,
                 kind="nccl" if backend == "nccl" else "gloo", base=exp.cluster)
    residuals = fit_table(table, result)
    io.write_csv(folder / "fit.csv", residuals)
    print(format_fit(residuals, result))
    measured = measured_compute
    if measured is None and compute:
        measured = run_compute(exp, nproc_per_node, folder / "compute.json", compute_steps, timeout_s)
    text = profile_toml(result, measured, network=network, command=command or " ".join(sys.argv))
    io.write_text(out, text)
    load(cluster=str(out))  # the profile must load as a cluster preset; raises ConfigError if not
    return out


# ---------------------------------------------------------------------------------------------
# Launching


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_env(rank: int, world: int, addr: str, port: int, ifname: str) -> dict[str, str]:
    env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
               LOCAL_WORLD_SIZE=str(world), MASTER_ADDR=addr, MASTER_PORT=str(port),
               GLOO_SOCKET_IFNAME=ifname, OMP_NUM_THREADS="1")
    env.pop("TORCHELASTIC_RUN_ID", None)
    return env


def run_ranks(argvs: list[list[str]], envs: list[dict], timeout_s: float, what: str) -> None:
    """Start one process per rank, wait for all; the first failure kills the rest and raises."""
    procs = [subprocess.Popen(a, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for a, e in zip(argvs, envs, strict=True)]
    try:
        for rank, proc in enumerate(procs):
            output, _ = proc.communicate(timeout=timeout_s)
            if proc.returncode != 0:
                tail = "\n".join(output.strip().splitlines()[-15:])
                raise RuntimeError(f"{what}: rank {rank} exited with status {proc.returncode}:\n{tail}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def run_collectives(n: int, network: NetemSpec | None, csv: Path, rtt_json: Path, bench: list[str],
                    timeout_s: float) -> None:
    argv = [sys.executable, "-m", "palsgd.real.bench_collectives", "--out", str(csv),
            "--rtt-out", str(rtt_json), *bench]
    if network is None:
        port = _free_port()
        envs = [_rank_env(r, n, "127.0.0.1", port, "lo") for r in range(n)]
        run_ranks([argv] * n, envs, timeout_s, "collective benchmark")
        return
    with EmulatedNetwork(n, network) as net:
        port = 29500
        envs = [_rank_env(r, n, net.addresses[0], port, net.ifname) for r in range(n)]
        run_ranks([net.command(r, argv) for r in range(n)], envs, timeout_s, "collective benchmark")


def run_compute(exp: Experiment, n: int, out: Path, steps: int, timeout_s: float) -> dict:
    """``measure_compute`` on n concurrent ranks; per-rank results and their mean go to ``out``."""
    with tempfile.TemporaryDirectory(prefix="palsgd-calibrate-") as tmp:
        exp_json = Path(tmp) / "experiment.json"
        exp_json.write_text(json.dumps(exp.to_dict()))
        outs = [Path(tmp) / f"compute_rank{r}.json" for r in range(n)]
        argvs = [[sys.executable, "-m", "palsgd.real.bench_compute", "--experiment", str(exp_json),
                  "--out", str(o), "--steps", str(steps)] for o in outs]
        envs = [_rank_env(r, n, "127.0.0.1", 0, "lo") for r in range(n)]
        run_ranks(argvs, envs, timeout_s, "compute benchmark")
        ranks = [io.read_json(o) for o in outs]
    mean = {k: sum(r[k] for r in ranks) / n for k in ranks[0] if isinstance(ranks[0][k], int | float)}
    result = {"ranks": ranks, "mean": mean}
    io.write_json(out, result)
    return mean


# ---------------------------------------------------------------------------------------------
# Outputs


def fit_table(table: pd.DataFrame, result: TransportFit) -> pd.DataFrame:
    pred = pd.Series(result.predicted_s, index=table.index)
    return pd.DataFrame({"size_bytes": table["size_bytes"], "ranks": table["ranks"],
                         "measured_s": table["time_s"], "predicted_s": pred,
                         "rel_error": pred / table["time_s"] - 1})


def format_fit(residuals: pd.DataFrame, result: TransportFit) -> str:
    t, link = result.cluster.transport, result.cluster.intra_node
    lines = [f"{'size_bytes':>12} {'measured_ms':>12} {'predicted_ms':>12} {'error':>8}"]
    for row in residuals.itertuples():
        lines.append(f"{row.size_bytes:>12} {row.measured_s * 1e3:>12.3f} {row.predicted_s * 1e3:>12.3f} "
                     f"{row.rel_error:>+8.1%}")
    lines.append(f"fit: bandwidth {link.bandwidth_gbps * 1e3:.1f} Mbit/s, latency {link.latency_us:.0f} us "
                 f"one way, step overhead {t.step_overhead_us:.0f} us (alpha {result.alpha_s * 1e3:.3f} ms), "
                 f"segment {t.segment_bytes} B, window {t.window_bytes} B, "
                 f"rms log error {result.rms_log_error:.3f}")
    return "\n".join(lines)


def profile_toml(result: TransportFit, compute: dict | None, *, network: NetemSpec | None, command: str) -> str:
    c = result.cluster
    link = dataclasses.asdict(c.intra_node)
    host = platform.node() or "unknown host"
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    net = f"emulated network {network}" if network else "loopback"
    source = (f"Measured by `{command}` on {host} ({platform.machine()}, {os.cpu_count()} CPUs) at {when}: "
              f"all-reduce over {net} on {c.gpus_per_node} ranks, fitted to the simulator's ring model "
              f"(rms log error {result.rms_log_error:.3f}); bandwidth is effective (efficiency 1). "
              "inter_node repeats the measured link: no inter-node hop was measured.")
    cluster: dict = {
        "name": f"calibrated-{host}", "description": f"{c.gpus_per_node} ranks on {host}, {net}",
        "source": source, "nodes": 1, "gpus_per_node": c.gpus_per_node, "allreduce": "ring",
        "intra_node": link, "inter_node": link,
        "transport": {k: v for k, v in dataclasses.asdict(c.transport).items()},
    }
    if compute:
        cluster["compute"] = {k: float(compute[k]) for k in COMPUTE_FIELDS if k in compute}
        if "step_time_cv" in compute:
            cluster["variability"] = {"jitter_cv": float(compute["step_time_cv"])}
    return tomli_w.dumps({"cluster": cluster})

