"""The report opens in a real headless Chromium, offline, without console errors, and is not blank.

Needs the Debian ``chromium`` package. Skipped when it is absent, except in CI (``CI=true``), where a
missing browser is a failure. With ``PALSGD_SAVE_SCREENSHOT`` set, the screenshot is also saved to
``docs/img/report.png`` (the one in the docs).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--hide-scrollbars")
# What Chromium logs for a page's console.error, an uncaught exception or a resource it could not load.
CONSOLE_ERROR = re.compile(r"CONSOLE.*(error|Uncaught|Failed to load)|ERR_FILE_NOT_FOUND|net::ERR_", re.I)
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "report.png"


def need_chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed (apt-get install chromium) but CI=true")
        pytest.skip("chromium is not installed")
    return CHROMIUM


def screenshot(page: Path, shot: Path, tmp_path: Path, height: int = 2400) -> list[str]:
    """Open ``page``, save a 1280-wide screenshot; return the console-error lines Chromium logged."""
    profile = tmp_path / f"profile-{shot.stem}"
    profile.mkdir()
    proc = subprocess.run([need_chromium(), *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                           f"--window-size=1280,{height}", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    return [line for line in proc.stderr.splitlines() if CONSOLE_ERROR.search(line)]


def test_console_errors_are_detected(tmp_path):
    """The detector itself: a page with a console error and a missing image must be caught."""
    page = tmp_path / "broken.html"
    page.write_text('<html><body><p>x</p><img src="missing.png"><script>console.error("boom")</script>'
                    "</body></html>")
    assert screenshot(page, tmp_path / "broken.png", tmp_path, height=300)


def test_report_in_headless_chromium(render, sim_folder, sweep_folder, run_folder, validate_folder, tmp_path):
    need_chromium()
    report, doc = render(sim_folder, sweep_folder, run_folder, validate_folder)
    html = report.read_text(encoding="utf-8")
    assert not re.search(r"<(script|link|iframe)\b|(src|href)=\"https?:", html)  # nothing to fetch
    shot = tmp_path / "report.png"
    errors = screenshot(report, shot, tmp_path)
    assert not errors, errors
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert pixels.shape[:2] == (2400, 1280)
    ink = (pixels < 235).any(axis=2).mean()
    assert ink > 0.05, f"page looks blank: {ink:.1%} non-white pixels"
    palsgd_green = np.array([0x02, 0x9E, 0x73])
    assert (np.abs(pixels - palsgd_green).sum(axis=2) < 30).sum() > 500  # the figures' colours are drawn
    if os.environ.get("PALSGD_SAVE_SCREENSHOT"):
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_SCREENSHOT)
    assert len(doc.svgs) >= 7
