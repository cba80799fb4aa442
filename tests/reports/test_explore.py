"""The what-if page: its grid data, the page `palsgd report` writes for a two-field sweep, and the page in a
real headless Chromium, where moving a slider must show the simulator's own number for that point."""

from __future__ import annotations

import html
import importlib.util
import itertools
import json
import re
import subprocess
from pathlib import Path

import pytest

from palsgd.core import config
from palsgd.reports.explore import payload

BROWSER_TEST = Path(__file__).with_name("test_report_browser.py")


def _browser():
    """The Chromium helpers of the report's browser test (importlib mode cannot import a sibling module)."""
    spec = importlib.util.spec_from_file_location("report_browser", BROWSER_TEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _explore_page(report: Path) -> Path:
    link = re.search(r'href="([^"]+\.explore\.html)"', report.read_text(encoding="utf-8"))
    assert link, "the report of a two-field sweep links no explore page"
    return report.parent / html.unescape(link.group(1))


def test_grid_cells_are_the_sweep_means_in_row_major_order(sweep_folder):
    import pandas as pd

    sweep = pd.read_csv(sweep_folder / "sweep.csv")
    keys = ["cluster.inter_node.bandwidth_gbps", "algorithm.palsgd.sync_every"]
    data = payload(sweep, keys)
    names = [a["name"] for a in data["algorithms"]]
    assert [len(a["values"]) for a in data["axes"]] == [4, 2]
    for flat, combo in enumerate(itertools.product(*(a["values"] for a in data["axes"]))):
        rows = sweep[(sweep[keys[0]] == combo[0]) & (sweep[keys[1]] == combo[1])]
        for a, name in enumerate(names):
            runs = rows[rows["algorithm"] == name]
            assert data["cells"][flat][a][0] == pytest.approx(runs["speedup_vs_ddp"].mean(), rel=1e-12)
            assert data["cells"][flat][a][1] == pytest.approx(runs["wall_clock_s"].mean(), rel=1e-12)


def test_one_varied_field_gets_no_explore_page(render, sim_folder):
    report, _ = render(sim_folder)
    assert "explore.html" not in report.read_text(encoding="utf-8")


PROBE = """<script>
const read = () => document.querySelector('td.speedup[data-algorithm="palsgd"]').textContent;
const before = read();
for (const [key, index] of Object.entries(%s)) {
  const slider = document.querySelector(`input[data-key="${key}"]`);
  slider.value = index;
  slider.dispatchEvent(new Event("input"));
}
const probe = document.createElement("pre");
probe.id = "probe";
const bandwidth = document.getElementById("value-0").textContent;
probe.textContent = JSON.stringify({before: before, after: read(), bandwidth: bandwidth});
document.body.appendChild(probe);
</script>
</body>"""


@pytest.mark.browser
def test_moving_a_slider_shows_the_simulated_speedup(render, sweep_folder, tmp_path):
    from palsgd.sim.engine import simulate

    browser = _browser()
    chromium = browser.need_chromium()
    report, _ = render(sweep_folder)
    page = _explore_page(report)
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)=\"?https?:|<(link|iframe)\b", text)  # nothing to fetch: works offline
    # the page opens in the grid's middle (50 Gb/s, H = 16); move to 10 Gb/s (index 1 of 2, 10, 50, 200) and
    # PALSGD's H = 1 (index 0 of 1, 16): a point whose flat index differs in row- and column-major order
    moved = tmp_path / "moved.html"
    moved.write_text(text.replace("</body>", PROBE % json.dumps(
        {"cluster.inter_node.bandwidth_gbps": 1, "algorithm.palsgd.sync_every": 0})), encoding="utf-8")
    profile = tmp_path / "profile"
    proc = subprocess.run([chromium, *browser.FLAGS, f"--user-data-dir={profile}", "--dump-dom", moved.as_uri()],
                          capture_output=True, text=True, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if browser.CONSOLE_ERROR.search(line)]
    assert not errors, errors
    probe = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert probe, proc.stdout[-2000:]
    shown = json.loads(html.unescape(probe.group(1)))

    # the simulator, run again here for that one point from the sweep's own experiment
    manifest = json.loads((sweep_folder / "manifest.json").read_text(encoding="utf-8"))
    point = config.with_changes(config.from_dict(manifest["experiment"]), [
        ("test", {"cluster": {"inter_node": {"bandwidth_gbps": 10}}, "algorithm": {"palsgd": {"sync_every": 1}}})])
    runs = simulate(point).runs
    expected = runs[runs["algorithm"] == "palsgd"]["speedup_vs_ddp"].mean()
    assert shown["bandwidth"] == "10 Gb/s"
    assert shown["after"] == f"{expected:.3f}×"
    assert shown["before"] != shown["after"]  # the slider changed what is shown
