"""The prepared GPU script: a CPU dry run here (so it cannot rot unseen), a tiny CUDA run where a GPU is."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check(tmp_path, device):
    code = _script().main(["--out", str(tmp_path), "--device", device, "--tiny", "--steps", "2",
                           "--warmup", "1", "--no-runs"])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert code == 0, report
    assert [(r["preset"], r["precision"]) for r in report["cases"]] == [
        ("gpt-tiny", "fp32"), ("gpt-tiny", "bf16"), ("resnet-tiny", "fp32"), ("resnet-tiny", "bf16")]
    for row in report["cases"]:
        assert row["step_time_s"] > 0 and row["tflops"] > 0
    return report


def test_gpu_check_dry_run_on_cpu(tmp_path):
    _check(tmp_path, "cpu")


def test_gpu_check_refuses_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert _script().main(["--out", str(tmp_path)]) == 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_check_tiny_on_cuda(tmp_path):
    report = _check(tmp_path, "cuda")
    assert report["environment"]["gpu"]
    assert all(row["peak_gib"] > 0 for row in report["cases"])
