"""Checks before launch: ``python -m palsgd.real.preflight --experiment FILE --local-ranks N``.

The launcher (``harness``, which never imports torch) runs this once before torchrun, so that a
problem is one line and exit status 2 instead of a traceback from every rank. It checks, in this order:

- the number of local ranks against what the machine holds (its GPUs, or a few ranks per core);
- every algorithm's model builds (on the meta device: no memory, no time);
- rank 0's data source opens (a missing file or data set names itself);
- a rough memory estimate of the local ranks against the free memory of a GPU or of the machine.

On success it prints one line with the estimate and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from ..core.algorithms import FACTS
from ..core.config import AlgorithmSpec, Experiment, from_dict
from ..core.errors import ConfigError
from .data import build_data
from .models import build_model, compute_loss

EXIT_BAD_INPUT = 2
RANKS_PER_CORE = 4
"""CPU ranks beyond this many per core measure contention for the cores, not the algorithms."""
MIB = 2**20


def max_local_ranks() -> tuple[int, str]:
    """The most ranks this machine holds, and why."""
    if torch.cuda.is_available():
        return torch.cuda.device_count(), "one rank per GPU"
    cores = len(os.sched_getaffinity(0))
    return cores * RANKS_PER_CORE, f"{RANKS_PER_CORE} ranks per CPU core, {cores} cores"


def activation_bytes(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
    """Rough: every module's output of one micro-batch, as kept for the backward pass (meta forward)."""
    total = 0

    def count(_module, _inputs, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        compute_loss(model, tuple(t.to("meta") for t in batch))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def rank_bytes(exp: Experiment, sample: tuple[torch.Tensor, torch.Tensor] | None, batch: int = 1) -> int:
    """Rough memory of one rank: parameters, gradients, optimizer and algorithm state, activations of a
    micro-batch of ``batch`` samples like ``sample`` (none without one: emulated accelerators keep none)."""
    with torch.device("meta"):
        model = build_model(exp.workload.model)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    copies = 2 + exp.train.optimizer_state_tensors + max(map(algorithm_buffers, exp.algorithms))
    return copies * param_bytes + (0 if sample is None else batch * activation_bytes(model, sample))


def one_sample(exp: Experiment) -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
    """One training sample and the micro-batch size: activations grow with the samples, and a micro-batch
    built whole to be measured could itself be what does not fit (10^12 samples asked 8 TB here)."""
    data = build_data(exp.workload, rank=0, world_size=exp.workers, seed=exp.seed)
    return data.train.get(torch.arange(1)), data.batch


def algorithm_buffers(algo: AlgorithmSpec) -> int:
    """Parameter-sized buffers an algorithm adds: DDP's gradient buckets or Local SGD's sync buffer;
    an algorithm with an outer optimizer (DiLoCo, PALSGD) keeps the global model and its momentum instead."""
    return 2 if FACTS[algo.name].outer_step else 1


def available_bytes() -> tuple[int, str]:
    """Free memory of the first GPU, else of this machine (MemAvailable)."""
    if torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(0)
        return free, "free on each GPU"
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024, "available on this machine"


def check(exp: Experiment, local_ranks: int) -> str:
    """Raise ConfigError on the first problem; else a one-line summary."""
    limit, why = max_local_ranks()
    if local_ranks > limit:
        raise ConfigError(f"this machine holds at most {limit} local ranks ({why})", key="--nproc-per-node",
                          value=local_ranks, source="command line")
    # emulated accelerators read no data and keep no activations
    need = rank_bytes(exp, None) if exp.train.compute == "emulated" else rank_bytes(exp, *one_sample(exp))
    have, where = available_bytes()
    per_device = need if torch.cuda.is_available() else need * local_ranks
    if per_device > have:
        raise ConfigError(f"needs about {per_device / MIB:.0f} MiB ({local_ranks} ranks x {need / MIB:.0f} MiB: "
                          f"model, gradients, optimizer state, activations) but {have / MIB:.0f} MiB are "
                          f"{where}; lower workload.batch_per_worker or the ranks", key="workload",
                          value=exp.workload.name, source="preflight")
    return f"preflight: about {need / MIB:.0f} MiB per rank, {have / MIB:.0f} MiB {where}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--experiment", type=Path, required=True, help="JSON of Experiment.to_dict()")
    ap.add_argument("--local-ranks", type=int, required=True)
    args = ap.parse_args(argv)
    try:
        exp = from_dict(json.loads(args.experiment.read_text()))
        print(check(exp, args.local_ranks))
    except ConfigError as err:
        print(err.located("experiment"), file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
