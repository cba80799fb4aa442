"""Helpers for tests/multinode: `palsgd run` launchers standing for the nodes of one job, on this machine."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

PALSGD = str(Path(sys.executable).parent / "palsgd")
TINY_RUN = ["--workload", "gpt-tiny", "--steps", "5", "--algorithms", "ddp,local_sgd",
            "--set", "algorithm.warmup_steps=1", "--set", "algorithm.sync_every=2",
            "--set", "train.threads_per_rank=1", "--set", "train.eval_batches=1", "--timeout-s", "15"]
"""Two algorithms of five steps each (two c10d rendezvous), short enough for two busy cores."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, *, node_rank: int, endpoint: str, nnodes: int = 2) -> subprocess.Popen:
    """One node's launcher: ``palsgd run --nnodes 2 --nproc-per-node 1 --node-rank R``."""
    argv = [PALSGD, "run", *TINY_RUN, "--nnodes", str(nnodes), "--nproc-per-node", "1",
            "--node-rank", str(node_rank), "--rdzv-endpoint", endpoint, "--out", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout_s: float = 300) -> tuple[int, str]:
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    return proc.returncode, output
