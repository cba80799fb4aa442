"""Progress output off a terminal (CI logs, pipes) is plain lines, never a redrawn bar."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

from palsgd.harness.machinery.progress import Progress

LINE = re.compile(r"^(?P<what>\w+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+) \(\d+%\), \d+ s elapsed"
                  r"(, ETA \S+ \w+)?$")


def test_plain_lines_off_a_terminal():
    out = io.StringIO()
    with Progress(5, "sweep", stream=out, every_s=0) as progress:
        for _ in range(5):
            progress.update(1)
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert all(LINE.match(line) for line in lines), lines
    assert [int(LINE.match(line)["done"]) for line in lines] == [1, 2, 3, 4, 5]
    assert "ETA" in lines[0] and "ETA" not in lines[-1]


def test_quick_work_and_failures_print_nothing():
    out = io.StringIO()
    with Progress(3, "sweep", stream=out, every_s=60) as progress:
        progress.update(3)
    assert out.getvalue() == ""
    out = io.StringIO()
    try:
        with Progress(3, "sweep", stream=out, every_s=0) as progress:
            raise KeyError("boom")
    except KeyError:
        pass
    assert out.getvalue() == ""  # the error message stands alone


def test_sweep_command_writes_line_based_progress_to_a_pipe():
    env = {**os.environ, "PALSGD_PROGRESS_EVERY_S": "0"}
    r = subprocess.run([sys.executable, "-m", "palsgd.cli", "sweep", "--workload", "gpt-neo-8m", "--steps", "300",
                        "--algorithms", "ddp,local_sgd", "--vary", "algorithm.sync_every=5,10,20", "--jobs", "1"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines and "\r" not in r.stderr
    assert all(LINE.match(line) and line.startswith("sweep: ") for line in lines), lines
    assert lines[-1].startswith("sweep: 3/3 points (100%)")
