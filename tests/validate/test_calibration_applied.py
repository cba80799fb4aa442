"""The pipeline moves a case's experiment onto its calibration (``config.calibrated``): the same experiment
each suite built before by loading the case with ``--cluster profile``, for every case of both suites."""

from __future__ import annotations

import pytest

from palsgd.core import config
from palsgd.harness.commands import validate_cluster, validate_cpu

MEASURED = "measured: palsgd calibrate on test at 2026-12-07 00:00 UTC (loopback)"
PROFILE = f"""[cluster]
name = "calibrated-test"
description = "2 x 4 ranks on test"
source = "written by hand for this test, shaped as palsgd calibrate writes a profile"
nodes = 2
gpus_per_node = 4
allreduce = "ring"
intra_node = {{ bandwidth_gbps = 6.2, latency_us = 9.6 }}
inter_node = {{ bandwidth_gbps = 0.66, latency_us = 4991.0 }}
transport = {{ kind = "gloo", efficiency = 1.0, step_overhead_us = 1226.0, step_latency = "rtt" }}
{{compute}}
[cluster.provenance]
nodes = "{MEASURED}"
"intra_node.bandwidth_gbps" = "{MEASURED}"
"inter_node.latency_us" = "{MEASURED}"
"transport.kind" = "{MEASURED}"
"""
COMPUTE = """compute = { step_time_s = 0.031, optimizer_time_s = 0.002 }
variability = { jitter_cv = 0.04 }"""


@pytest.mark.parametrize("suite, compute", [(validate_cpu, COMPUTE), (validate_cluster, "")])
def test_calibrated_is_the_case_loaded_on_the_profile(tmp_path, suite, compute):
    profile = tmp_path / "cluster.toml"
    profile.write_text(PROFILE.replace("{compute}", compute))
    cases = suite.cases(quick=False, emulate=True)
    for case in cases:
        on_profile = suite.case_experiment(case, str(profile))
        moved = config.calibrated(suite.case_experiment(case), profile)
        assert moved.to_dict() == on_profile.to_dict(), case
    # the profile's figures win over the preset's, the case's own settings over the profile's
    assert moved.cluster.transport.kind == "gloo" and moved.cluster.provenance["transport.kind"] == MEASURED
    assert moved.cluster.nodes == case.nodes if suite is validate_cluster else moved.cluster.nodes == 1
