"""Record the all-reduce calls the real code makes, on 2 gloo ranks: ``python comm_calls.py OUT.pt``.

A script (not a test module) so that torch.multiprocessing can spawn its functions by path. For each
preset workload and case, rank 0 saves the byte size of every ``dist.all_reduce`` call (the one-element
barriers left out): DDP's gradient buckets in a steady-state step, one sync of each local algorithm, and
a warm-up step that also averages the optimizer state; and of every broadcast gloo makes in that step
(DDP's buffers, broadcast from C++ and so seen through the profiler).
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
import torch.distributed as dist
from gloo_ranks import spawn
from torch.profiler import ProfilerActivity, profile

from palsgd.core.algorithms import DDP_STEP, GRADIENT_STEP
from palsgd.core.config import load
from palsgd.real.algorithms import ALGORITHM_CLASSES, Setup
from palsgd.real.data import build_data
from palsgd.real.dist import PAYLOAD_DTYPES, DistContext, TorchComm, flatten_
from palsgd.real.models import build_model
from palsgd.real.optim import build_optimizer
from palsgd.real.timing import DDPCommTimer, StepTimer, ddp_timed_hook
from palsgd.real.worker import compute_loss

WORKLOADS = ("gpt-tiny", "resnet-tiny")
LOCAL = "algorithm.warmup_steps=0"  # local steps from the start
CASES = {  # name: (algorithm, overrides, kind of the recorded step)
    "ddp": ("ddp", [], DDP_STEP),
    "ddp_capped": ("ddp", ["algorithm.bucket_mib=0.2"], DDP_STEP),
    "ddp_accum": ("ddp", ["workload.grad_accum=2"], DDP_STEP),  # one micro-batch under no_sync
    "ddp_int8": ("ddp", ["algorithm.payload_dtype=int8"], DDP_STEP),  # DDP sends fp32 under a quantized payload
    "local_sgd": ("local_sgd", [LOCAL], GRADIENT_STEP),
    "diloco": ("diloco", [LOCAL], GRADIENT_STEP),
    "palsgd_bf16": ("palsgd", [LOCAL, "algorithm.payload_dtype=bf16"], GRADIENT_STEP),
    "diloco_per_tensor": ("diloco", [LOCAL, "algorithm.per_tensor_allreduce=true"], GRADIENT_STEP),
    "warmup_state": ("diloco", ["algorithm.warmup_syncs_optimizer_state=true", "algorithm.warmup_steps=3"],
                     DDP_STEP),
}
STEPS = 3  # DDP lays its buckets out anew in the second step (rank 0 broadcasts the layout): the third is recorded
ELEMENT_BYTES = {"float": 4, "long int": 8}  # the profiler's names of the buffers' dtypes


class Recorder:
    def __init__(self):
        self.calls: list[int] = []
        self._all_reduce = dist.all_reduce

    def __call__(self, tensor, *args, **kwargs):
        if tensor.numel() > 1:
            self.calls.append(tensor.numel() * tensor.element_size())
        return self._all_reduce(tensor, *args, **kwargs)


def record(rank, world, workload, algorithm, overrides, kind, recorder):
    exp = load(workload=workload, cluster="cpu-2core-gloo", overrides=overrides)
    spec = exp.algorithm(algorithm)
    torch.manual_seed(0)
    model = build_model(exp.workload.model)
    flatten_(model)
    optimizer = build_optimizer(model.parameters(), exp.train)
    ctx = DistContext(rank, world, rank, world, torch.device("cpu"), "gloo")
    comm = TorchComm(ctx, payload=spec.payload_dtype, per_tensor=spec.per_tensor_allreduce)
    cap = {} if spec.torch_bucket_cap_mb is None else {"bucket_cap_mb": spec.torch_bucket_cap_mb}
    ddp = torch.nn.parallel.DistributedDataParallel(model, **cap)
    timer = StepTimer(algorithm=algorithm, worker=rank, zero=comm.common_clock(), device=ctx.device)
    hook = DDPCommTimer(timer, PAYLOAD_DTYPES[spec.payload_dtype])
    ddp.register_comm_hook(hook, ddp_timed_hook)
    kinds = np.full(STEPS, kind)
    sync_after = np.array([False] * (STEPS - 1) + [kind == GRADIENT_STEP])
    algo = ALGORITHM_CLASSES[algorithm](Setup(
        model=model, optimizer=optimizer, spec=spec, train=exp.train, kinds=kinds, sync_after=sync_after,
        comm=comm, timer=timer, loss_fn=compute_loss, ddp=ddp, ddp_timer=hook))
    data = build_data(exp.workload, rank=rank, world_size=world, seed=0)
    for step in range(STEPS - 1):
        algo.step(step, lambda s=step: data.train_batch(s))
    recorder.calls = []
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        algo.step(STEPS - 1, lambda: data.train_batch(STEPS - 1))
    broadcasts = [math.prod(e.input_shapes[0]) * ELEMENT_BYTES[e.input_dtypes[0]]
                  for e in sorted(prof.events(), key=lambda e: e.time_range.start) if e.name == "gloo:broadcast"]
    return {"all_reduce": list(recorder.calls), "broadcast": broadcasts}


def main(rank, world, out):
    recorder = Recorder()
    dist.all_reduce = recorder
    results = {(workload, case): record(rank, world, workload, *CASES[case], recorder)
               for workload in WORKLOADS for case in CASES}
    if rank == 0:
        torch.save(results, out)


if __name__ == "__main__":
    spawn(main, 2, sys.argv[1])
