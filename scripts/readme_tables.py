"""Print the README's simulator tables, so that every number there comes from this code:

    .venv/bin/python scripts/readme_tables.py paper      # the paper's three workloads on two clusters
    .venv/bin/python scripts/readme_tables.py streaming  # PALSGD vs (Streaming) DiLoCo, fp32 vs int8

Each row is `palsgd simulate ... --repeats 5 --json`, averaged over the seeds.
"""

from __future__ import annotations

import json
import subprocess
import sys

NAMES = {"ddp": "DDP", "local_sgd": "Local SGD", "diloco": "DiLoCo", "palsgd": "PALSGD",
         "streaming_diloco": "Streaming DiLoCo"}


def simulate(*args: str) -> dict[str, dict]:
    out = subprocess.run([sys.executable, "-m", "palsgd.cli", "simulate", "--repeats", "5", "--json", *args],
                         capture_output=True, text=True, check=True).stdout
    rows: dict[str, list[dict]] = {}
    for row in json.loads(out):
        rows.setdefault(row["algorithm"], []).append(row)
    return {a: {k: sum(r[k] for r in rs) / len(rs) for k in ("wall_clock_s", "speedup_vs_ddp", "comm_exposed_s")}
            for a, rs in rows.items()}


def paper() -> None:
    algos = ["local_sgd", "diloco", "palsgd"]
    print("| workload | cluster | workers | DDP wall-clock | " + " | ".join(NAMES[a] for a in algos) + " |")
    print("|---|---|---:|---:|" + "---:|" * len(algos))
    for cluster, workers in (("a100-4x8-ib100", 32), ("a100-8x1-eth10", 8)):
        for workload in ("resnet50-imagenet", "gpt-neo-125m", "gpt-neo-8m"):
            r = simulate("--workload", workload, "--cluster", cluster)
            cells = " | ".join(f"{r[a]['speedup_vs_ddp']:.2f}x" for a in algos)
            print(f"| `{workload}` | `{cluster}` | {workers} | {r['ddp']['wall_clock_s'] / 3600:.2f} h | {cells} |")


def streaming() -> None:
    algos = ["diloco", "streaming_diloco", "palsgd"]
    base = ["--workload", "gpt-neo-125m", "--cluster", "a100-8x1-eth10", "--algorithms", "ddp," + ",".join(algos),
            "--set", "algorithm.streaming_diloco.fragments=4",
            "--set", "algorithm.streaming_diloco.fragment_sync_delay=5"]
    print("| sync payload | DDP | " + " | ".join(NAMES[a] for a in algos) + " |")
    print("|---|---:|" + "---:|" * len(algos))
    for dtype in ("fp32", "int8"):
        r = simulate(*base, "--set", f"algorithm.payload_dtype={dtype}")
        cells = " | ".join(f"{r[a]['wall_clock_s'] / 3600:.2f} h ({r[a]['speedup_vs_ddp']:.2f}x, "
                           f"{r[a]['comm_exposed_s'] / 60:.1f} min exposed)" for a in algos)
        print(f"| {dtype} | {r['ddp']['wall_clock_s'] / 3600:.1f} h | {cells} |")


if __name__ == "__main__":
    {"paper": paper, "streaming": streaming}[sys.argv[1]]()
