"""An all-reduce after an idle link against one back to back, with the TCP state behind it (issue 23, item 3).

Two gloo ranks, each an emulated host (``--emulate-network`` spec, default 1 Gbit/s and 5 ms each way).
Rank 0 times ``--reps`` all-reduces of ``--size-mb`` back to back, then ``--reps`` each after ``--idle-s``
of silence, while a thread samples ``ss -tin`` on its gloo connection (every other TCP connection is the
rendezvous store's): the congestion window, smoothed RTT and retransmits seen during each call. Each rank
runs in a namespace whose ``net.ipv4.tcp_slow_start_after_idle`` (``--slow-start-after-idle``) and
``tcp_congestion_control`` (``--congestion``, if given) the emulated network pins (``tcp_cc=`` and
``slow_start_after_idle=`` of its spec; the machine's own settings are untouched), and reports them.
Beside the measured difference it prints what the simulator charges for it (``sim/tcp.py``).

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

    state = {k: subprocess.run(["sysctl", "-n", k], capture_output=True, text=True).stdout.strip()
             for k in (SYSCTL, CONGESTION)}
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
        Path(args.out).write_text(json.dumps({"sysctl": state, "congestion": _congestion(), "rows": rows}))
    dist.destroy_process_group()
    return 0


def launch(args) -> dict:
    from palsgd.harness.machinery.netem import EmulatedNetwork

    out = Path(tempfile.mkdtemp(prefix="palsgd-tcp-idle-")) / "rank0.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "--rank-mode", "--out", str(out),
            "--size-mb", str(args.size_mb), "--reps", str(args.reps), "--idle-s", str(args.idle_s)]
    with EmulatedNetwork(2, spec_of(args)) as net:
        procs = []
        for rank in range(2):
            env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR=net.addresses[0],
                       MASTER_PORT=str(STORE_PORT), GLOO_SOCKET_IFNAME=net.ifname, OMP_NUM_THREADS="1")
            procs.append(subprocess.Popen(net.command(rank, argv), env=env))
        codes = [p.wait(timeout=600) for p in procs]
    if any(codes):
        raise SystemExit(f"a rank failed: exit statuses {codes}")
    return json.loads(out.read_text())


def spec_of(args):
    """The emulated link with the TCP state pinned in both hosts' namespaces (``netem.py``)."""
    from palsgd.harness.machinery.netem import NetemSpec

    extra = f",slow_start_after_idle={args.slow_start_after_idle}" + (f",tcp_cc={args.congestion}"
                                                                       if args.congestion else "")
    return NetemSpec.parse(args.network + extra)


def predicted_extra_s(args) -> float:
    """What the simulator charges a 2-rank all-reduce of ``--size-mb`` after ``--idle-s`` of silence beyond
    one back to back (``sim/tcp.py``), on the emulated link's rate and one-way delay with the TCP state
    the emulation pins (``netem.tcp_transport``): each rank's one connection sends the whole payload."""
    from palsgd.core.cluster import ClusterSpec, LinkSpec, TransportSpec
    from palsgd.harness.machinery.netem import tcp_transport
    from palsgd.sim.tcp import idle_restart_s

    spec = spec_of(args)
    tcp = tcp_transport(spec)
    tcp.pop("congestion_control")
    cluster = ClusterSpec(nodes=2, gpus_per_node=1, inter_node=LinkSpec(spec.rate_mbit / 1e3, spec.delay_ms * 1e3),
                          transport=TransportSpec(kind="gloo", efficiency=1.0, **tcp))
    return idle_restart_s(cluster, args.size_mb * 2**20, args.idle_s)


def report(result: dict, args) -> str:
    lines = [f"{spec_of(args)}, {args.size_mb:g} MB all-reduce, 2 gloo ranks; in the namespaces: "
             f"{result['sysctl']}; connection's congestion control: {result['congestion']}"]
    medians = {}
    for phase in ("back_to_back", "after_idle"):
        rows = [r for r in result["rows"] if r["phase"] == phase]
        times = [r["time_s"] * 1e3 for r in rows]
        medians[phase] = statistics.median(times)
        lines.append(f"{phase:>12}: median {medians[phase]:.1f} ms (min {min(times):.1f}, max "
                     f"{max(times):.1f}); cwnd before the call {[r['cwnd_before'] for r in rows]}, min during "
                     f"{[r['cwnd_min'] for r in rows]}, max {[r['cwnd_max'] for r in rows]}; srtt max "
                     f"{[r['rtt_ms_max'] for r in rows]} ms; retransmits "
                     f"{sum(r['retrans_added'] or 0 for r in rows):g}; ss samples/call "
                     f"{statistics.median(r['ss_samples'] for r in rows):g}")
    extra = predicted_extra_s(args) * 1e3
    lines.append(f"after idle - back to back: measured {medians['after_idle'] - medians['back_to_back']:+.1f} ms, "
                 f"simulator {extra:+.1f} ms (predicted after idle {medians['back_to_back'] + extra:.1f} ms, "
                 f"measured {medians['after_idle']:.1f} ms)")
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
