"""Emulate a cluster network on one Linux machine: network namespaces joined by bridges.

``--emulate-network rate=R,delay=D`` gives every rank its own namespace (one rank per node).
``--emulate-network nodes=K,rate=R,delay=D[,intra_rate=r,intra_delay=d][,groups=G,wan_rate=W,wan_delay=E]``
splits the ranks evenly over K emulated nodes; the ranks of one node share its namespace and talk over
its loopback. Topology (``docs/network-emulation.md``):

    node i (pgsd<pid>n<k>h<i>):  ranks ── lo ── ranks          lo: tbf r + delay d, or unshaped
        veth0 10.213.x.(i+1)/24 ──(tbf R each way)── p<i> ── br0 of its group  (pgsd<pid>n<k>b<j>)
    group j bridge: wan ──(tbf W each way)── g<j> ── br0 of the WAN switch     (pgsd<pid>n<k>w, G > 1)

One layer-2 segment, one private /24, no address on any bridge, no default route anywhere and the root
namespace not attached, so emulated traffic can never leave the machine.

* Rate. A node's NIC is full duplex: a ``tbf`` on its veth (what it sends) and one on its bridge port
  (what it receives), shared by all its ranks. A group's WAN uplink is the same, on the veth joining its
  bridge to the WAN switch, shared by all its nodes (the simulator's per-group WAN bandwidth). Inside a
  node, ``intra_rate`` is one ``tbf`` on ``lo``, shared by all the node's loopback traffic.
* Delay is added once per packet, on the receiving node, by what the packet crossed: ``intra_delay``
  from ``lo``, ``wan_delay`` from a node of another group (it replaces ``delay``: the simulator's WAN
  latency is one hop's), ``delay`` from a node of the same group. A TCP round trip thus takes 2·d,
  2·D and 2·E. Where the kernel has ``netem`` and there are no groups, netem on each shaped device's
  egress adds it; else the user-space NFQUEUE program ``netdelay`` does, on INGRESS (on egress, TCP
  small queues count held packets as in flight and throughput collapses), one program per kind of
  traffic a node receives, chosen by iptables rules (``-i lo``; ``-i veth0 -s <other group's node>``;
  ``-i veth0``). Per-source rules on the receiver are the simplest way to tell WAN traffic apart on a
  single bridged segment.

Every name carries the owner's pid, so ``cleanup_stale`` can remove what a killed owner left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass

from ...core.errors import ConfigError
from ...core.procs import die_with_parent, pid_alive

PREFIX = "pgsd"
IFNAME = "veth0"
MTU = 9000
_NAME = re.compile(rf"^{PREFIX}(\d+)n(\d+)(b\d*|w|h\d+)$")
_UNITS_RATE = {"kbit": 1e-3, "mbit": 1.0, "gbit": 1e3}
_UNITS_TIME = {"us": 1e-3, "ms": 1.0, "s": 1e3}
_counter = iter(range(10**9))
KEY = "--emulate-network"
MAX_NODES = 250
TC_MAX_BYTES = 2**32 - 1
"""tc reads a tbf's burst and limit as unsigned 32-bit byte counts ("illegal value for burst" above)."""
TC_MAX_DELAY_MS = 274_877.0
"""tc turns a netem delay into a 32-bit count of ticks, 15.625 per microsecond with the usual
/proc/net/psched (1000 / 64): 2**32 ticks = 274.9 s. iproute2 6.1 refused 274,877,907 us and took one less."""


class EmulationError(ConfigError):
    """The machine cannot emulate a network (not root, a tool missing); one line says what to install."""

    def __init__(self, rule: str):
        super().__init__(rule, key=KEY)


RULE = ("expected rate=<n>{kbit,mbit,gbit}[,delay=<t>][,jitter=<t>][,nodes=<K>[,intra_rate=<r>]"
        "[,intra_delay=<t>][,groups=<G>,wan_rate=<r>[,wan_delay=<t>]]][,tcp_cc=<name>]"
        "[,slow_start_after_idle=0|1][,rto_min=<t>], times <t> in us/ms/s")
_KEYS = {"rate": ("rate_mbit", _UNITS_RATE), "delay": ("delay_ms", _UNITS_TIME),
         "jitter": ("jitter_ms", _UNITS_TIME), "nodes": ("nodes", None),
         "intra_rate": ("intra_rate_mbit", _UNITS_RATE), "intra_delay": ("intra_delay_ms", _UNITS_TIME),
         "groups": ("groups", None), "wan_rate": ("wan_rate_mbit", _UNITS_RATE),
         "wan_delay": ("wan_delay_ms", _UNITS_TIME), "tcp_cc": ("tcp_cc", str),
         "slow_start_after_idle": ("slow_start_after_idle", bool), "rto_min": ("rto_min_ms", _UNITS_TIME)}
SYSCTL_CC = "net.ipv4.tcp_congestion_control"
SYSCTL_IDLE = "net.ipv4.tcp_slow_start_after_idle"
RTO_MIN_MS = 200.0
"""Linux's minimum retransmission timeout (``TCP_RTO_MIN``, include/net/tcp.h): a route's ``rto_min``
replaces it."""


@dataclass(frozen=True)
class NetemSpec:
    """The emulated links: ``rate_mbit`` each way and ``delay_ms`` one way (± ``jitter_ms``) per node,
    optionally a shaped loopback inside each node and a WAN between groups of nodes."""

    rate_mbit: float
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    nodes: int = 0
    """Emulated nodes the ranks are split over; 0: every rank is a node of its own."""
    intra_rate_mbit: float = 0.0
    """Loopback rate inside a node, shared by its ranks; 0: unshaped."""
    intra_delay_ms: float = 0.0
    groups: int = 1
    """Groups of nodes joined by the WAN; 1: no WAN."""
    wan_rate_mbit: float = 0.0
    """Each group's WAN uplink, each way."""
    wan_delay_ms: float = 0.0
    tcp_cc: str = ""
    """TCP congestion control set in every node's namespace (``net.ipv4.tcp_congestion_control``); "": the
    machine's own, which a new namespace inherits."""
    slow_start_after_idle: bool = True
    """``net.ipv4.tcp_slow_start_after_idle`` set in every node's namespace (Linux's default: 1)."""
    rto_min_ms: float = 0.0
    """Minimum retransmission timeout of the routes between nodes; 0: the kernel's RTO_MIN_MS. Time
    dilation sets it K times the kernel's, so an idle link restarts after as many RTOs as undilated."""

    def __post_init__(self):
        for name, low in (("rate_mbit", 1e-3), ("delay_ms", 0.0), ("jitter_ms", 0.0), ("intra_rate_mbit", 0.0),
                          ("intra_delay_ms", 0.0), ("wan_rate_mbit", 0.0), ("wan_delay_ms", 0.0),
                          ("rto_min_ms", 0.0)):
            value = getattr(self, name)
            if not value >= low or value != value or value == float("inf"):
                raise ConfigError(f"{name} must be a finite number >= {low}", key=KEY, value=value)
        if self.jitter_ms > self.delay_ms:
            raise ConfigError("jitter must not exceed delay", key=KEY, value=self.jitter_ms)
        if not 0 <= self.nodes <= MAX_NODES or self.groups < 1:
            raise ConfigError(f"nodes must be in 1..{MAX_NODES} and groups >= 1", key=KEY, value=str(self))
        if not self.nodes and (self.intra_rate_mbit or self.intra_delay_ms or self.groups > 1):
            raise ConfigError("intra_rate, intra_delay and groups need nodes=<K>", key=KEY, value=str(self))
        if self.groups > 1 and (self.nodes % self.groups or not self.wan_rate_mbit):
            raise ConfigError("groups=<G> must divide nodes and needs wan_rate", key=KEY, value=str(self))
        if self.groups == 1 and (self.wan_rate_mbit or self.wan_delay_ms):
            raise ConfigError("wan_rate and wan_delay need groups=<G> > 1", key=KEY, value=str(self))
        self._check_tc()

    def _check_tc(self) -> None:
        """What ``tc`` takes, checked before anything is launched: a tbf's burst and limit are 32-bit byte
        counts, a netem delay at most TC_MAX_DELAY_MS (iproute2 6.1 refuses more, measured)."""
        for key, rate, delay in (("rate", self.rate_mbit, self.delay_ms),
                                 ("intra_rate", self.intra_rate_mbit, self.intra_delay_ms),
                                 ("wan_rate", self.wan_rate_mbit, self.wan_delay_ms)):
            if rate and max(int(v) for v in tbf_args(rate, delay)[4::2]) > TC_MAX_BYTES:
                raise ConfigError(f"{key} with its delay needs a token bucket over tc's limit of {TC_MAX_BYTES:,} "
                                  "bytes (burst = 1 ms, queue = rate x (2 x delay + 10 ms)); give a lower rate or "
                                  "delay", key=KEY, value=str(self))
        for key, delay in (("delay", self.delay_ms + self.jitter_ms), ("intra_delay", self.intra_delay_ms),
                           ("wan_delay", self.wan_delay_ms)):
            if delay > TC_MAX_DELAY_MS:
                raise ConfigError(f"{key} (with jitter) must be at most {TC_MAX_DELAY_MS / 1e3:g} s, tc's limit",
                                  key=KEY, value=str(self))

    @classmethod
    def parse(cls, text: str) -> NetemSpec:
        """``rate=1gbit,delay=5ms[,jitter=1ms][,nodes=2,...]`` (see RULE); rates kbit/mbit/gbit, times us/ms/s."""
        fields: dict[str, float | int] = {}
        for part in filter(None, (p.strip() for p in str(text).split(","))):
            key, sep, raw = (s.strip() for s in part.partition("="))
            name, units = _KEYS.get(key, ("", None))
            value = _number(raw, units) if sep and name and name not in fields else None
            if value is None:
                raise ConfigError(f"bad part {part!r}: {RULE}", key=KEY, value=text)
            fields[name] = value
        if "rate_mbit" not in fields:
            raise ConfigError(f"rate is required: {RULE}", key=KEY, value=text)
        return cls(**fields)  # type: ignore[arg-type]

    def __str__(self) -> str:
        out = [f"rate={self.rate_mbit:g}mbit", f"delay={self.delay_ms:g}ms"]
        defaults = NetemSpec(1.0)
        for key, (name, units) in _KEYS.items():
            value = getattr(self, name)
            if key not in ("rate", "delay") and value != getattr(defaults, name):
                out.append(f"{key}={_format(value, units)}")
        return ",".join(out)

    def dilated(self, factor: float) -> NetemSpec:
        """The same links slowed down ``factor`` times (time-dilated emulation, ``dilation.py``): every rate
        divided by it, every delay and jitter multiplied by it; the layout unchanged. A transfer that takes t
        on this spec's links takes factor·t on the dilated ones."""
        if factor == 1:
            return self
        rates = ("rate_mbit", "intra_rate_mbit", "wan_rate_mbit")
        times = ("delay_ms", "jitter_ms", "intra_delay_ms", "wan_delay_ms")
        return dataclasses.replace(self, **{n: getattr(self, n) / factor for n in rates},
                                   **{n: getattr(self, n) * factor for n in times},
                                   rto_min_ms=(self.rto_min_ms or RTO_MIN_MS) * factor)

    @property
    def delayed(self) -> bool:
        """Whether any link adds delay."""
        return max(self.delay_ms, self.intra_delay_ms, self.wan_delay_ms) > 0


def tcp_transport(spec: NetemSpec) -> dict:
    """The simulator's TCP fields (``core.cluster.TransportSpec``, ``sim/tcp.py``) that the emulated links
    set: slow start after idle where the namespaces run a loss-based congestion control with the sysctl on
    (BBR is not restarted), the segment of the jumbo MTU, the minimum RTO of the routes, and the node's
    receive queue (tbf's limit) that such a window fills above the bandwidth-delay product."""
    congestion = spec.tcp_cc or _proc_sys("net/ipv4/tcp_congestion_control")
    restarts = spec.slow_start_after_idle and not congestion.startswith("bbr")
    return {"slow_start_after_idle": bool(restarts), "mss_bytes": MTU - 52, "rto_min_ms": spec.rto_min_ms or RTO_MIN_MS,
            "queue_bytes": int(tbf_args(spec.rate_mbit, spec.delay_ms)[6]), "congestion_control": congestion}


def _number(raw: str, units) -> float | int | str | bool | None:
    """``raw`` as a count >= 1 (``units`` None), a name (``str``: letters, digits, ``_``), 0 or 1 (``bool``) or
    a number with one of ``units``, in its base unit; None if bad."""
    if units is str:
        return raw if re.fullmatch(r"[a-z][a-z0-9_]*", raw) else None
    if units is bool:
        return {"0": False, "1": True}.get(raw)
    if units is None:
        return int(raw) if raw.isdigit() and int(raw) >= 1 else None
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([a-z]+)", raw.lower())
    return float(m.group(1)) * units[m.group(2)] if m and m.group(2) in units else None


def _format(value, units) -> str:
    if units is str:
        return str(value)
    if units is bool:
        return str(int(value))
    return f"{value:g}" + ("" if units is None else "mbit" if units is _UNITS_RATE else "ms")


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
    if spec is not None and spec.tcp_cc:
        check_congestion_control(spec.tcp_cc)
    if need_delay_program is None:
        need_delay_program = spec is not None and delay_mode(spec) == "netdelay"
    if need_delay_program:
        if shutil.which("iptables-legacy") is None:
            raise EmulationError("delay without netem needs `iptables-legacy`: apt-get install -y iptables")
        if not _has_netfilterqueue():
            raise EmulationError("delay without netem needs the NetfilterQueue module: apt-get install -y "
                                 "libnetfilter-queue-dev && pip install NetfilterQueue")


def check_congestion_control(name: str) -> None:
    """A namespace other than the machine's own may only default to a congestion control the machine allows
    (``tcp_allowed_congestion_control``; the kernel answers EPERM otherwise)."""
    allowed = _proc_sys("net/ipv4/tcp_allowed_congestion_control").split()
    if name not in allowed:
        available = _proc_sys("net/ipv4/tcp_available_congestion_control").split()
        wider = " ".join([*allowed, name])
        how = (f"allow it once with `sysctl -w net.ipv4.tcp_allowed_congestion_control=\"{wider}\"`"
               if name in available else f"this kernel has {' '.join(available)}")
        raise EmulationError(f"tcp_cc={name} cannot be set in an emulated node: the machine allows "
                             f"{' '.join(allowed) or 'none'}; {how}")


def _proc_sys(path: str) -> str:
    try:
        with open(f"/proc/sys/{path}") as f:
            return f.read().strip()
    except OSError:
        return ""


_NETEM: bool | None = None


def has_netem() -> bool:
    """Whether the kernel has the netem qdisc: try one on a dummy link in a throw-away namespace."""
    global _NETEM
    if _NETEM is None:
        ns = f"{PREFIX}{os.getpid()}n{next(_counter)}b0"
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


def delay_mode(spec: NetemSpec, use_netem: bool | None = None) -> str:
    """How ``spec``'s delays are added: ``none``, ``netem`` (kernel, egress; only without groups: it cannot
    tell WAN traffic apart) or ``netdelay`` (the NFQUEUE program, ingress)."""
    if not spec.delayed:
        return "none"
    netem = has_netem() if use_netem is None else use_netem
    return "netem" if netem and spec.groups == 1 else "netdelay"


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
    """``ranks`` split evenly over the nodes of ``spec`` (one rank per node without ``nodes=``), each node a
    namespace on a private bridge, every link shaped by ``spec``; removed on every exit path.

    >>> with EmulatedNetwork(4, NetemSpec.parse("nodes=2,rate=1gbit,delay=5ms")) as net:
    ...     subprocess.run(net.command(0, ["python", "server.py", net.addresses[0]]))
    """

    ifname = IFNAME

    def __init__(self, ranks: int, spec: NetemSpec, *, use_netem: bool | None = None):
        nodes = spec.nodes or ranks
        if ranks < 1 or nodes > MAX_NODES or ranks % nodes:
            raise ConfigError(f"{ranks} ranks must split evenly over {nodes} nodes (at most {MAX_NODES})", key=KEY,
                              value=str(spec) if spec.nodes else ranks)
        self.spec, self.nodes, self.ranks_per_node = spec, nodes, ranks // nodes
        self._use_netem = use_netem
        pid = os.getpid()
        self.tag = f"{PREFIX}{pid}n{next(_counter)}"
        self.bridges = [f"{self.tag}b{j}" for j in range(spec.groups)]
        self.wan_switch = f"{self.tag}w" if spec.groups > 1 else None
        self.namespaces = [f"{self.tag}h{i}" for i in range(nodes)]
        subnet = 1 + pid % 250
        self.addresses = [f"10.213.{subnet}.{i + 1}" for i in range(nodes)]
        self.delay_mode = "none"
        self._procs: list[subprocess.Popen] = []
        self._old_sigterm = None

    def command(self, node: int, argv: list[str]) -> list[str]:
        """``argv`` run inside node ``node``'s namespace."""
        return ["ip", "netns", "exec", self.namespaces[node], *argv]

    def group(self, node: int) -> int:
        """The WAN group of ``node``: groups are runs of consecutive nodes."""
        return node // (self.nodes // self.spec.groups)

    # -- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> EmulatedNetwork:
        cleanup_stale()
        self.delay_mode = delay_mode(self.spec, self._use_netem)
        preflight(self.spec, need_delay_program=self.delay_mode == "netdelay")
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
        ours = {*self.bridges, self.wan_switch, *self.namespaces}
        _delete([ns for ns in _netns_list() if ns in ours])
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None
        left = [ns for ns in _netns_list() if ns in ours]
        if left:
            raise EmulationError(f"could not delete namespaces {left}; remove them with `ip netns del`")

    # -- construction -----------------------------------------------------------------------

    def _build(self) -> None:
        for ns in filter(None, (*self.bridges, self.wan_switch)):
            _run(["ip", "netns", "add", ns])
            _run(["ip", "-n", ns, "link", "add", "br0", "type", "bridge"])
            _run(["ip", "-n", ns, "link", "set", "br0", "up"])
        if self.wan_switch:
            for j in range(self.spec.groups):
                self._uplink(j)
        for node in range(self.nodes):
            self._node(node)

    def _uplink(self, group: int) -> None:
        """Join group ``group``'s bridge to the WAN switch: ``wan_rate`` each way."""
        spec, wan, br = self.spec, self.wan_switch, self.bridges[group]
        port = f"g{group}"
        _run(["ip", "-n", wan, "link", "add", port, "mtu", str(MTU), "type", "veth", "peer", "name", "wan",
              "netns", br])
        _run(["ip", "-n", wan, "link", "set", port, "master", "br0", "up"])
        _run(["ip", "-n", br, "link", "set", "wan", "mtu", str(MTU), "master", "br0", "up"])
        tbf = tbf_args(spec.wan_rate_mbit, spec.wan_delay_ms)
        _run(["tc", "-n", wan, "qdisc", "add", "dev", port, "root", *tbf])  # what the group receives
        _run(["tc", "-n", br, "qdisc", "add", "dev", "wan", "root", *tbf])  # what the group sends

    def _node(self, node: int) -> None:
        spec, ns, br = self.spec, self.namespaces[node], self.bridges[self.group(node)]
        port = f"p{node}"
        _run(["ip", "netns", "add", ns])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run(["ip", "-n", br, "link", "add", port, "mtu", str(MTU), "type", "veth",
              "peer", "name", IFNAME, "netns", ns])
        _run(["ip", "-n", br, "link", "set", port, "master", "br0", "up"])
        _run(["ip", "-n", ns, "link", "set", IFNAME, "mtu", str(MTU), "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{self.addresses[node]}/24", "dev", IFNAME])
        self._tcp(node)
        _run(["tc", "-n", br, "qdisc", "add", "dev", port, "root",  # what the node receives
              *tbf_args(spec.rate_mbit, spec.delay_ms)])
        self._shape(ns, IFNAME, spec.rate_mbit, spec.delay_ms, spec.jitter_ms)  # what the node sends
        if spec.intra_rate_mbit:
            # tbf drops a packet larger than its burst; loopback's 64 KiB MTU would exceed it.
            _run(["ip", "-n", ns, "link", "set", "lo", "mtu", str(MTU)])
        self._shape(ns, "lo", spec.intra_rate_mbit, spec.intra_delay_ms, 0.0)
        if self.delay_mode == "netdelay":
            for kind, (matches, delay_ms, jitter_ms) in enumerate(self._received(node)):
                queue = 3 * node + kind
                target = ["NFQUEUE", "--queue-num", str(queue), "--queue-bypass"] if delay_ms > 0 else ["ACCEPT"]
                if delay_ms > 0 and matches:
                    self._start_delay(node, queue, delay_ms, jitter_ms)
                for match in matches:
                    _run(self.command(node, ["iptables-legacy", "-A", "INPUT", *match, "-j", *target]))

    def _tcp(self, node: int) -> None:
        """Pin the node's TCP state (``docs/network-emulation.md``, "TCP state"): congestion control and slow
        start after idle are per namespace; the minimum RTO is the route's to the other nodes."""
        ns, spec = self.namespaces[node], self.spec
        sysctls = [f"{SYSCTL_IDLE}={int(spec.slow_start_after_idle)}"]
        if spec.tcp_cc:
            sysctls.append(f"{SYSCTL_CC}={spec.tcp_cc}")
        _run(self.command(node, ["sysctl", "-q", "-w", *sysctls]))
        if spec.rto_min_ms:
            subnet = self.addresses[node].rsplit(".", 1)[0] + ".0/24"
            _run(["ip", "-n", ns, "route", "replace", subnet, "dev", IFNAME, "proto", "kernel", "scope", "link",
                  "src", self.addresses[node], "rto_min", f"{spec.rto_min_ms:g}ms"])

    def _shape(self, ns: str, dev: str, rate_mbit: float, delay_ms: float, jitter_ms: float) -> None:
        """Egress of ``dev``: netem delay (where it is used) above a tbf at ``rate_mbit`` (0: no tbf)."""
        tbf = tbf_args(rate_mbit, delay_ms) if rate_mbit else []
        if self.delay_mode == "netem" and delay_ms > 0:
            netem = ["netem", "delay", f"{delay_ms * 1000:.0f}us"]
            if jitter_ms:
                netem.append(f"{jitter_ms * 1000:.0f}us")
            _run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", *netem])
            if tbf:
                _run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", *tbf])
        elif tbf:
            _run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", *tbf])

    def _received(self, node: int) -> list[tuple[list[list[str]], float, float]]:
        """What ``node`` receives, most specific first: (iptables matches, delay_ms, jitter_ms) from its own
        loopback, from nodes of other groups, from nodes of its group."""
        spec, mine = self.spec, self.group(node)
        remote = [["-i", IFNAME, "-s", a] for k, a in enumerate(self.addresses) if self.group(k) != mine]
        return [([["-i", "lo"]], spec.intra_delay_ms, 0.0),
                (remote, spec.wan_delay_ms, 0.0),
                ([["-i", IFNAME]], spec.delay_ms, spec.jitter_ms)]

    def _start_delay(self, node: int, queue: int, delay_ms: float, jitter_ms: float) -> None:
        """Start netdelay inside the node on ``queue`` and wait until it has bound it."""
        argv = [sys.executable, "-m", "palsgd.harness.machinery.netdelay", "--queue", str(queue),
                "--delay-ms", str(delay_ms), "--jitter-ms", str(jitter_ms), "--owner-pid", str(os.getpid())]
        proc = subprocess.Popen(self.command(node, argv), stdout=subprocess.PIPE, text=True,
                                preexec_fn=_term_with_parent)
        self._procs.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], 20.0)
        line = proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            raise EmulationError(f"the delay program did not start in {self.namespaces[node]}: "
                                 f"{line.strip() or 'no answer in 20 s'}")


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


def _term_with_parent() -> None:
    """In the delay program before exec: SIGTERM (so it can unbind its queue) when we die, even by kill -9."""
    die_with_parent(signal.SIGTERM)
