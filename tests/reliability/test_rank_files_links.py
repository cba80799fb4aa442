"""What a run writes and reads inside --out never goes through a link planted there (issue 26): the run's
log, a rank's heartbeat, and the rank files the launcher merges or a resumed rank reloads."""

from pathlib import Path

import pandas as pd
import pytest

from palsgd.core.errors import ConfigError
from palsgd.core.schema import METRIC_COLUMNS
from palsgd.harness.machinery.launch import _Group
from palsgd.harness.machinery.rank_files import read_heartbeats, read_rank_csv
from palsgd.real.worker import RankFiles


@pytest.fixture
def outside(tmp_path) -> Path:
    victim = tmp_path / "elsewhere.txt"
    victim.write_text("not yours\n")
    return victim


def test_the_run_log_is_not_written_through_a_link(tmp_path, outside):
    log = tmp_path / "out" / "log.txt"
    log.parent.mkdir()
    log.symlink_to(outside)
    with pytest.raises(ConfigError, match="log"):
        _Group([], log)
    assert outside.read_text() == "not yours\n"


def test_a_heartbeat_is_not_written_through_a_link(tmp_path, outside):
    files = RankFiles(tmp_path / "out", "ddp", 0)
    files.progress_path.with_suffix(".json.tmp").symlink_to(outside)
    with pytest.raises(OSError):
        files.beat(step=1)
    assert outside.read_text() == "not yours\n"


def test_linked_rank_files_are_not_read(tmp_path, outside):
    folder = tmp_path / "ranks" / "ddp"
    folder.mkdir(parents=True)
    (folder / "rank0.progress.json").symlink_to(outside)
    assert read_heartbeats(folder) == {}
    real_csv = tmp_path / "metrics.csv"
    pd.DataFrame(columns=list(METRIC_COLUMNS)).to_csv(real_csv, index=False)
    (folder / "rank0.metrics.csv").symlink_to(real_csv)
    with pytest.raises(ConfigError, match="symbolic link"):
        read_rank_csv(folder / "rank0.metrics.csv")
