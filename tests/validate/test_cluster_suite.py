"""`palsgd validate --suite cluster`: the cases, their experiments, and the quick case end to end."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from palsgd.core.errors import ConfigError
from palsgd.harness.commands import validate_cluster
from palsgd.harness.machinery.netem import preflight


def test_full_suite_changes_one_thing_at_a_time_from_the_base():
    cases = validate_cluster.cases(quick=False)
    base = validate_cluster.BASE
    assert cases[0] == base and base.ranks == 8 and len({c.name for c in cases}) == len(cases)
    fields = ("workload", "nodes", "ranks_per_node", "link", "sync_every", "variability", "replica_group")
    for case in cases[1:]:
        changed = {f for f in fields if getattr(case, f) != getattr(base, f)}
        assert len(changed - {"ranks_per_node"}) == 1, (case.name, changed)
        assert case.ranks >= 8
    assert {c.nodes for c in cases} == {2, 4}
    assert {c.link for c in cases} == {"rate=1gbit,delay=5ms", "rate=100mbit,delay=10ms"}
    assert {c.sync_every for c in cases} == {4, 8, 16}
    assert {dict(c.variability).get("jitter_cv") for c in cases} >= {0.1, 0.3}


def test_payloads_are_gpt_neo_8m_and_about_100_MB():
    payloads = {4 * validate_cluster.case_experiment(c).workload.params for c in validate_cluster.cases(quick=False)}
    assert min(payloads) == 4 * 8_054_656 and 90e6 < max(payloads) < 110e6


def test_case_experiment_is_emulated_with_the_case_variability_only():
    case = next(c for c in validate_cluster.cases(quick=False) if c.name == "slow-worker-1.5x")
    exp = validate_cluster.case_experiment(case)
    assert exp.train.compute == "emulated" and exp.repeats == validate_cluster.SEEDS
    assert (exp.cluster.nodes, exp.cluster.gpus_per_node) == (2, 4)
    assert exp.cluster.compute.step_time_s == validate_cluster.COMPUTE_S
    v = exp.cluster.variability
    assert (v.slow_workers, v.slow_factor, v.jitter_cv, v.straggler_prob) == (1, 1.5, 0.0, 0.0)
    assert {a.sync_every for a in exp.algorithms if a.is_local} == {4}


def test_a_case_may_train_in_replica_groups():
    import dataclasses

    case = dataclasses.replace(validate_cluster.BASE, label="groups-node", replica_group="node")
    exp = validate_cluster.case_experiment(case)
    assert {exp.group_size(a) for a in exp.algorithms if a.is_local} == {4}
    assert exp.group_size(exp.algorithm("ddp")) == 1 and case.describe()["replica_group"] == "node"


def test_cluster_suite_refuses_no_emulation(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "palsgd.cli", "validate", "--suite", "cluster", "--no-emulation",
                           "--out", str(tmp_path / "v")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--no-emulation" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "v").exists()


@pytest.mark.netns
@pytest.mark.slow
def test_quick_cluster_case_end_to_end(tmp_path):
    try:
        preflight(need_delay_program=True)
    except ConfigError as err:
        pytest.skip(str(err))
    out = tmp_path / "v"
    # time-dilated, as the full suite is run (docs/validation.md): the case CI keeps of it
    proc = subprocess.run([sys.executable, "-m", "palsgd.cli", "validate", "--suite", "cluster", "--quick",
                           "--time-dilation", "2", "--out", str(out)], capture_output=True, text=True, timeout=900,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = pd.read_csv(out / "comparison.csv")
    assert set(table["algorithm"]) == {"ddp", "diloco"} and (table["measured"] > 0).all()
    run = out / "cases" / "quick-2x2-1gbit" / "run"
    steps = pd.read_parquet(run / "steps.parquet")
    assert steps["worker"].nunique() == 4
    compute = steps[steps["phase"] == "compute"]
    # Emulated compute: each step sleeps c (0.2 s); the host adds little on top.
    assert 0.19 < (compute["end_s"] - compute["start_s"]).median() < 0.3
    profile = (out / "cases" / "quick-2x2-1gbit" / "profile" / "cluster.toml").read_text()
    assert "[cluster.intra_node]" in profile and "[cluster.inter_node]" in profile
    assert "target step_time_mean_s" in proc.stdout and "time dilation 2x" in proc.stdout
    assert json.loads((run / "manifest.json").read_text())["time_dilation"] == 2.0


def test_eager_delay_case_runs_diloco_beside_a_whole_round_of_delay():
    case = next(c for c in validate_cluster.cases(quick=False) if c.name == "eager-delay-2x4-1gbit")
    exp = validate_cluster.case_experiment(case)
    spec = exp.algorithm("streaming_diloco")
    assert (spec.fragments, spec.fragment_sync_delay, spec.eager_outer) == (1, spec.sync_every, True)
    assert exp.algorithm("diloco").sync_every == spec.sync_every == 8
    # The other cases keep Streaming DiLoCo's P = 2, tau = 1.
    assert validate_cluster.case_experiment(validate_cluster.BASE).algorithm("streaming_diloco").fragments == 2


def test_sparseloco_runs_in_a_case_of_its_own():
    with_it = [c.name for c in validate_cluster.cases(quick=False) if "sparseloco" in c.algorithms]
    assert with_it == ["sparseloco-2x4-100mbit"]
    case = next(c for c in validate_cluster.cases(quick=False) if c.name == with_it[0])
    spec = validate_cluster.case_experiment(case).algorithm("sparseloco")
    assert (spec.payload_dtype, spec.topk_density) == ("int2", 0.02)


def test_the_balanced_case_is_the_slow_worker_case_with_a_balanced_h():
    cases = {c.name: c for c in validate_cluster.cases(quick=False)}
    balanced, fixed = cases["balanced-slow-1.5x"], cases["slow-worker-1.5x"]
    assert dataclasses.replace(balanced, label=fixed.label, balanced=False) == fixed
    exp = validate_cluster.case_experiment(balanced)
    local = [a for a in exp.algorithms if a.is_local]
    assert {(a.sync_every, a.sync_balanced) for a in local} == {(4, True)} and balanced.describe()["balanced"]
