"""Cut a PyTorch profiler (Kineto) trace down to a few steps and the events ``palsgd`` reads, for test data.

Usage: python scripts/cut_trace.py IN.json[.gz] OUT.json.gz [--steps N] [--skip K]

Keeps every top-level key and metadata event (ph "M"); of the timed events, those of ProfilerSteps K..K+N-1
(by start): the ProfilerStep and Optimizer.step ranges, the communication ops (nccl:*, record_param_comms,
c10d::*), the CUDA runtime and driver calls made inside those steps, and the GPU kernels, copies and
memsets those calls launched (by correlation). Other CPU ops, Python events and flow arrows are dropped:
the result is still a trace the profiler could have written with fewer activities.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

GPU = ("kernel", "gpu_memcpy", "gpu_memset")
LAUNCH = ("cuda_runtime", "cuda_driver")
KEEP_PREFIX = ("ProfilerStep#", "Optimizer.step#", "nccl:", "record_param_comms", "c10d::")


def cut(trace: dict, steps: int, skip: int) -> dict:
    events = trace["traceEvents"]
    ranges = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                    if str(e.get("name", "")).startswith("ProfilerStep#") and e.get("cat") != "gpu_user_annotation")
    kept = ranges[skip:skip + steps]
    if not kept:
        raise SystemExit(f"the trace has {len(ranges)} steps; nothing left after skipping {skip}")
    start, end = kept[0][0], kept[-1][1]

    def inside(e: dict) -> bool:
        return start <= e.get("ts", -1) < end

    launches = {e["args"]["correlation"] for e in events
                if e.get("cat") in LAUNCH and inside(e) and "correlation" in e.get("args", {})}
    out = []
    for e in events:
        cat, name = e.get("cat"), str(e.get("name", ""))
        if e.get("ph") == "M":
            out.append(e)
        elif cat in GPU:
            if e.get("args", {}).get("correlation") in launches:
                out.append(e)
        elif e.get("ph") == "X" and inside(e) and (cat in LAUNCH or name.startswith(KEEP_PREFIX)):
            out.append(e)
    return {**trace, "traceEvents": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--skip", type=int, default=0)
    args = parser.parse_args()
    opener = gzip.open if args.source.suffix == ".gz" else open
    with opener(args.source, "rt") as f:
        trace = json.load(f)
    small = cut(trace, args.steps, args.skip)
    with gzip.open(args.out, "wt", compresslevel=9) as f:
        json.dump(small, f, separators=(",", ":"))
    print(f"{args.out}: {len(small['traceEvents'])} of {len(trace['traceEvents'])} events, "
          f"{args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
