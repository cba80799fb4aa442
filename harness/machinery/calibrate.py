"""`palsgd calibrate`: measure this machine's collectives and compute, fit the simulator's parameters to
them, and write a cluster profile that ``palsgd simulate --cluster PROFILE.toml`` reads.

Steps (files are written next to the profile, atomically):

1. ``collectives.csv``: ``real/bench_collectives.py`` on N ranks, one process per rank (env RANK,
   WORLD_SIZE, MASTER_ADDR, MASTER_PORT), each in its own emulated host when ``network`` is given
   (``harness/machinery/netem.py``), else on loopback; plus ``tcp_rtt.json``, one TCP round trip between ranks 0, 1.
   On emulated nodes (``nodes=K``) two tiers instead: the ranks of node 0 over its loopback
   (``collectives_intra.csv``, ``tcp_rtt_intra.json``) and every rank, node by node (``..._inter``): the
   flat ring the run's all-reduces take, each of whose steps waits for an inter-node hop.
2. ``fit.csv``: the fit of the simulator's own cost function to those times (``harness/machinery/fit_transport.py``;
   the tiers together, one link each, one transport) with the residual per size and tier.
3. ``compute.json``: ``real/bench_compute.py`` on N concurrent processes (the cores are shared, as they
   are in a run), each running ``real.profile_compute.measure_compute``.
4. the profile: a ``[cluster]`` table with nodes = 1, gpus_per_node = N (on emulated nodes: K and N/K,
   ``intra_node`` and ``inter_node`` from their tiers) and the fitted values.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tomli_w

from ...core import io
from ...core.config import Experiment, load
from ...core.errors import ConfigError
from . import netem
from .fit_transport import Series, TiersFit, fit_tiers
from .netem import EmulatedNetwork, NetemSpec
from .progress import Progress

COMPUTE_FIELDS = ("step_time_s", "optimizer_time_s", "pseudo_sync_time_s", "outer_step_time_s", "data_time_s")


def calibrate(exp: Experiment, out: Path, *, nproc_per_node: int, network: NetemSpec | None = None,
              compute: bool = True, min_bytes: int = 4096, max_bytes: int = 64 * 2**20, reps: int = 7,
              per_octave: float = 0.5, compute_steps: int = 80, timeout_s: float = 1800.0,
              command: str = "", measured_compute: dict | None = None, time_dilation: float = 1.0) -> Path:
    """Measure, fit, and write the profile ``out`` (plus collectives.csv, tcp_rtt.json, fit.csv and
    compute.json beside it). Prints the fit's residual per size. Returns ``out``.

    ``measured_compute``: the mean of an earlier ``run_compute`` on the same workload and rank count,
    used instead of measuring again (compute does not depend on the network; ``palsgd validate``
    measures it once per workload and rank count and calibrates each network with it). DDP's bucket
    efficiency is fitted afterwards by ``calibrate_ddp.py`` (``palsgd calibrate`` does both)."""
    if nproc_per_node < 2:
        raise ConfigError("must be >= 2: an all-reduce needs two ranks", key="--nproc-per-node",
                          value=nproc_per_node)
    out = Path(out)
    folder = out.parent
    folder.mkdir(parents=True, exist_ok=True)
    if network is not None and network.groups > 1:
        raise ConfigError("calibrate fits the intra- and inter-node links, not a WAN: drop groups=",
                          key="--emulate-network", value=str(network))
    bench = ["--min-bytes", str(min_bytes), "--max-bytes", str(max_bytes), "--reps", str(reps),
             "--per-octave", str(per_octave)]
    progress = Progress(1 + (measured_compute is None and compute), "calibrate", unit="benchmarks")
    tiers = run_collectives(nproc_per_node, network, folder, bench, timeout_s * time_dilation, time_dilation)
    progress.update(1)
    backend = str(tiers[0].table["backend"].iloc[0])
    result = fit_tiers([t.series for t in tiers], kind="nccl" if backend == "nccl" else "gloo", base=exp.cluster)
    residuals = fit_table(tiers, result)
    io.write_csv(folder / "fit.csv", residuals)
    print(format_fit(residuals, tiers, result))
    measured = measured_compute
    if measured is None and compute:
        measured = run_compute(exp, nproc_per_node, folder / "compute.json", compute_steps, timeout_s)
        progress.update(1)
    progress.close()
    nodes = network.nodes if network is not None and network.nodes else 1
    text = profile_toml(tiers, result, measured, nodes=nodes, gpus_per_node=nproc_per_node // nodes,
                        network=network, command=command or " ".join(sys.argv), time_dilation=time_dilation)
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


@dataclass(frozen=True)
class Tier:
    """One measured tier: ``link`` (the only one), ``intra`` (ranks of one node) or ``inter`` (every rank of
    every node); its all-reduce table and the TCP round trip between its rank 0 and a rank over its link."""

    name: str
    table: pd.DataFrame
    rtt_s: float

    @property
    def ranks(self) -> int:
        return int(self.table["ranks"].iloc[0])

    @property
    def series(self) -> Series:
        return Series(tuple(self.table["size_bytes"]), tuple(self.table["time_s"]), self.ranks, self.rtt_s)


def run_collectives(n: int, network: NetemSpec | None, folder: Path, bench: list[str],
                    timeout_s: float, time_dilation: float = 1.0) -> list[Tier]:
    """Benchmark each tier: loopback, or one rank per emulated host (one link); on emulated nodes the ranks
    of node 0 (``intra``, if more than one) and all ``n`` ranks, node by node (``inter``, if more than one
    node). The inter tier is the run's own ring rather than one rank per node: a 2-rank gloo all-reduce,
    whose one connection carries both directions, got only ~60 % of a 1 Gbit/s + 5 ms link where the
    run's 8-rank ring got close to its line rate (docs/validation.md), so a one-rank-per-node tier made
    every 2-node DDP prediction 15-28 % slow. Its round trip is measured from rank 0 to node 1's first rank.
    Under ``time_dilation`` K the links are K times slower and every time measured is divided by K."""
    if time_dilation != 1 and network is not None:  # loopback cannot be slowed down (dilation.check)
        tiers = run_collectives(n, network.dilated(time_dilation), folder, bench, timeout_s)
        return [Tier(t.name, undilate_times(t.table, time_dilation), t.rtt_s / time_dilation) for t in tiers]
    if network is None:
        return [_bench("link", folder, bench, [lambda argv: argv] * n, "127.0.0.1", "lo", _free_port(), timeout_s)]
    with EmulatedNetwork(n, network) as net:
        if not network.nodes:
            in_host = [lambda argv, r=r: net.command(r, argv) for r in range(n)]
            return [_bench("link", folder, bench, in_host, net.addresses[0], net.ifname, 29500, timeout_s)]
        tiers = []
        rpn = net.ranks_per_node
        if rpn > 1:  # node 0's ranks reach its address over loopback
            in_node = [lambda argv: net.command(0, argv)] * rpn
            tiers.append(_bench("intra", folder, bench, in_node, net.addresses[0], net.ifname, 29500, timeout_s))
        if net.nodes > 1:
            every_rank = [lambda argv, r=r: net.command(r // rpn, argv) for r in range(n)]
            tiers.append(_bench("inter", folder, bench, every_rank, net.addresses[0], net.ifname, 29510, timeout_s,
                                rtt_peer=rpn))
        return tiers


def _bench(tier: str, folder: Path, bench: list[str], places: list, addr: str, ifname: str, port: int,
           timeout_s: float, rtt_peer: int = 1) -> Tier:
    """``bench_collectives`` on one rank per entry of ``places`` (each wraps the rank's argv), the round trip
    between ranks 0 and ``rtt_peer``; its files carry the tier's name unless it is the only ``link``."""
    suffix = "" if tier == "link" else f"_{tier}"
    csv, rtt_json = folder / f"collectives{suffix}.csv", folder / f"tcp_rtt{suffix}.json"
    argv = [sys.executable, "-m", "palsgd.real.bench_collectives", "--out", str(csv), "--rtt-out", str(rtt_json),
            "--rtt-peer", str(rtt_peer), *bench]
    n = len(places)
    envs = [_rank_env(r, n, addr, port, ifname) for r in range(n)]
    run_ranks([place(argv) for place in places], envs, timeout_s, f"collective benchmark ({tier})")
    return Tier(tier, pd.read_csv(csv), io.read_json(rtt_json)["tcp_rtt_s"])


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


def undilate_times(table: pd.DataFrame, time_dilation: float) -> pd.DataFrame:
    """A collective benchmark's table measured on links ``time_dilation`` times slower, on the undilated
    clock (``dilation.py``); the raw table stays in collectives*.csv."""
    cols = [c for c in ("time_s", "p10_s", "p90_s") if c in table.columns]
    return table.assign(**{c: table[c] / time_dilation for c in cols})


# ---------------------------------------------------------------------------------------------
# Outputs


def fit_table(tiers: list[Tier], result: TiersFit) -> pd.DataFrame:
    parts = []
    for tier, predicted in zip(tiers, result.predicted_s, strict=True):
        table, pred = tier.table, pd.Series(predicted, index=tier.table.index)
        parts.append(pd.DataFrame({"tier": tier.name, "size_bytes": table["size_bytes"], "ranks": table["ranks"],
                                   "measured_s": table["time_s"], "predicted_s": pred,
                                   "rel_error": pred / table["time_s"] - 1}))
    return pd.concat(parts, ignore_index=True)


def format_fit(residuals: pd.DataFrame, tiers: list[Tier], result: TiersFit) -> str:
    t = result.transport
    lines = [f"{'tier':>6} {'size_bytes':>12} {'measured_ms':>12} {'predicted_ms':>12} {'error':>8}"]
    for row in residuals.itertuples():
        lines.append(f"{row.tier:>6} {row.size_bytes:>12} {row.measured_s * 1e3:>12.3f} "
                     f"{row.predicted_s * 1e3:>12.3f} {row.rel_error:>+8.1%}")
    for tier, link in zip(tiers, result.links, strict=True):
        log_error = np.log1p(residuals.loc[residuals["tier"] == tier.name, "rel_error"])
        lines.append(f"fit {tier.name} ({tier.ranks} ranks): bandwidth {link.bandwidth_gbps * 1e3:.1f} Mbit/s, "
                     f"latency {link.latency_us:.0f} us one way, rms log error {np.sqrt(np.mean(log_error ** 2)):.3f}")
    lines.append(f"fit transport: step overhead {t.step_overhead_us:.0f} us, segment {t.segment_bytes} B, "
                 f"window {t.window_bytes} B, rms log error {result.rms_log_error:.3f}")
    return "\n".join(lines)


def profile_toml(tiers: list[Tier], result: TiersFit, compute: dict | None, *, nodes: int, gpus_per_node: int,
                 network: NetemSpec | None, command: str, time_dilation: float = 1.0) -> str:
    links = {t.name: dataclasses.asdict(link) for t, link in zip(tiers, result.links, strict=True)}
    # A tier that was not measured repeats the other: with one node (or one rank per node) the
    # simulator never prices it. The inter tier's ring of every rank is priced, as the simulator prices
    # a flat ring, at its slowest hop, the inter-node link (loopback is many times faster).
    intra = links.get("intra") or links.get("link") or links["inter"]
    inter = links.get("inter") or intra
    host = platform.node() or "unknown host"
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    net = f"emulated network {network}" if network else "loopback"
    if time_dilation != 1:
        net += f", measured {time_dilation:g}x time-dilated (links rate/{time_dilation:g}, times divided by it)"
    measured = ", ".join(f"{t.name} on {t.ranks} ranks" for t in tiers)
    source = (f"Measured by `{command}` on {host} ({platform.machine()}, {os.cpu_count()} CPUs) at {when}: "
              f"all-reduce over {net} ({measured}), fitted to the simulator's ring model "
              f"(rms log error {result.rms_log_error:.3f}); bandwidth is effective (efficiency 1)."
              + ("" if len(tiers) > 1 else " intra_node and inter_node repeat the one measured link."))
    cluster: dict = {
        "name": f"calibrated-{host}", "description": f"{nodes} x {gpus_per_node} ranks on {host}, {net}",
        "source": source, "nodes": nodes, "gpus_per_node": gpus_per_node, "allreduce": "ring",
        "intra_node": intra, "inter_node": inter,
        "transport": dataclasses.asdict(result.transport),
    }
    by = f"measured: palsgd calibrate on {host} at {when} ({net})"
    fitted = [f"{link}.{f}" for link in ("intra_node", "inter_node") for f in ("bandwidth_gbps", "latency_us")]
    fitted += [f"transport.{f}" for f in cluster["transport"]]
    cluster["provenance"] = {k: by for k in ["nodes", "gpus_per_node", *fitted]}
    if network is not None:  # TCP's state is what the emulation set, not fitted
        tcp = netem.tcp_transport(network)
        congestion = tcp.pop("congestion_control")
        cluster["transport"].update(tcp)
        cluster["provenance"].update({f"transport.{k}": f"given: --emulate-network {network} (congestion control "
                                      f"{congestion}, MTU {netem.MTU}, tbf queue)" for k in tcp})
    if compute:
        cluster["compute"] = {k: float(compute[k]) for k in COMPUTE_FIELDS if k in compute}
        cluster["provenance"].update({f"compute.{k}": by for k in cluster["compute"]})
        if "step_time_cv" in compute:
            cluster["variability"] = {"jitter_cv": float(compute["step_time_cv"])}
            cluster["provenance"]["variability.jitter_cv"] = by
    return tomli_w.dumps({"cluster": cluster})
