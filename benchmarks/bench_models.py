"""Model zoo figures: parameters, tensors, payload and FLOPs of every workload preset (exact, built on
the meta device), then single-process CPU step times measured with ``real.profile_compute``.

    .venv/bin/python benchmarks/bench_models.py [--threads 1] [--steps 20] [--big]

``--big`` also times GPT-Neo-8M and a CIFAR ResNet-20 at 32x32 with small batches (tens of seconds).
"""

from __future__ import annotations

import argparse
import platform

import torch

from palsgd.core import presets
from palsgd.core.config import load
from palsgd.real.models import build_model, count_params, count_tensors
from palsgd.real.profile_compute import measure_compute

TIMED = {"gpt-tiny": [], "resnet-tiny": []}
BIG = {"gpt-neo-8m": ["workload.batch_per_worker=4", "workload.data.source=synthetic"],
       "resnet-tiny": ["workload.model.image_size=32", "workload.model.in_channels=3",
                       "workload.data.source=synthetic"]}


def sizes() -> None:
    print(f"{'preset':<20} {'model':<34} {'params':>13} {'tensors':>8} {'fp32 MB':>9} {'GFLOP/sample':>13}")
    for name in presets.names("workload"):
        wl = load(workload=name).workload
        with torch.device("meta"):
            model = build_model(wl.model)
        m = wl.model
        shape = (f"gpt_neo h{m.hidden} L{m.layers} T{m.seq_len} V{m.vocab}" if m.family == "gpt_neo"
                 else f"resnet {m.variant} {m.image_size}px {m.num_classes} classes")
        n = count_params(model)
        print(f"{name:<20} {shape:<34} {n:>13,} {count_tensors(model):>8} {4 * n / 1e6:>9.2f} "
              f"{wl.flops_per_sample / 1e9:>13.4f}")


def step_times(cases: dict[str, list[str]], steps: int) -> None:
    print(f"\nsingle process, {torch.get_num_threads()} thread(s), {platform.machine()}, torch {torch.__version__}; "
          f"medians of {steps} steps (ms)")
    print(f"{'preset':<14} {'batch':>5} {'fwd+bwd':>9} {'cv':>6} {'optim':>8} {'pseudo':>8} {'outer':>8} "
          f"{'data':>7} {'GFLOP/s':>8}")
    for name, extra in cases.items():
        exp = load(workload=name, overrides=["cluster.nodes=1", *extra])
        r = measure_compute(exp, steps=steps, warmup=3)
        wl = exp.workload
        samples = wl.batch_per_worker * wl.grad_accum
        rate = wl.flops_per_sample * samples / r["step_time_s"] / 1e9
        label = name if not extra else f"{name}*"
        print(f"{label:<14} {samples:>5} {1e3 * r['step_time_s']:>9.1f} {r['step_time_cv']:>6.3f} "
              f"{1e3 * r['optimizer_time_s']:>8.2f} {1e3 * r['pseudo_sync_time_s']:>8.3f} "
              f"{1e3 * r['outer_step_time_s']:>8.3f} {1e3 * r['data_time_s']:>7.2f} {rate:>8.1f}")
    if any(cases.values()):
        print("* with overrides: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in cases.items() if v))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: one core)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--big", action="store_true", help="also GPT-Neo-8M and a 32x32 ResNet-20")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sizes()
    step_times(TIMED, args.steps)
    if args.big:
        step_times(BIG, max(3, args.steps // 4))


if __name__ == "__main__":
    main()
