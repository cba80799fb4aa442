"""Sizes from the command line: refused in one line with exit 2, or simulated within the estimate;
Ctrl-C stops a long simulation with exit 130 and a folder marked interrupted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import tracemalloc
from unittest import mock

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palsgd.cli import main
from palsgd.core.config import load
from palsgd.sim import bounds


def _invoke(argv):
    return CliRunner().invoke(main, argv)


def _refused(result, *words):
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("palsgd: error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("args", "words"), [
    (["--set", "cluster.nodes=10000000"], ["cluster.nodes = 10000000", "memory", "fewer workers"]),
    (["--set", "cluster.nodes=1000000000"], ["cluster.nodes = 1000000000", "memory"]),
    (["--steps", "1000000000000"], ["budget.steps = 1000000000000", "h of simulation"]),
    (["--repeats", "10000000"], ["repeats = 10000000", "fewer repeats"]),
    (["--cluster", "cpu-2core-gloo", "--set", "cluster.failures.mtbf_s=0.001", "--set",
      "cluster.failures.restart_s=0"], ["cluster.failures.mtbf_s = 0.001", "almost never ends"]),
])
def test_simulate_refuses_what_cannot_fit_or_end(args, words):
    _refused(_invoke(["simulate", "--workload", "gpt-tiny", *args]), *words)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("args", "words"), [
    (["--vary", "seed=0..999999"], ["1,000,000 sweep points", "split the range"]),
    (["--vary", "seed=0..99999999999999"], ["sweep points"]),
    (["--vary", "seed=0..999", "--vary", "algorithm.sync_every=1..1000"], ["1,000,000 sweep points"]),
    (["--vary", "seed=0..1", "--jobs", "-3"], ["--jobs = -3"]),
    (["--vary", "cluster.nodes=1,1000000000", "--jobs", "1"], ["cluster.nodes = 1000000000", "memory"]),
])
def test_sweep_refuses_what_cannot_fit(args, words):
    _refused(_invoke(["sweep", "--workload", "gpt-tiny", *args]), *words)


def test_failures_explanation_has_no_negative_time():
    result = _invoke(["simulate", "--workload", "gpt-tiny", "--cluster", "cpu-2core-gloo",
                      "--set", "cluster.failures.mtbf_s=0.1"])
    assert result.exit_code == 0, result.output
    drivers = [line for line in result.stdout.splitlines() if "x DDP):" in line]
    assert drivers and all(" -" not in line for line in drivers), drivers


@pytest.mark.timeout(120)
def test_ctrl_c_stops_a_long_simulation_and_marks_its_folder(tmp_path):
    out = tmp_path / "res"
    # a run of minutes; SIGINT is restored to its default in the child (a background shell ignores it)
    proc = subprocess.Popen(
        [sys.executable, "-m", "palsgd.cli", "simulate", "--workload", "gpt-tiny", "--steps", "3000000",
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    manifest = out / "manifest.json"
    deadline = time.monotonic() + 60
    while not manifest.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # inside the simulation now
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.strip() == "palsgd: interrupted" and stdout == ""
    assert json.loads(manifest.read_text())["status"] == "interrupted"


# -- fuzzing sizes -----------------------------------------------------------------------------

WORK_LIMIT_S = 0.2
"""The work limit while fuzzing: every accepted case is small (a "huge" size with few steps, such as
300,000 nodes x 12 steps, is refused too), so the cases run in minutes and in little memory."""
MEMORY_LIMIT_BYTES = 1 << 30

small_or_huge = {
    "nodes": st.one_of(st.integers(1, 4), st.integers(10**5, 10**10)),
    "steps": st.one_of(st.integers(12, 40), st.integers(10**6, 10**13)),
    "repeats": st.one_of(st.integers(1, 3), st.integers(10**4, 10**8)),
}
algorithms = st.sampled_from(["ddp", "palsgd", "ddp,local_sgd", "ddp,local_sgd,diloco,palsgd"])


def _accepted(exp) -> bounds.Estimate | None:
    try:
        return bounds.check(exp, record_steps=False, keep_totals=False)
    except Exception:
        return None


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=small_or_huge["nodes"], steps=small_or_huge["steps"], repeats=small_or_huge["repeats"],
       algos=algorithms, mtbf_s=st.sampled_from([0, 0.001, 0.05, 5.0]))
def test_random_sizes_are_refused_or_fit_their_estimate(nodes, steps, repeats, algos, mtbf_s):
    argv = ["simulate", "--workload", "gpt-tiny", "--cluster", "cpu-2core-gloo", "--algorithms", algos,
            "--steps", str(steps), "--repeats", str(repeats), "--set", f"cluster.nodes={nodes}",
            "--set", f"cluster.failures.mtbf_s={mtbf_s}", "--set", "cluster.failures.restart_s=0.5"]
    # As on a machine of 1 GiB: the accepted cases stay small, whatever this machine has free.
    with mock.patch.object(bounds, "MAX_WORK_S", WORK_LIMIT_S), \
            mock.patch.object(bounds, "available_memory_bytes", lambda: MEMORY_LIMIT_BYTES):
        tracemalloc.start()
        try:
            result = _invoke(argv)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        if result.exit_code == 2:
            _refused(result)
            return
        assert result.exit_code == 0, (argv, result.output, result.exception)
        exp = load(workload="gpt-tiny", cluster="cpu-2core-gloo", algorithms=algos.split(","), steps=steps,
                   overrides=[f"repeats={repeats}", f"cluster.nodes={nodes}", f"cluster.failures.mtbf_s={mtbf_s}",
                              "cluster.failures.restart_s=0.5"])
        est = _accepted(exp)
    assert est is not None and peak < est.peak_bytes, (argv, peak, est)


@pytest.mark.slow
@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=st.one_of(st.integers(0, 3), st.integers(10**5, 10**15)),
       nodes=st.one_of(st.just(None), st.sampled_from(["1,2", "1..4:x2", "1..100000000", "3,4000000000"])),
       jobs=st.sampled_from([None, "1", "0", "-3"]))
def test_random_sweep_ranges_are_refused_or_run(first, nodes, jobs):
    argv = ["sweep", "--json", "--workload", "gpt-tiny", "--cluster", "cpu-2core-gloo", "--algorithms", "ddp,palsgd",
            "--steps", "20", "--vary", f"seed=0..{first}"]
    argv += ["--vary", f"cluster.nodes={nodes}"] if nodes else []
    argv += ["--jobs", jobs] if jobs else ["--jobs", "1"]
    with mock.patch.object(bounds, "MAX_WORK_S", WORK_LIMIT_S):
        result = _invoke(argv)
    if result.exit_code == 2:
        _refused(result)
        return
    assert result.exit_code == 0, (argv, result.output, result.exception)
    points = (first + 1) * {None: 1, "1,2": 2, "1..4:x2": 3}[nodes]  # the other node lists are refused
    assert len(json.loads(result.stdout)) == 2 * points
