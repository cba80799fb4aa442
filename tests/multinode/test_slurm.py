"""The docs' SLURM recipe, run word for word by sbatch on a one-host SLURM cluster: two tasks stand for two
nodes, one folder holds every rank."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from palsgd.harness.machinery import store

from .launchers import TINY_RUN
from .slurm_cluster import one_host_cluster, unavailable

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "slurm" / "palsgd-run.sbatch"


def docs_recipe() -> str:
    """The script between the ``slurm:recipe`` markers of docs/real-harness.md."""
    text = (ROOT / "docs" / "real-harness.md").read_text()
    found = re.search(r"<!-- slurm:recipe -->\n```bash\n(.*?)```\n<!-- /slurm:recipe -->", text, re.S)
    assert found, "docs/real-harness.md lost its slurm:recipe markers"
    return found.group(1)


def test_the_docs_show_the_script_users_submit():
    assert docs_recipe() == SCRIPT.read_text()


@pytest.mark.slow
@pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
def test_the_docs_recipe_runs_two_nodes_into_one_folder(tmp_path):
    recipe = tmp_path / "palsgd-run.sbatch"
    recipe.write_text(docs_recipe())
    out = tmp_path / "run"
    with one_host_cluster(tmp_path / "slurm") as env:
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # palsgd, as after install
        job = subprocess.run(["sbatch", "--wait", "--nodes=1", "--ntasks=2", "--cpus-per-task=1",
                              f"--output={tmp_path}/job.out", str(recipe), "1", str(out), *TINY_RUN],
                             env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    log = (tmp_path / "job.out").read_text() if (tmp_path / "job.out").exists() else ""
    assert job.returncode == 0, job.stdout + job.stderr + log
    assert log.count("measured vs predicted") == 1, log  # node 0 alone compares
    steps = pd.read_parquet(out / "steps.parquet")
    assert steps.groupby("algorithm")["worker"].unique().map(sorted).to_dict() == \
        {"ddp": [0, 1], "local_sgd": [0, 1]}
    manifest = store.read_manifest(out)
    assert manifest["status"] == "complete" and manifest["nnodes"] == 2
