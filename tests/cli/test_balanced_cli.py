"""A word other than "balanced" for algorithm.sync_every is one line, exit status 2, before any work."""

import subprocess
import sys


def test_another_word_is_refused_in_one_line(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "palsgd.cli", "simulate", "--set", "algorithm.sync_every=balance",
                        "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and not out.exists()
    assert r.stderr.strip().splitlines()[-1].endswith(
        "algorithm.sync_every = 'balance': must be an integer >= 1 (H) or \"balanced\"")
