"""Time ``all_reduce`` over message sizes on the process group the environment describes (gloo on CPU,
nccl on GPU), and one TCP round trip between rank 0 and ``--rtt-peer`` (rank 1 unless told): the
measurements ``harness/machinery/calibrate.py`` fits.

Run one process per rank with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set (torchrun sets them):

    python -m palsgd.real.bench_collectives --out collectives.csv [--min-bytes 4096 --max-bytes 67108864]

Each size: ``--warmup`` untimed calls, then ``--reps`` calls, each after a barrier; a call's time is the
slowest rank's (all ranks' times are max-reduced at the end), and the CSV row holds the median, p10 and p90
(``size_bytes, ranks, time_s, p10_s, p90_s``; nccl-tests' algbw = size/time, busbw = algbw·2(n-1)/n).
The benchmark times the primitive itself, so it calls ``torch.distributed`` directly; set-up and tear-down
go through ``real/dist.py``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

import numpy as np
import pandas as pd
import torch
import torch.distributed as tdist

from ..core import io
from . import dist


def sizes_between(min_bytes: int, max_bytes: int, per_octave: float = 0.5) -> list[int]:
    """Log-spaced sizes, multiples of 4 bytes (fp32): ``per_octave`` points per doubling."""
    n = max(2, int(np.rint(np.log2(max_bytes / min_bytes) * per_octave)) + 1)
    return sorted({int(s) // 4 * 4 for s in np.geomspace(min_bytes, max_bytes, n)})


def time_allreduce(nbytes: int, reps: int, warmup: int, device: torch.device) -> list[float]:
    x = torch.ones(max(1, nbytes // 4), dtype=torch.float32, device=device)
    out = []
    for i in range(warmup + reps):
        tdist.barrier()
        t0 = time.perf_counter()
        tdist.all_reduce(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            out.append(time.perf_counter() - t0)
    return out


def tcp_rtt(rank: int, pings: int) -> float:
    """Median 1-byte TCP ping-pong between rank 0 and the rank that calls it with ``rank != 0`` (over the same
    link as the collectives), seconds. Rank 0 listens on MASTER_ADDR:MASTER_PORT+1; ``ping`` would under-report
    an ingress-only delay."""
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]) + 1
    times = []
    if rank == 0:
        with socket.create_server((addr, port)) as srv:
            tdist.barrier()
            conn, _ = srv.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while conn.recv(1):
                    conn.sendall(b"x")
        return 0.0
    tdist.barrier()
    with socket.create_connection((addr, port), timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(pings + 3):
            t0 = time.perf_counter()
            s.sendall(b"x")
            s.recv(1)
            times.append(time.perf_counter() - t0)
    return statistics.median(times[3:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m palsgd.real.bench_collectives", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="CSV of timings (written by rank 0)")
    ap.add_argument("--rtt-out", default="", help="JSON with the TCP round trip (written by the peer)")
    ap.add_argument("--rtt-peer", type=int, default=1,
                    help="the rank whose round trip to rank 0 is measured (on emulated nodes: one on another node)")
    ap.add_argument("--min-bytes", type=int, default=4096)
    ap.add_argument("--max-bytes", type=int, default=64 * 2**20)
    ap.add_argument("--per-octave", type=float, default=0.5)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--pings", type=int, default=30)
    args = ap.parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not 0 < args.rtt_peer < world:
        ap.error(f"--rtt-peer must be a rank from 1 to {world - 1}, got {args.rtt_peer}")
    ctx = dist.init(threads=1)
    try:
        if ctx.world_size > 1 and ctx.rank in (0, args.rtt_peer) and args.rtt_out:
            rtt = tcp_rtt(ctx.rank, args.pings)
            if ctx.rank == args.rtt_peer:
                io.write_json(args.rtt_out, {"tcp_rtt_s": rtt, "pings": args.pings})
        elif ctx.world_size > 2 and args.rtt_out:
            tdist.barrier()  # the barrier the two pinging ranks enter in tcp_rtt: collectives match on every rank
        rows = []
        for size in sizes_between(args.min_bytes, args.max_bytes, args.per_octave):
            times = torch.tensor(time_allreduce(size, args.reps, args.warmup, ctx.device), dtype=torch.float64)
            tdist.all_reduce(times, op=tdist.ReduceOp.MAX)  # a collective ends when its slowest rank does
            t = times.numpy()
            rows.append({"size_bytes": size, "ranks": ctx.world_size, "time_s": float(np.median(t)),
                         "p10_s": float(np.quantile(t, 0.1)), "p90_s": float(np.quantile(t, 0.9)),
                         "backend": ctx.backend})
        if ctx.rank == 0:
            io.write_csv(args.out, pd.DataFrame(rows))
        tdist.barrier()
    finally:
        dist.teardown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
