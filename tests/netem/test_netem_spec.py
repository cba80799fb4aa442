"""NetemSpec parsing and the delay program's release rule (no root needed)."""

import random
import re

import pytest

from palsgd.core.errors import ConfigError
from palsgd.harness.machinery import netem
from palsgd.harness.machinery.netdelay import Delayer, release_time
from palsgd.harness.machinery.netem import NetemSpec, tbf_args


@pytest.mark.parametrize("text, spec", [
    ("rate=1gbit,delay=5ms", NetemSpec(1000.0, 5.0)),
    ("rate=200mbit", NetemSpec(200.0)),
    ("rate=500kbit,delay=250us,jitter=100us", NetemSpec(0.5, 0.25, 0.1)),
    (" rate = 2.5gbit , delay=0.01s ", NetemSpec(2500.0, 10.0)),
])
def test_parse(text, spec):
    assert NetemSpec.parse(text) == spec


@pytest.mark.parametrize("text", ["", "delay=5ms", "rate=1gb", "rate=fast", "rate=1gbit,delay=5",
                                  "rate=1gbit,rate=2gbit", "rate=1gbit,loss=1%", "rate=0kbit",
                                  "rate=1gbit,delay=1ms,jitter=2ms"])
def test_parse_rejects(text):
    with pytest.raises(ConfigError) as err:
        NetemSpec.parse(text)
    assert err.value.key == "--emulate-network"


@pytest.mark.parametrize("text, spec", [
    ("nodes=2,rate=1gbit,delay=5ms", NetemSpec(1000.0, 5.0, nodes=2)),
    ("nodes=4,rate=1gbit,intra_rate=10gbit,intra_delay=50us,groups=2,wan_rate=100mbit,wan_delay=20ms",
     NetemSpec(1000.0, nodes=4, intra_rate_mbit=10000.0, intra_delay_ms=0.05, groups=2, wan_rate_mbit=100.0,
               wan_delay_ms=20.0)),
])
def test_parse_two_tiers(text, spec):
    assert NetemSpec.parse(text) == spec


@pytest.mark.parametrize("text, says", [
    ("nodes=2.5,rate=1gbit", "'nodes=2.5'"), ("nodes=,rate=1gbit", "'nodes='"), ("nodes=0,rate=1gbit", "'nodes=0'"),
    ("rate=1gbit,intra_rate=1gbit", "need nodes"), ("nodes=3,rate=1gbit,groups=2,wan_rate=1gbit", "divide"),
    ("nodes=2,rate=1gbit,groups=2", "wan_rate"), ("nodes=2,rate=1gbit,wan_delay=1ms", "groups"),
    ("nodes=2,rate=1gbit,intra_delay=1", "'intra_delay=1'"), ("nodes=999,rate=1gbit", "nodes must be"),
])
def test_parse_rejects_two_tiers(text, says):
    with pytest.raises(ConfigError) as err:
        NetemSpec.parse(text)
    assert err.value.key == "--emulate-network" and says in str(err.value)


def test_empty_spec_names_the_rule():
    with pytest.raises(ConfigError, match="rate is required: expected rate="):
        NetemSpec.parse("")


@pytest.mark.parametrize("spec", [NetemSpec(200.0, 2.0, 0.5),
                                  NetemSpec(100.0, 1.0, nodes=4, intra_rate_mbit=500.0, intra_delay_ms=0.1,
                                            groups=2, wan_rate_mbit=50.0, wan_delay_ms=10.0)])
def test_str_round_trips(spec):
    assert NetemSpec.parse(str(spec)) == spec


def test_tbf_burst_and_limit():
    # 200 Mbit/s = 25e6 B/s: 1 ms is 25 000 B < 4 jumbo frames (36 056 B); limit = 25e6 * (2*5+10) ms.
    args = tbf_args(200.0, 5.0)
    assert args == ["tbf", "rate", "200000kbit", "burst", "36056", "limit", "500000"]


def test_release_never_reorders():
    rng = random.Random(1)
    last, releases = 0.0, []
    for i in range(1000):
        last = release_time(i * 1e-4, 0.005, 0.002, last, rng)
        releases.append(last)
    assert releases == sorted(releases)
    assert all(r >= i * 1e-4 + 0.003 - 1e-12 for i, r in enumerate(releases))


class FakePacket:
    def __init__(self, log, name):
        self.log, self.name = log, name

    def accept(self):
        self.log.append(self.name)


def test_delayer_holds_for_delay():
    now = [0.0]
    d = Delayer(0.010, 0.0, clock=lambda: now[0])
    log = []
    d.push(FakePacket(log, "a"))
    now[0] = 0.004
    d.push(FakePacket(log, "b"))
    now[0] = 0.0099
    assert d.release_due() == pytest.approx(0.0001) and log == []
    now[0] = 0.010
    assert d.release_due() == pytest.approx(0.004) and log == ["a"]
    now[0] = 0.020
    assert d.release_due() is None and log == ["a", "b"]


def test_parse_tcp_state():
    spec = NetemSpec.parse("rate=1gbit,delay=5ms,tcp_cc=reno,slow_start_after_idle=0,rto_min=50ms")
    assert (spec.tcp_cc, spec.slow_start_after_idle, spec.rto_min_ms) == ("reno", False, 50.0)
    assert NetemSpec.parse(str(spec)) == spec
    # defaults: the machine's congestion control, slow start after idle on, the kernel's minimum RTO
    assert NetemSpec.parse("rate=1gbit") == NetemSpec(1000.0, tcp_cc="", slow_start_after_idle=True, rto_min_ms=0.0)


@pytest.mark.parametrize("text", ["rate=1gbit,tcp_cc=", "rate=1gbit,tcp_cc=Cubic!", "rate=1gbit,rto_min=5",
                                  "rate=1gbit,slow_start_after_idle=2", "rate=1gbit,slow_start_after_idle=yes"])
def test_parse_rejects_tcp_state(text):
    with pytest.raises(ConfigError, match="bad part"):
        NetemSpec.parse(text)


def test_dilation_stretches_the_minimum_rto():
    """K times the kernel's 200 ms, so an idle link halves its window as often as undilated."""
    assert NetemSpec.parse("rate=1gbit,delay=5ms").dilated(4).rto_min_ms == 800.0
    assert NetemSpec.parse("rate=1gbit,rto_min=50ms").dilated(2).rto_min_ms == 100.0
    assert NetemSpec.parse("rate=1gbit").dilated(1).rto_min_ms == 0.0


def test_congestion_control_the_machine_does_not_allow_is_one_line(monkeypatch):
    sysctls = {"net/ipv4/tcp_allowed_congestion_control": "reno bbr",
               "net/ipv4/tcp_available_congestion_control": "reno bbr cubic"}
    monkeypatch.setattr(netem, "_proc_sys", sysctls.__getitem__)
    netem.check_congestion_control("reno")
    with pytest.raises(ConfigError, match=re.escape('allows reno bbr; allow it once with `sysctl -w '
                                                    'net.ipv4.tcp_allowed_congestion_control="reno bbr cubic"`')):
        netem.check_congestion_control("cubic")
    with pytest.raises(ConfigError, match="this kernel has reno bbr cubic"):
        netem.check_congestion_control("vegas")


def test_the_simulator_gets_the_tcp_state_the_emulation_sets():
    """calibrate writes these into the profile's transport (sim/tcp.py prices them)."""
    reno = netem.tcp_transport(NetemSpec.parse("rate=1gbit,delay=5ms,tcp_cc=reno"))
    # tbf's queue at 1 Gbit/s and 5 ms: 125e6 B/s x (2 x 5 + 10) ms; MSS of the 9000 B MTU
    assert reno == {"slow_start_after_idle": True, "mss_bytes": 8948, "rto_min_ms": 200.0, "queue_bytes": 2_500_000,
                    "congestion_control": "reno"}
    assert not netem.tcp_transport(NetemSpec.parse("rate=1gbit,tcp_cc=bbr"))["slow_start_after_idle"]
    off = netem.tcp_transport(NetemSpec.parse("rate=1gbit,tcp_cc=reno,slow_start_after_idle=0,rto_min=50ms"))
    assert (off["slow_start_after_idle"], off["rto_min_ms"]) == (False, 50.0)
