"""kill -9 of `palsgd run` mid-run: no orphan ranks, and `palsgd report` says "interrupted at step N"."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from palsgd.core.procs import pid_alive


def _palsgd(*args, **kwargs):
    return [sys.executable, "-m", "palsgd.cli", *args]


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.split("\n"):
        if line.strip():
            p, pp = map(int, line.split())
            children.setdefault(pp, []).append(p)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_kill_9_of_the_launcher_leaves_a_readable_interrupted_folder(tmp_path):
    out = tmp_path / "run"
    launcher = subprocess.Popen(
        _palsgd("run", "--workload", "gpt-tiny", "--nproc-per-node", "2", "--algorithms", "ddp", "--steps", "400",
                "--out", str(out), "--set", "train.eval_every=0"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    family: list[int] = []
    try:
        rank_file = out / "ranks" / "ddp" / "rank0.steps.parquet"
        _wait_for(rank_file.exists, 240, "the first periodic rank file")
        family = _descendants(launcher.pid)
        assert family, "torchrun and its ranks should be running"
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=30)
        _wait_for(lambda: not any(pid_alive(p) for p in family), 60, "the ranks to die with the launcher")
    finally:  # whatever happened, leave nothing running
        for pid in [launcher.pid, *family]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    assert json.loads((out / "manifest.json").read_text())["status"] == "running"  # nobody could finish it
    report = tmp_path / "report.html"
    r = subprocess.run(_palsgd("report", str(out), "-o", str(report)), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    html = report.read_text()
    match = re.search(r"interrupted at step (\d+)", html)
    assert match, "the report must say the run was interrupted and where"
    assert 0 <= int(match.group(1)) < 400
