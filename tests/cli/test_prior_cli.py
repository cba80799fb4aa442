"""`palsgd simulate` answers to the target by default where the published prior applies."""

import json

import pytest
from click.testing import CliRunner

from palsgd.cli import main
from palsgd.core import config, convergence, prior

# GPT-Neo-125M on one node of 8 A100: 8 replicas, inside the paper's M = 1..8 once H = 30
WHERE = ["--workload", "gpt-neo-125m", "--cluster", "a100-1x8-nvlink", "--steps", "200",
         "--set", "algorithm.sync_every=30", "--algorithms", "ddp,diloco,palsgd"]


def palsgd(*args, code=0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output


def rows(*args):
    return {row["algorithm"]: row for row in json.loads(palsgd("simulate", *args, "--json"))}


@pytest.fixture(scope="module")
def default_rows():
    return rows(*WHERE)


def test_diloco_gets_the_priors_steps_and_band(default_rows):
    params = config.load(workload="gpt-neo-125m").workload.params
    est = prior.estimate(params, 8)
    d = default_rows["diloco"]
    assert d["convergence_source"] == prior.NAME
    assert d["speedup_to_target_vs_ddp"] == pytest.approx(d["speedup_vs_ddp"] / est.steps_vs_ddp)
    assert d["speedup_to_target_low_vs_ddp"] == pytest.approx(d["speedup_vs_ddp"] / est.high)
    assert d["speedup_to_target_high_vs_ddp"] == pytest.approx(d["speedup_vs_ddp"] / est.low)
    assert "M = 8" in d["convergence_note"]
    assert default_rows["ddp"]["speedup_to_target_vs_ddp"] == 1.0


def test_palsgd_has_no_answer_unless_the_user_assumes_one(default_rows):
    p = default_rows["palsgd"]
    assert p["speedup_to_target_vs_ddp"] is None and p["convergence_source"] is None
    assert "measured DiLoCo only" in p["convergence_note"]
    assumed = rows(*WHERE, "--assume-like", "palsgd=diloco")["palsgd"]
    ratio = prior.estimate(config.load(workload="gpt-neo-125m").workload.params, 8).steps_vs_ddp
    assert assumed["speedup_to_target_vs_ddp"] == pytest.approx(assumed["speedup_vs_ddp"] / ratio)
    assert "assumed by the user to converge like diloco" in assumed["convergence_note"]


def test_a_measured_description_overrides_the_prior(tmp_path):
    path = tmp_path / "conv.toml"
    path.write_text('[workload.convergence]\ntarget_loss = 3.0\nddp_steps = 100.0\nsource = "hand-made"\n'
                    '[[workload.convergence.points]]\nalgorithm = "diloco"\nsteps_vs_ddp = 1.25\nsource = "x"\n')
    d = rows(*WHERE, "--convergence", path)["diloco"]
    assert d["convergence_source"] == str(path)
    assert d["speedup_to_target_vs_ddp"] == pytest.approx(d["speedup_vs_ddp"] / 1.25)
    assert d["speedup_to_target_low_vs_ddp"] is None  # a measured description has no band


def test_no_prior_gives_the_same_steps_speedup_only():
    for row in rows(*WHERE, "--no-prior").values():
        assert row["speedup_to_target_vs_ddp"] is None


def test_the_table_shows_the_band_and_the_notes_say_which_speedup_is_which():
    text = palsgd("simulate", *WHERE)
    line = next(x for x in text.splitlines() if x.startswith("diloco "))
    assert line.rstrip().endswith(")") and "-" in line.split("(")[-1]
    assert "'vs DDP' is for the same steps, 'to target' for DDP's final loss" in text


def test_the_default_experiment_says_why_there_is_no_answer():
    text = palsgd("simulate", "--steps", "250", "--algorithms", "ddp,diloco")
    assert "to target" not in text.splitlines()[1]
    assert convergence.SAME_STEPS_NOTE in text
    assert "H = 100: the paper's losses are at H = 30 only" in text
    assert "M = 32 replicas is outside the paper's M = 1..8" in text


def test_a_bad_assumption_is_one_line_and_status_2():
    out = palsgd("simulate", *WHERE, "--assume-like", "ddp=diloco", code=2)
    assert out.count("\n") == 1 and "--assume-like" in out and "ALGO=diloco" in out
