"""kill -9 of `palsgd run` just as its ranks start: none may survive (they must not wait for torch to load
before asking to die with their parent, nor start once their parent is gone)."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _processes_naming(text: str) -> list[int]:
    """Pids of the processes whose command line contains ``text`` (here: the run's unique folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if text in argv:
                    found.append(int(proc.name))
    return found


def _ranks(out: Path) -> list[int]:
    """The rank processes of the run in ``out`` (not its launcher nor its torchrun agent)."""
    ranks = []
    for pid in _processes_naming(str(out)):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"palsgd.real.entry" in argv and b"torch.distributed.run" not in argv:
                ranks.append(pid)
    return ranks


@pytest.mark.slow
def test_kill_9_of_the_launcher_as_the_ranks_appear_leaves_no_rank(tmp_path):
    out = tmp_path / "run"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "palsgd.cli", "run", "--workload", "gpt-tiny", "--nproc-per-node", "2",
         "--algorithms", "ddp", "--steps", "400", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not _ranks(out):
            assert launcher.poll() is None and time.monotonic() < deadline, "no rank started"
            time.sleep(0.02)
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=30)
        deadline = time.monotonic() + 30  # far less than the rendezvous timeout an orphan would wait for
        while _processes_naming(str(out)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes_naming(str(out)) == [], "ranks outlived their launcher"
    finally:  # whatever happened, leave nothing running
        for pid in [launcher.pid, *_processes_naming(str(out))]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_rank_whose_torchrun_agent_is_gone_does_not_start():
    # Started by pytest, the rank sees the parent a re-parented orphan would see: not a torchrun agent.
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "palsgd.real.entry", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "torchrun agent is gone" in r.stderr
    assert " torch\n" not in r.stderr  # it stopped before importing torch (-X importtime lists imports)
