"""An all-reduce after an idle link against one back to back, with the TCP state behind it (issue 23, item 3).

Two gloo ranks, each an emulated host (``--emulate-network`` spec, default 1 Gbit/s and 5 ms each way).
Rank 0 times ``--reps`` all-reduces of ``--size-mb`` back to back, then ``--reps`` each after ``--idle-s``
of silence, while a thread samples ``ss -tin`` on its gloo connection (every other TCP connection is the
rendezvous store's): the congestion window, smoothed RTT and retransmits seen during each call. Each rank
first sets ``net.ipv4.tcp_slow_start_after_idle`` in its own namespace to ``--slow-start-after-idle``, and
``tcp_congestion_control`` to ``--congestion`` if given (the namespaces are the run's own: the machine's
settings are untouched), and reports what they were.

    sudo .venv/bin/python benchmarks/bench_tcp_idle.py [--slow-start-after-idle 0|1]

Linux's RFC 2861 / RFC 5681 behaviour: after an idle period longer than the retransmission timeout, a
sender whose ``tcp_slow_start_after_idle`` is 1 restarts from the initial window and ramps up again.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SYSCTL = "net.ipv4.tcp_slow_start_after_idle"
CONGESTION = "net.ipv4.tcp_congestion_control"
STORE_PORT = 29500
_FIELDS = {"cwnd": re.compile(r"\bcwnd:(\d+)"), "rtt_ms": re.compile(r"\brtt:([\d.]+)/"),
           "retrans": re.compile(r"\bretrans:\d+/(\d+)"), "bytes_sent": re.compile(r"\bbytes_sent:(\d+)")}


def ss_sample() -> dict | None:
    """cwnd (segments), smoothed RTT (ms), total retransmits and bytes sent of the gloo connection (the
    established one with the most bytes sent that is not the store's)."""
    text = subprocess.run(["ss", "-tinH", "state", "established"], capture_output=True, text=True).stdout
    lines = text.splitlines()
    best = None
    for head, info in zip(lines[::2], lines[1::2], strict=False):
        if f":{STORE_PORT} " in head + " ":
            continue
        got = {k: float(m.group(1)) for k, r in _FIELDS.items() if (m := r.search(info))}
        if "cwnd" in got and (best is None or got.get("bytes_sent", 0) > best.get("bytes_sent", 0)):
            best = got
    return best


def _congestion() -> str:
    """The congestion control of the gloo connection, as ``ss -ti`` names it (cubic, bbr, ...)."""
    text = subprocess.run(["ss", "-tinH", "state", "established"], capture_output=True, text=True).stdout
    names = re.findall(r"^\s+(\w+) ", text, re.MULTILINE)
    return ",".join(sorted(set(names)))


class Sampler:
    """``ss_sample`` in a loop while a call runs: the smallest and largest cwnd seen, retransmits added."""

    def __init__(self):
        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            s = ss_sample()
            if s is not None:
                self.samples.append(s)

    def __enter__(self):
        self.samples.append(ss_sample() or {})
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.samples.append(ss_sample() or {})

    def summary(self) -> dict:
        cw = [s["cwnd"] for s in self.samples if "cwnd" in s]
        rt = [s["rtt_ms"] for s in self.samples if "rtt_ms" in s]
        re_ = [s.get("retrans", 0.0) for s in self.samples if s]
        return {"cwnd_min": min(cw, default=None), "cwnd_max": max(cw, default=None),
                "cwnd_before": self.samples[0].get("cwnd"), "rtt_ms_max": max(rt, default=None),
                "retrans_added": (re_[-1] - re_[0]) if len(re_) > 1 else None, "ss_samples": len(self.samples)}


def rank_main(args) -> int:
    import torch
    import torch.distributed as dist

    before = {k: subprocess.run(["sysctl", "-n", k], capture_output=True, text=True).stdout.strip()
              for k in (SYSCTL, CONGESTION)}
    subprocess.run(["sysctl", "-qw", f"{SYSCTL}={args.slow_start_after_idle}"], check=True)
    if args.congestion:
        subprocess.run(["sysctl", "-qw", f"{CONGESTION}={args.congestion}"], check=True)
    dist.init_process_group("gloo")
    x = torch.ones(int(args.size_mb * 2**20 / 4))
    for _ in range(3):  # the connection's first window ramp belongs to neither phase
        dist.all_reduce(x)
    rows = []
    for phase, idle_s in (("back_to_back", 0.0), ("after_idle", args.idle_s)):
        for _ in range(args.reps):
            dist.barrier()
            time.sleep(idle_s)
            sampler = Sampler() if dist.get_rank() == 0 else None
            t0 = time.perf_counter()
            if sampler is not None:
                with sampler:
                    dist.all_reduce(x)
            else:
                dist.all_reduce(x)
            rows.append({"phase": phase, "time_s": time.perf_counter() - t0,
                         **(sampler.summary() if sampler is not None else {})})
    if dist.get_rank() == 0:
        Path(args.out).write_text(json.dumps({"sysctl_before": before, "sysctl_set": args.slow_start_after_idle,
                                              "congestion": _congestion(), "rows": rows}))
    dist.destroy_process_group()
    return 0


def launch(args) -> dict:
    from palsgd.harness.machinery.netem import EmulatedNetwork, NetemSpec

    out = Path(tempfile.mkdtemp(prefix="palsgd-tcp-idle-")) / "rank0.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "--rank-mode", "--out", str(out),
            "--size-mb", str(args.size_mb), "--reps", str(args.reps), "--idle-s", str(args.idle_s),
            "--slow-start-after-idle", str(args.slow_start_after_idle), "--congestion", args.congestion]
    with EmulatedNetwork(2, NetemSpec.parse(args.network)) as net:
        procs = []
        for rank in range(2):
            env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR=net.addresses[0],
                       MASTER_PORT=str(STORE_PORT), GLOO_SOCKET_IFNAME=net.ifname, OMP_NUM_THREADS="1")
            procs.append(subprocess.Popen(net.command(rank, argv), env=env))
        codes = [p.wait(timeout=600) for p in procs]
    if any(codes):
        raise SystemExit(f"a rank failed: exit statuses {codes}")
    return json.loads(out.read_text())


def report(result: dict, args) -> str:
    lines = [f"{args.network}, {args.size_mb:g} MB all-reduce, 2 gloo ranks; in the namespaces before: "
             f"{result['sysctl_before']}; {SYSCTL} set to {result['sysctl_set']}; connection's congestion "
             f"control: {result['congestion']}"]
    for phase in ("back_to_back", "after_idle"):
        rows = [r for r in result["rows"] if r["phase"] == phase]
        times = [r["time_s"] * 1e3 for r in rows]
        lines.append(f"{phase:>12}: median {statistics.median(times):.1f} ms (min {min(times):.1f}, max "
                     f"{max(times):.1f}); cwnd before the call {[r['cwnd_before'] for r in rows]}, min during "
                     f"{[r['cwnd_min'] for r in rows]}, max {[r['cwnd_max'] for r in rows]}; retransmits "
                     f"{sum(r['retrans_added'] or 0 for r in rows):g}; ss samples/call "
                     f"{statistics.median(r['ss_samples'] for r in rows):g}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--network", default="rate=1gbit,delay=5ms")
    p.add_argument("--size-mb", type=float, default=8.0)
    p.add_argument("--reps", type=int, default=6)
    p.add_argument("--idle-s", type=float, default=1.0, help="longer than the RTO (200 ms minimum on Linux)")
    p.add_argument("--slow-start-after-idle", type=int, choices=(0, 1), default=1)
    p.add_argument("--congestion", default="", help="set tcp_congestion_control in the namespaces (e.g. cubic)")
    p.add_argument("--rank-mode", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rank_mode:
        return rank_main(args)
    print(report(launch(args), args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
