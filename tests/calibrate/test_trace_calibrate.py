"""`palsgd calibrate --from-trace` on real PyTorch profiler traces (tests/data/traces, from HTA's tests)."""

import dataclasses
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from palsgd.cli import main
from palsgd.core import config
from palsgd.harness.machinery import kineto_stream, kineto_trace, trace_calibrate
from palsgd.sim.costs import bucket_times

TRACES = Path(__file__).parent.parent / "data" / "traces"
A100X2 = TRACES / "a100x2_ddp_rank0.json.gz"
A100X8 = TRACES / "a100x8_rank3.json.gz"


def raw(path):
    with gzip.open(path, "rt") as f:
        return json.load(f)


def test_the_streaming_reader_sees_what_json_load_sees(monkeypatch):
    whole = raw(A100X2)
    # A chunk of 1000 characters cuts events, keys and numbers everywhere: every refill path runs.
    monkeypatch.setattr(kineto_stream, "CHUNK_CHARS", 1000)
    seen = []
    meta = kineto_stream.read(A100X2, seen.append)
    assert seen == whole["traceEvents"]
    assert meta == {k: v for k, v in whole.items() if k != "traceEvents"}


def test_ddp_buckets_carry_the_kernels_sizes():
    trace = kineto_trace.load(A100X2)
    assert (trace.rank, trace.world_size, trace.gpu) == (0, 2, "NVIDIA A100-PG509-200")
    assert [s.name for s in trace.steps] == ["ProfilerStep#4", "ProfilerStep#5", "ProfilerStep#6"]
    # The kernels' own arguments, read independently: In msg nelems of each fp32 all-reduce kernel, by start.
    kernels = sorted((e["ts"], e["args"]["In msg nelems"] * 4) for e in raw(A100X2)["traceEvents"]
                     if e.get("cat") == "kernel" and "AllReduce" in e["name"])
    got = [c.nbytes for s in trace.steps for c in s.of("allreduce")]
    assert got == [b for _, b in kernels]
    for s in trace.steps:
        assert len(s.of("allreduce")) == 5 and len(s.of("broadcast")) == 2
        assert 0 < s.allreduce_exposed_s <= s.allreduce_s
        assert 0 < s.compute_s < s.step_s and 0 < s.optimizer_s < s.compute_s


def test_sizes_from_the_launching_ops_input_dims():
    # This trace's kernels have no size arguments; nccl:all_reduce's Input Dims are [[45310188]], [[267040]],
    # [[4432073]] floats each step.
    trace = kineto_trace.load(A100X8)
    assert (trace.rank, trace.world_size) == (3, 8)
    for s in trace.steps:
        assert [c.nbytes for c in s.of("allreduce")] == [45310188 * 4, 267040 * 4, 4432073 * 4]
        assert len(s.of("other")) == 7  # the all-to-all's send/receive kernels: not DDP's


def test_profile_from_a_trace_alone_loads_and_folds_the_efficiency_into_the_link(tmp_path):
    out = tmp_path / "p.toml"
    result = CliRunner().invoke(main, ["calibrate", "--from-trace", str(A100X2), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "5 bucket all-reduces [7.8, 30.0, 25.0, 25.3, 9.3] MiB" in result.output
    cluster = config.load(cluster=str(out)).cluster
    steps = kineto_trace.load(A100X2).steps
    assert (cluster.nodes, cluster.gpus_per_node, cluster.transport.ddp_bucket_efficiency) == (1, 2, 1.0)
    assert cluster.compute.step_time_s == pytest.approx(np.mean([s.compute_s for s in steps]))
    assert cluster.compute.data_time_s == pytest.approx(np.mean([s.rest_s for s in steps]))
    # Least squares in seconds with a constant: the fitted buckets add up to the measured ones.
    sizes, times = trace_calibrate.buckets([kineto_trace.load(A100X2)])
    assert bucket_times(cluster, sizes).sum() == pytest.approx(times.sum(), rel=1e-6)
    assert cluster.transport.base_latency_us > 0 and cluster.transport.step_overhead_us == 0


def test_bucket_efficiency_against_a_flat_profile_reproduces_the_measured_bucket_time(tmp_path):
    out = tmp_path / "p.toml"
    result = CliRunner().invoke(main, ["calibrate", "--from-trace", str(A100X8), "--cluster", "a100-1x8-nvlink",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    cluster = config.load(cluster=str(out)).cluster
    f = cluster.transport.ddp_bucket_efficiency
    assert 0 < f < 1  # slower than the preset's flat all-reduce on NVLink
    sizes, times = trace_calibrate.buckets([kineto_trace.load(A100X8)])
    assert bucket_times(cluster, sizes).sum() == pytest.approx(times.sum(), rel=1e-3)
    flat = dataclasses.replace(cluster, transport=dataclasses.replace(cluster.transport, ddp_bucket_efficiency=1.0))
    assert bucket_times(flat, sizes).sum() < times.sum()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _no_steps(tmp_path):
    trace = raw(A100X2)
    trace["traceEvents"] = [e for e in trace["traceEvents"] if not str(e.get("name", "")).startswith("ProfilerStep")]
    return _write(tmp_path / "nosteps.json", json.dumps(trace))


def _truncated(tmp_path):
    with gzip.open(A100X2, "rt") as f:
        text = f.read()
    return _write(tmp_path / "cut.json", text[: len(text) // 2])


@pytest.mark.parametrize("make, says", [
    (lambda tmp: TRACES / "cpu_only_rank34.json.gz", "has no GPU kernels"),
    (_no_steps, "has no ProfilerStep#N ranges"),
    (_truncated, "is truncated"),
    (lambda tmp: _write(tmp / "junk.json", "hello, world"), "not a JSON object"),
    (lambda tmp: _write(tmp / "list.json", "[1, 2]"), "not a JSON object"),
    (lambda tmp: _write(tmp / "bad.json", '{"traceEvents": [{"a": 1} {"b": 2}]}'), "is not valid JSON"),
    (lambda tmp: _write(tmp / "none.json", '{"schemaVersion": 1}'), "has no traceEvents"),
    (lambda tmp: TRACES / "a100x16_sendrecv_rank0.json.gz", "has no NCCL all-reduce kernels"),
    (lambda tmp: TRACES / "v100x2_nosizes_rank1.json.gz", "carry no sizes"),
])
def test_a_trace_that_cannot_be_used_is_one_line_and_exit_2(tmp_path, make, says):
    path = make(tmp_path)
    out = tmp_path / "p.toml"
    result = CliRunner().invoke(main, ["calibrate", "--from-trace", str(path), "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and says in lines[0], result.output
    assert not out.exists()


def test_a_folder_is_read_file_by_file_and_must_hold_one_job(tmp_path):
    folder = tmp_path / "traces"
    folder.mkdir()
    for src in (A100X2, A100X8):
        (folder / src.name).write_bytes(src.read_bytes())
    out = tmp_path / "p.toml"
    result = CliRunner().invoke(main, ["calibrate", "--from-trace", str(folder), "--out", str(out)])
    assert result.exit_code == 2 and "traces of different world sizes [2, 8]" in result.output
    (folder / A100X8.name).unlink()
    result = CliRunner().invoke(main, ["calibrate", "--from-trace", str(folder), "--out", str(out)])
    assert result.exit_code == 0 and out.exists(), result.output
