"""Emulate a cluster network on one Linux machine: one network namespace per host, joined by a bridge.

Topology (``../shared/docs/network-and-collectives.md``, "Emulating a network"): one namespace holds only
a bridge (no address, no routes); each host namespace has one veth (``veth0``, MTU 9000) into that bridge
and an address in a private /24; no default route anywhere and the root namespace is not attached, so
emulated traffic can never leave the machine.

    host i:  veth0 ──(tbf: host i sends at most R)──▶ p<i> ─┐
             veth0 ◀──(tbf: host i receives at most R)── p<i> ◀┤ br0 (bridge namespace)
             INPUT -i veth0 ─▶ NFQUEUE ─▶ netdelay (holds D ± J) ─▶ accept     (or netem, where it exists)

Rate R is a full-duplex NIC: a ``tbf`` on the host's veth (what it sends) and one on its bridge port (what
it receives). One-way delay D is added once per packet: by ``netem`` on the host's egress where the kernel
has it, else by the user-space NFQUEUE program ``netdelay`` on the host's INGRESS (on egress, TCP small
queues count held packets as in flight and throughput collapses), so a TCP round trip takes 2·D.

Every name carries the owner's pid (``pgsd<pid>n<k>b``, ``pgsd<pid>n<k>h<i>``), so ``cleanup_stale``
can remove what a killed owner left behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass

from ..core.errors import ConfigError
from ..core.procs import die_with_parent, pid_alive

PREFIX = "pgsd"
IFNAME = "veth0"
MTU = 9000
_NAME = re.compile(rf"^{PREFIX}(\d+)n(\d+)(b|h\d+)$")
_UNITS_RATE = {"kbit": 1e-3, "mbit": 1.0, "gbit": 1e3}
_UNITS_TIME = {"us": 1e-3, "ms": 1.0, "s": 1e3}
_counter = iter(range(10**9))
KEY = "--emulate-network"


class EmulationError(ConfigError):
    """The machine cannot emulate a network (not root, a tool missing); one line says what to install."""

    def __init__(self, rule: str):
        super().__init__(rule, key=KEY)


@dataclass(frozen=True)
class NetemSpec:
    """One emulated link per host: ``rate_mbit`` each way, ``delay_ms`` one way (± ``jitter_ms``)."""

    rate_mbit: float
    delay_ms: float = 0.0
    jitter_ms: float = 0.0

    def __post_init__(self):
        for name, low in (("rate_mbit", 1e-3), ("delay_ms", 0.0), ("jitter_ms", 0.0)):
            value = getattr(self, name)
            if not value >= low or value != value or value == float("inf"):
                raise ConfigError(f"{name} must be a finite number >= {low}", key=KEY, value=value)
        if self.jitter_ms > self.delay_ms:
            raise ConfigError("jitter must not exceed delay", key=KEY, value=self.jitter_ms)

    @classmethod
    def parse(cls, text: str) -> NetemSpec:
        """``rate=1gbit,delay=5ms[,jitter=1ms]``: rate in kbit/mbit/gbit, times in us/ms/s."""
        fields: dict[str, float] = {}
        rule = "expected rate=<n>{kbit,mbit,gbit}[,delay=<n>{us,ms,s}][,jitter=<n>{us,ms,s}]"
        for part in filter(None, (p.strip() for p in str(text).split(","))):
            key, sep, raw = part.partition("=")
            key = key.strip()
            units = _UNITS_RATE if key == "rate" else _UNITS_TIME
            m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([a-z]+)\s*", raw.lower())
            if not sep or key not in ("rate", "delay", "jitter") or key in fields or not m \
                    or m.group(2) not in units:
                raise ConfigError(rule, key=KEY, value=text)
            fields[key] = float(m.group(1)) * units[m.group(2)]
        if "rate" not in fields:
            raise ConfigError(rule + " (rate is required)", key=KEY, value=text)
        return cls(fields["rate"], fields.get("delay", 0.0), fields.get("jitter", 0.0))

    def __str__(self) -> str:
        out = f"rate={self.rate_mbit:g}mbit,delay={self.delay_ms:g}ms"
        return out + (f",jitter={self.jitter_ms:g}ms" if self.jitter_ms else "")


# ---------------------------------------------------------------------------------------------
# Shell helpers


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise EmulationError(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or proc.returncode}")
    return proc


def _netns_list() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_netns_pids(ns: str) -> None:
    """Kill every process inside ``ns`` (a namespace outlives its name while a process is inside)."""
    out = _run(["ip", "netns", "pids", ns], check=False).stdout
    for pid in (int(p) for p in out.split() if p.isdigit()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _delete(names: list[str]) -> None:
    for ns in names:
        _kill_netns_pids(ns)
        _run(["ip", "netns", "del", ns], check=False)


def cleanup_stale() -> list[str]:
    """Delete the namespaces (and kill the processes inside) of owners that no longer run; return them."""
    stale = [ns for ns in _netns_list() if (m := _NAME.match(ns)) and not pid_alive(int(m.group(1)))]
    _delete(stale)
    return stale


def leftovers(pid: int | None = None) -> list[str]:
    """Namespaces of ours still present (of one owner ``pid`` if given)."""
    return [ns for ns in _netns_list() if (m := _NAME.match(ns)) and (pid is None or int(m.group(1)) == pid)]


# ---------------------------------------------------------------------------------------------
# Capabilities


def _has_netfilterqueue() -> bool:
    probe = [sys.executable, "-c", "import netfilterqueue"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def preflight(spec: NetemSpec | None = None, *, need_delay_program: bool | None = None) -> None:
    """Raise EmulationError naming what to install when this machine cannot emulate ``spec``."""
    if os.geteuid() != 0:
        raise EmulationError("network emulation needs root (network namespaces, tc, iptables)")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise EmulationError(f"`{tool}` not found: apt-get install -y iproute2")
    if need_delay_program is None:
        need_delay_program = bool(spec and spec.delay_ms > 0) and not has_netem()
    if need_delay_program:
        if shutil.which("iptables-legacy") is None:
            raise EmulationError("delay without netem needs `iptables-legacy`: apt-get install -y iptables")
        if not _has_netfilterqueue():
            raise EmulationError("delay without netem needs the NetfilterQueue module: apt-get install -y "
                                 "libnetfilter-queue-dev && pip install NetfilterQueue")


_NETEM: bool | None = None


def has_netem() -> bool:
    """Whether the kernel has the netem qdisc: try one on a dummy link in a throw-away namespace."""
    global _NETEM
    if _NETEM is None:
        ns = f"{PREFIX}{os.getpid()}n{next(_counter)}b"
        try:
            _run(["ip", "netns", "add", ns])
            _run(["ip", "-n", ns, "link", "add", "probe0", "type", "dummy"])
            _NETEM = _run(["tc", "-n", ns, "qdisc", "add", "dev", "probe0", "root", "netem", "delay", "1ms"],
                          check=False).returncode == 0
        except EmulationError:
            _NETEM = False
        finally:
            _delete([ns])
    return _NETEM


# ---------------------------------------------------------------------------------------------
# The network


def tbf_args(rate_mbit: float, delay_ms: float) -> list[str]:
    """``tbf`` parameters: burst = max(4 jumbo frames, 1 ms at line rate) so the token bucket needs no
    sub-millisecond timer; queue limit = max(2 bursts, rate x (2·delay + 10 ms)), about one
    bandwidth-delay product plus slack, so one TCP flow can fill the link without drops."""
    rate_Bps = rate_mbit * 1e6 / 8
    burst = int(max(4 * (MTU + 14), rate_Bps * 1e-3))
    limit = int(max(2 * burst, rate_Bps * (2 * delay_ms + 10) * 1e-3))
    return ["tbf", "rate", f"{rate_mbit * 1000:.0f}kbit", "burst", str(burst), "limit", str(limit)]


class EmulatedNetwork:
    """``hosts`` namespaces on a private bridge, each link shaped by ``spec``; removed on every exit path.

    >>> with EmulatedNetwork(2, NetemSpec.parse("rate=1gbit,delay=5ms")) as net:
    ...     subprocess.run(net.command(0, ["python", "server.py", net.addresses[0]]))
    """

    ifname = IFNAME

    def __init__(self, hosts: int, spec: NetemSpec, *, use_netem: bool | None = None):
        if hosts < 1 or hosts > 250:
            raise ConfigError("must be between 1 and 250 hosts", key=KEY, value=hosts)
        self.hosts, self.spec = hosts, spec
        self._use_netem = use_netem
        pid = os.getpid()
        self.tag = f"{PREFIX}{pid}n{next(_counter)}"
        self.bridge_ns = f"{self.tag}b"
        self.namespaces = [f"{self.tag}h{i}" for i in range(hosts)]
        subnet = 1 + pid % 250
        self.addresses = [f"10.213.{subnet}.{i + 1}" for i in range(hosts)]
        self.delay_mode = "none"
        self._procs: list[subprocess.Popen] = []
        self._old_sigterm = None

    def command(self, host: int, argv: list[str]) -> list[str]:
        """``argv`` run inside host ``host``'s namespace."""
        return ["ip", "netns", "exec", self.namespaces[host], *argv]

    # -- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> EmulatedNetwork:
        cleanup_stale()
        delay = self.spec.delay_ms > 0
        netem = has_netem() if self._use_netem is None else self._use_netem
        preflight(self.spec, need_delay_program=delay and not netem)
        self.delay_mode = "none" if not delay else ("netem" if netem else "netdelay")
        self._trap_sigterm()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _trap_sigterm(self) -> None:
        """SIGTERM would end the process without unwinding; turn it into SystemExit so ``close`` runs."""
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            self._old_sigterm = signal.signal(signal.SIGTERM, _raise_exit)

    def close(self) -> None:
        """Stop the delay programs, delete every namespace (with its veths, qdiscs and rules), verify."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        _delete([ns for ns in (self.bridge_ns, *self.namespaces) if ns in _netns_list()])
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None
        left = [ns for ns in _netns_list() if ns.startswith(self.tag) and _NAME.match(ns)]
        if left:
            raise EmulationError(f"could not delete namespaces {left}; remove them with `ip netns del`")

    # -- construction -----------------------------------------------------------------------

    def _build(self) -> None:
        br, spec = self.bridge_ns, self.spec
        _run(["ip", "netns", "add", br])
        _run(["ip", "-n", br, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", br, "link", "set", "br0", "up"])
        for i, ns in enumerate(self.namespaces):
            port = f"p{i}"
            _run(["ip", "netns", "add", ns])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "-n", br, "link", "add", port, "mtu", str(MTU), "type", "veth",
                  "peer", "name", IFNAME, "netns", ns])
            _run(["ip", "-n", br, "link", "set", port, "master", "br0", "up"])
            _run(["ip", "-n", ns, "link", "set", IFNAME, "mtu", str(MTU), "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{self.addresses[i]}/24", "dev", IFNAME])
            tbf = tbf_args(spec.rate_mbit, spec.delay_ms)
            _run(["tc", "-n", br, "qdisc", "add", "dev", port, "root", *tbf])  # what host i receives
            if self.delay_mode == "netem":
                netem = ["netem", "delay", f"{spec.delay_ms * 1000:.0f}us"]
                if spec.jitter_ms:
                    netem.append(f"{spec.jitter_ms * 1000:.0f}us")
                _run(["tc", "-n", ns, "qdisc", "add", "dev", IFNAME, "root", "handle", "1:", *netem])
                _run(["tc", "-n", ns, "qdisc", "add", "dev", IFNAME, "parent", "1:1", "handle", "10:", *tbf])
            else:
                _run(["tc", "-n", ns, "qdisc", "add", "dev", IFNAME, "root", *tbf])  # what host i sends
                if self.delay_mode == "netdelay":
                    self._start_delay(i)

    def _start_delay(self, host: int) -> None:
        """Start netdelay inside the host, wait until it has bound its queue, then divert INPUT to it."""
        queue = host
        argv = [sys.executable, "-m", "palsgd.harness.netdelay", "--queue", str(queue),
                "--delay-ms", str(self.spec.delay_ms), "--jitter-ms", str(self.spec.jitter_ms),
                "--owner-pid", str(os.getpid())]
        proc = subprocess.Popen(self.command(host, argv), stdout=subprocess.PIPE, text=True,
                                preexec_fn=_term_with_parent)
        self._procs.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], 20.0)
        line = proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            raise EmulationError(f"the delay program did not start in {self.namespaces[host]}: "
                                 f"{line.strip() or 'no answer in 20 s'}")
        _run(self.command(host, ["iptables-legacy", "-A", "INPUT", "-i", IFNAME, "-j", "NFQUEUE",
                                 "--queue-num", str(queue), "--queue-bypass"]))


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


def _term_with_parent() -> None:
    """In the delay program before exec: SIGTERM (so it can unbind its queue) when we die, even by kill -9."""
    die_with_parent(signal.SIGTERM)
