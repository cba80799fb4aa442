"""Measure one rank's compute times with ``real.profile_compute.measure_compute`` and write them as JSON.

``harness/machinery/calibrate.py`` starts N of these at once (env LOCAL_WORLD_SIZE = N), so the ranks share the
cores as they do in a run (4 ranks on 2 cores: each step about 2.5x slower, measured here):

    python -m palsgd.real.bench_compute --experiment experiment.json --out compute_rank0.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import torch

from ..core import io
from ..core.config import from_dict
from .dist import threads_per_rank
from .profile_compute import measure_compute


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m palsgd.real.bench_compute", description=__doc__.split("\n")[0])
    ap.add_argument("--experiment", required=True, help="JSON of Experiment.to_dict()")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)

    with open(args.experiment, encoding="utf-8") as f:
        exp = from_dict(json.load(f))
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    torch.set_num_threads(threads_per_rank(0, int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
    device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    result = measure_compute(exp, steps=args.steps, device=device, rank=rank, world_size=world)
    if dataclasses.is_dataclass(result):
        result = dataclasses.asdict(result)
    io.write_json(args.out, dict(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
