"""Reading a large PyTorch profiler trace: time and peak memory of ``harness/kineto_trace.load``.

Writes a synthetic Kineto trace of about ``--mb`` megabytes (uncompressed JSON, the size a profiler writes for
a few steps of a large model): ProfilerStep ranges, each with CPU ops, CUDA launches, compute kernels on one
stream and DDP's NCCL all-reduce kernels with their size arguments on another, all events as the profiler
writes them. Then reads it in a fresh process (so the peak resident memory is the reader's alone) and prints
the time, the peak RSS and what was found. The target (issue 22): a 100 MB trace in under 2 GB.

Run: ``.venv/bin/python benchmarks/bench_trace.py [--mb 100] [--gz]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KERNELS_PER_STEP = 2000
BUCKETS_PER_STEP = 8
FIRST_BUCKET = KERNELS_PER_STEP // 3  # the backward's buckets, spread over its last two thirds
BUCKET_EVERY = (KERNELS_PER_STEP - FIRST_BUCKET) // BUCKETS_PER_STEP


def step_events(step: int, t0: float) -> list[dict]:
    """One step of 2000 compute kernels and 8 bucket all-reduces, each launched by a runtime call inside a
    CPU op, as Kineto writes them."""
    out = [{"ph": "X", "cat": "user_annotation", "name": f"ProfilerStep#{step}", "pid": 1, "tid": 1, "ts": t0,
            "dur": 100_000.0, "args": {"External id": step}}]
    for k in range(KERNELS_PER_STEP):
        corr = step * 10_000 + k
        ts = t0 + 10 + k * 45.0
        nccl = k >= FIRST_BUCKET and (k - FIRST_BUCKET) % BUCKET_EVERY == 0 and \
            (k - FIRST_BUCKET) // BUCKET_EVERY < BUCKETS_PER_STEP
        out.append({"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": ts, "dur": 8.0,
                    "args": {"External id": corr, "Record function id": 0, "Ev Idx": corr,
                             "Input Dims": [[1024, 1024], [1024, 1024]], "Input type": ["float", "float"]}})
        out.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": ts + 1,
                    "dur": 5.0, "args": {"External id": corr, "cbid": 211, "correlation": corr}})
        args = {"External id": corr, "queued": 0, "device": 0, "context": 1, "stream": 20 if nccl else 7,
                "correlation": corr, "registers per thread": 96, "shared memory": 0, "grid": [108, 1, 1],
                "block": [256, 1, 1], "est. achieved occupancy %": 50}
        if nccl:
            args.update({"Collective name": "allreduce", "In msg nelems": 6_553_600, "dtype": "Float",
                         "Group size": 8})
        name = ("ncclKernel_AllReduce_RING_LL_Sum_float(ncclDevComm*, unsigned long, ncclWork*)" if nccl
                else "ampere_sgemm_128x64_tn")
        out.append({"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": args["stream"], "ts": ts + 20,
                    "dur": 40.0, "args": args})
    return out


def write_trace(path: Path, megabytes: float, gz: bool) -> int:
    """Write steps until the file holds ``megabytes`` of JSON; return the number of steps."""
    opener = gzip.open if gz else open
    target, written, step = megabytes * 1e6, 0, 0
    with opener(path, "wt") as f:
        head = {"schemaVersion": 1, "deviceProperties": [{"id": 0, "name": "synthetic GPU"}] * 8,
                "distributedInfo": {"backend": "nccl", "rank": 0, "world_size": 8}}
        f.write(json.dumps(head)[:-1] + ', "traceEvents": [\n')
        first = True
        while written < target:
            for e in step_events(step, step * 100_000.0):
                line = ("" if first else ",\n") + json.dumps(e)
                f.write(line)
                written += len(line)
                first = False
            step += 1
        f.write('\n], "traceName": "synthetic"}\n')
    return step


def read_in_child(path: Path) -> None:
    from palsgd.harness.machinery.kineto_trace import load

    start = time.perf_counter()
    trace = load(path)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    buckets = sum(len(s.of("allreduce")) for s in trace.steps)
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "steps": len(trace.steps), "buckets": buckets}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100.0, help="uncompressed size of the trace, MB")
    parser.add_argument("--gz", action="store_true", help="write it gzipped (.json.gz)")
    parser.add_argument("--read", type=Path, help=argparse.SUPPRESS)  # the child's side
    args = parser.parse_args()
    if args.read:
        read_in_child(args.read)
        return
    with tempfile.TemporaryDirectory(prefix="palsgd-bench-trace-") as tmp:
        path = Path(tmp) / ("trace.json.gz" if args.gz else "trace.json")
        steps = write_trace(path, args.mb, args.gz)
        size = path.stat().st_size
        child = subprocess.run([sys.executable, __file__, "--read", str(path)], capture_output=True, text=True,
                               check=True)
        got = json.loads(child.stdout)
    print(f"trace: {args.mb:.0f} MB of JSON ({size / 1e6:.1f} MB on disk{', gzipped' if args.gz else ''}), "
          f"{steps} steps written")
    print(f"read: {got['seconds']:.1f} s, peak RSS {got['peak_rss_mb']:.0f} MB, {got['steps']} steps and "
          f"{got['buckets']} bucket all-reduces found (target: peak < 2048 MB)")


if __name__ == "__main__":
    main()
