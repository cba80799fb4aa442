"""Quantize/dequantize cost of a quantized sync: the real harness's torch emulation (``real/quantize.py``)
measured, next to the simulator's formula (``sim/costs.quantize_time``) at this machine's measured
memory bandwidth.

Per payload dtype, for n elements: one quantize of n, W dequantizes of n/W, one quantize of n/W and W
dequantizes of n/W (what ``real/dist._QuantizedMean`` does besides communicating), timed best of 5.

Run: ``.venv/bin/python benchmarks/bench_quantize.py [--elements N] [--world W]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from palsgd.core.buckets import QUANT_BLOCK, QUANTIZED
from palsgd.real.quantize import dequantize, quantize
from palsgd.sim.costs import QUANTIZE_PASSES


def best_s(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def sync_work(x: torch.Tensor, dtype: str, world: int) -> None:
    chunk = x.numel() // world
    parts = [quantize(p, dtype) for p in x.split(chunk)]
    total = sum(dequantize(p, chunk, dtype) for p in parts)
    mine = quantize(total / world, dtype)
    for _ in range(world):
        dequantize(mine, chunk, dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=1 << 22)
    parser.add_argument("--world", type=int, default=2)
    args = parser.parse_args()
    n = args.elements // (args.world * QUANT_BLOCK) * args.world * QUANT_BLOCK
    x = torch.randn(n)
    copy_s = best_s(lambda: x.clone())
    bandwidth = 2 * 4 * n / copy_s  # a clone reads and writes 4n bytes
    print(f"{n:,} elements, {args.world} ranks, {torch.get_num_threads()} threads; "
          f"memory bandwidth (clone): {bandwidth / 1e9:.1f} GB/s")
    formula_s = QUANTIZE_PASSES * 4 * n / bandwidth
    for dtype in QUANTIZED:
        measured_s = best_s(lambda dtype=dtype: sync_work(x, dtype, args.world))
        print(f"{dtype:5s} measured {measured_s * 1e3:8.1f} ms  ({measured_s / n * 1e9:6.2f} ns/element)   "
              f"formula {formula_s * 1e3:6.1f} ms   measured/formula {measured_s / formula_s:6.1f}x")


if __name__ == "__main__":
    main()
