"""`calibrate` end to end: real gloo ranks, the fit, the profile the simulator loads."""

import dataclasses
import importlib.util
import tomllib

import numpy as np
import pandas as pd
import pytest

from palsgd.core.config import load
from palsgd.core.errors import ConfigError
from palsgd.harness.machinery.calibrate import calibrate
from palsgd.harness.machinery.netem import NetemSpec, preflight
from palsgd.sim.collectives import allreduce_time


def _check_outputs(out, files=("collectives.csv", "tcp_rtt.json")):
    folder = out.parent
    for name in (*files, "fit.csv"):
        assert (folder / name).is_file(), name
    exp = load(cluster=str(out))  # loads as a cluster preset
    fitted = pd.read_csv(folder / "fit.csv")
    # The profile reproduces, in the simulator, the predictions the fit reported: a tier is the ring of
    # one node (intra, or the one link) or the whole cluster's flat ring (inter).
    tier_cluster = {"link": exp.cluster, "intra": dataclasses.replace(exp.cluster, nodes=1), "inter": exp.cluster}
    sim = [allreduce_time(tier_cluster[t], s) for t, s in zip(fitted["tier"], fitted["size_bytes"], strict=True)]
    assert sim == pytest.approx(list(fitted["predicted_s"]), rel=1e-6)
    return exp, fitted


def test_needs_two_ranks(tmp_path):
    with pytest.raises(ConfigError):
        calibrate(load(), tmp_path / "p.toml", nproc_per_node=1)


def test_loopback_profile(tmp_path):
    out = calibrate(load(), tmp_path / "profile.toml", nproc_per_node=2, compute=False,
                    max_bytes=2**20, reps=3)
    exp, fitted = _check_outputs(out)
    assert exp.cluster.nodes == 1 and exp.cluster.gpus_per_node == 2
    assert exp.cluster.transport.kind == "gloo"
    assert "Measured by" in exp.cluster.source
    assert len(fitted) >= 4


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("palsgd.real.profile_compute") is None,
                    reason="real/profile_compute.py not present")
def test_compute_section(tmp_path):
    out = calibrate(load(workload="gpt-tiny"), tmp_path / "profile.toml", nproc_per_node=2,
                    max_bytes=2**16, reps=2, compute_steps=5)
    exp, _ = _check_outputs(out)
    raw = tomllib.loads(out.read_text())["cluster"]
    assert exp.cluster.compute.step_time_s > 0
    assert "jitter_cv" in raw.get("variability", {})
    assert (out.parent / "compute.json").is_file()


@pytest.mark.netns
def test_recovers_emulated_link(tmp_path):
    """Issue 4: rate=200mbit, delay=5ms, 2 ranks -> a profile that reproduces the measured all-reduce
    times, at about the emulated rate and round trip. About 30 s.

    The fit's precision is tested on synthetic timings (test_fit_transport.py); here the rate gloo gets
    through the emulated link depends on the machine: 192.6 Mbit/s on the idle 2-core VM, 148.4 Mbit/s
    on a slower CI machine (docs/network-emulation.md). A wrong rate unit or a missing shaper misses
    by a factor of 5 or more, so 30 % still catches every plumbing error."""
    try:
        preflight(need_delay_program=True)
    except ConfigError as err:
        pytest.skip(str(err))
    spec = NetemSpec.parse("rate=200mbit,delay=5ms")
    out = calibrate(load(), tmp_path / "profile.toml", nproc_per_node=2, network=spec, compute=False,
                    max_bytes=32 * 2**20, reps=5)
    exp, fitted = _check_outputs(out)
    rtt = pd.read_json(out.parent / "tcp_rtt.json", typ="series")["tcp_rtt_s"]
    # 2 x 5 ms plus the delay program's wake-ups (docs): 12.4 ms seen with eight other jobs on the two
    # cores; a delay missing on one side (5 ms) or applied twice (20 ms) is still caught.
    assert 10e-3 <= rtt <= 10e-3 * 1.5
    link, transport = exp.cluster.intra_node, exp.cluster.transport
    assert link.bandwidth_gbps == pytest.approx(0.2, rel=0.30)
    alpha_s = 2 * link.latency_us * 1e-6 + transport.step_overhead_us * 1e-6
    assert alpha_s == pytest.approx(rtt, rel=0.30)  # 5 % idle; latency trades against bandwidth
    # The fit's error is the host's noise: 0.045 idle, 0.070 on the CI machine, 0.29 with eight other jobs
    # on the two cores (small messages wait for a core). Only a broken fit is off by more.
    log_error = np.log(fitted["predicted_s"] / fitted["measured_s"])
    assert np.sqrt(np.mean(log_error**2)) <= 0.5


@pytest.mark.slow
@pytest.mark.netns
def test_two_tiers_on_emulated_nodes(tmp_path):
    """Issue 10: 2 emulated nodes of 2 ranks (loopback inside, 200 Mbit/s and 2 ms between) -> a profile
    with nodes = 2, gpus_per_node = 2, the inter-node link at the emulated rate and round trip, and a
    much faster intra-node link. About 60 s."""
    try:
        preflight(need_delay_program=True)
    except ConfigError as err:
        pytest.skip(str(err))
    spec = NetemSpec.parse("nodes=2,rate=200mbit,delay=2ms")
    out = calibrate(load(), tmp_path / "profile.toml", nproc_per_node=4, network=spec, compute=False,
                    max_bytes=16 * 2**20, reps=3)
    exp, fitted = _check_outputs(out, files=("collectives_intra.csv", "collectives_inter.csv",
                                            "tcp_rtt_intra.json", "tcp_rtt_inter.json"))
    assert (exp.cluster.nodes, exp.cluster.gpus_per_node) == (2, 2)
    assert sorted(set(fitted["tier"])) == ["inter", "intra"]
    assert set(fitted.loc[fitted["tier"] == "intra", "ranks"]) == {2}
    assert set(fitted.loc[fitted["tier"] == "inter", "ranks"]) == {4}  # the run's own ring, not 1 per node
    inter, intra = exp.cluster.inter_node, exp.cluster.intra_node
    # Effective, not line rate: gloo reached 180-185 Mbit/s on the idle VM, less on a slower machine
    # (see test_recovers_emulated_link), and the tiers share one fitted step overhead; a link at a wrong
    # rate (or one rank per namespace, or none) misses by far more.
    assert inter.bandwidth_gbps == pytest.approx(0.2, rel=0.30)
    # Half the round trip: 2 ms plus wake-ups. A fitted value, traded against the fitted bandwidth and
    # step overhead: 1,781-1,988 us seen with an rms log error of 0.085, so within 30 % either side.
    assert 0.7 * 2e3 <= inter.latency_us <= 2e3 * 1.3 + 500
    assert intra.latency_us < 500 and intra.bandwidth_gbps > 5 * inter.bandwidth_gbps


def test_wan_groups_are_not_calibrated(tmp_path):
    spec = NetemSpec.parse("nodes=2,rate=1gbit,groups=2,wan_rate=100mbit")
    with pytest.raises(ConfigError, match="not a WAN"):
        calibrate(load(), tmp_path / "p.toml", nproc_per_node=2, network=spec, compute=False)
