"""What an accelerator spends on one worker's own work: c (forward + backward), o (inner optimizer step),
u (outer step), m (pseudo-sync step). The simulator charges them, and the real harness's emulated
accelerators sleep them, so both take them from here. Each is a formula over the workload and the cluster
unless ``palsgd calibrate`` measured it (a ``*_time_s`` field > 0 wins)."""

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


def outer_step_s(workload: WorkloadSpec, compute: ComputeSpec) -> float:
    """u: ``outer_passes`` passes over 4N bytes (the outer gradient, the Nesterov buffer, z and x)."""
    return compute.outer_step_time_s or workload.outer_passes * pass_s(workload, compute)


def pseudo_sync_s(workload: WorkloadSpec, compute: ComputeSpec) -> float:
    """m: ``pseudo_sync_passes`` passes over 4N bytes (the axpy x <- x - a (x - z): read x, read z, write x)."""
    return compute.pseudo_sync_time_s or workload.pseudo_sync_passes * pass_s(workload, compute)


def pass_s(workload: WorkloadSpec, compute: ComputeSpec) -> float:
    """One pass over the 4N bytes of fp32 parameters at the memory bandwidth."""
    return 4.0 * workload.params / (compute.memory_gbytes_per_s * 1e9)
