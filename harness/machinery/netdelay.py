"""netdelay: hold every packet of an NFQUEUE for D ms (± J) before accepting it — delay without netem.

Run inside an emulated node's network namespace, fed by rules such as
``iptables-legacy -A INPUT -i veth0 -j NFQUEUE --queue-num N --queue-bypass`` (``harness/machinery/netem.py``: one
program per kind of traffic the node receives). Ingress only: on egress, TCP small queues count held
packets as in flight and throughput collapses (``docs/network-emulation.md``).

Design: one thread, no locks. The kernel keeps each queued packet until it gets a verdict, so we never
copy payloads (``COPY_META``): the callback only records (release time, packet) at the tail of a FIFO and
returns; the loop waits in ``select`` on the queue's socket with a timeout that ends at the head's release
time, then accepts every packet that is due. Release times never decrease, so a FIFO is a priority queue:

    release_i = max(arrival_i + D + U(-J, J), release_{i-1})

Jitter is uniform on [-J, +J] (netem's default distribution), but never reorders packets: a packet waits
at least until the one before it leaves, as netem does behind a FIFO child qdisc. This keeps TCP free of
spurious reordering (which would trigger fast retransmits) at the cost of correlating the jitter of
back-to-back packets, and of packets to the same host sharing one queue.

The kernel queue holds at most ``--max-len`` packets; beyond that it drops (NetfilterQueue does not expose
fail-open). 100 000 packets cover 5 Gbit/s x 50 ms at MTU 9000 many times over.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import select
import signal
import sys
import time
import warnings

from ...core.procs import pid_alive


def release_time(arrival_s: float, delay_s: float, jitter_s: float, last_s: float, rng: random.Random) -> float:
    """When a packet that arrived at ``arrival_s`` may leave: D ± uniform jitter, never before ``last_s``."""
    jitter = rng.uniform(-jitter_s, jitter_s) if jitter_s > 0 else 0.0
    return max(arrival_s + delay_s + jitter, last_s)


class Delayer:
    """The FIFO of held packets; ``push`` from the queue callback, ``release_due`` from the loop."""

    def __init__(self, delay_s: float, jitter_s: float, seed: int = 0, clock=time.monotonic):
        self.delay_s, self.jitter_s, self.clock = delay_s, jitter_s, clock
        self.rng = random.Random(seed)
        self.held: collections.deque = collections.deque()
        self.last_s = 0.0
        self.passed = 0

    def push(self, packet) -> None:
        now = self.clock()
        self.last_s = release_time(now, self.delay_s, self.jitter_s, self.last_s, self.rng)
        self.held.append((self.last_s, packet))
        self.release_due(now)  # under a steady stream the loop may not get back to select for a while

    def release_due(self, now: float | None = None) -> float | None:
        """Accept every packet whose time has come; return seconds until the next one (None: none held)."""
        now = self.clock() if now is None else now
        while self.held and self.held[0][0] <= now:
            self.held.popleft()[1].accept()
            self.passed += 1
        return max(0.0, self.held[0][0] - now) if self.held else None


def serve(queue_num: int, delay_s: float, jitter_s: float, owner_pid: int, max_len: int) -> None:
    from netfilterqueue import COPY_META, NetfilterQueue  # optional (pip install palsgd[emulate]): only here

    delayer = Delayer(delay_s, jitter_s, seed=queue_num)
    nfq = NetfilterQueue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rcvbuf capped by net.core.rmem_max: harmless
        nfq.bind(queue_num, delayer.push, max_len=max_len, mode=COPY_META)
    fd = nfq.get_fd()
    os.set_blocking(fd, False)
    print("ready", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    next_check = time.monotonic()
    try:
        while not stop:
            wait = delayer.release_due()
            timeout = 0.2 if wait is None else min(wait, 0.2)
            readable, _, _ = select.select([fd], [], [], timeout)
            if readable:
                nfq.run(block=False)  # drains the socket, one push per packet
            if time.monotonic() >= next_check:  # orphaned (owner killed with -9): leave
                next_check = time.monotonic() + 1.0
                if owner_pid and not pid_alive(owner_pid):
                    break
    finally:
        for _, packet in delayer.held:  # do not strand packets in the kernel queue
            packet.accept()
        nfq.unbind()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m palsgd.harness.machinery.netdelay", description=__doc__.split("\n")[0])
    ap.add_argument("--queue", type=int, required=True, help="NFQUEUE number")
    ap.add_argument("--delay-ms", type=float, required=True)
    ap.add_argument("--jitter-ms", type=float, default=0.0)
    ap.add_argument("--owner-pid", type=int, default=0, help="exit when this process is gone")
    ap.add_argument("--max-len", type=int, default=100_000, help="packets the kernel queue may hold")
    args = ap.parse_args(argv)
    if args.delay_ms < 0 or not 0 <= args.jitter_ms <= args.delay_ms:
        ap.error("need 0 <= jitter-ms <= delay-ms")
    serve(args.queue, args.delay_ms / 1e3, args.jitter_ms / 1e3, args.owner_pid, args.max_len)
    return 0


if __name__ == "__main__":
    sys.exit(main())
