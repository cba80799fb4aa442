"""c, the forward + backward time of one optimizer step: the simulator charges it, and the real harness's
emulated accelerators sleep it, so both take it from here."""

from __future__ import annotations

from .cluster import ComputeSpec
from .workload import WorkloadSpec


def step_compute_s(workload: WorkloadSpec, compute: ComputeSpec) -> float:
    """c = flops_per_sample · batch_per_worker · grad_accum / (peak · utilisation), or the measured
    ``compute.step_time_s``. The workload's own utilisation wins over the cluster's typical one (a ResNet
    reaches a lower fraction of peak than a GPT)."""
    if compute.step_time_s:
        return compute.step_time_s
    flops = workload.flops_per_sample * workload.batch_per_worker * workload.grad_accum
    return flops / (compute.peak_tflops * 1e12 * (workload.utilization or compute.utilization))


def optimizer_step_s(workload: WorkloadSpec, compute: ComputeSpec) -> float:
    """o: ``optimizer_passes`` passes over the 4N bytes of fp32 master weights at the memory bandwidth
    (the inner optimizer step is memory-bound), or the measured ``compute.optimizer_time_s``."""
    return compute.optimizer_time_s or workload.optimizer_passes * pass_s(workload, compute)


def pass_s(workload: WorkloadSpec, compute: ComputeSpec) -> float:
    """One pass over the 4N bytes of fp32 parameters at the memory bandwidth."""
    return 4.0 * workload.params / (compute.memory_gbytes_per_s * 1e9)
