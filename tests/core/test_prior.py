"""The convergence prior from the DiLoCo scaling-law paper: its numbers, its conversion, its limits."""

import dataclasses
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

import palsgd
from palsgd.core import config, prior
from palsgd.core.config import AlgorithmSpec

ROOT = Path(palsgd.__file__).parent


@pytest.fixture(scope="module")
def ev():
    return prior.evidence()


def test_the_loss_table_refits_to_the_published_power_laws(ev):
    """The transcribed v1 Table 4 and the paper's method (least squares on log L) give its v1 Table 7 fits:
    the same predicted loss within 0.25 % over the fitted sizes."""
    published = [(ev.fits["loss_ddp"], ev.ddp)] + [(ev.fits["loss_diloco"][str(m)], ev.diloco[m]) for m in ev.replicas]
    for pub, losses in published:
        line = prior.fit_line(ev.params, np.log(losses))
        assert line.slope == pytest.approx(pub["alpha"], abs=2e-4)
        refit = np.exp(line.intercept + line.slope * np.log(ev.params))
        assert refit == pytest.approx(pub["a"] * ev.params ** pub["alpha"], rel=2.5e-3)


def test_the_gap_fit_is_the_ratio_of_the_two_power_laws(ev):
    mdl = prior.model(ev)
    for m in ev.replicas:
        dil = prior.fit_line(ev.params, np.log(ev.diloco[m]))
        assert mdl.gap_lines[m].slope == pytest.approx(dil.slope - mdl.ddp_line.slope)
        assert mdl.gap_lines[m].sigma < 0.0025  # the table's gaps lie close to a line in ln N


def test_no_gap_needs_the_same_tokens_and_a_negative_gap_fewer(ev):
    c = ev.conversions[0]
    for split in (True, False):
        assert prior.tokens_ratio(0.0, 2.5, -0.0953, 1e9, c, equal_split=split) == pytest.approx(1.0)
        assert prior.tokens_ratio(-0.004, 2.5, -0.0953, 1e9, c, equal_split=split) < 1.0
        assert prior.tokens_ratio(0.01, 2.5, -0.0953, 1e9, c, equal_split=split) > 1.0


def test_the_equal_split_conversion_by_hand(ev):
    """b T = 0.5 |alpha| L; D'/D = (1 - dL / T)^(-1/b), dL = L (e^g - 1)."""
    loss, alpha, gap, beta = 2.5, -0.0953, 0.01, ev.conversions[0]["beta"]
    data_term = 0.5 * 0.0953 * loss / beta
    want = (1 - loss * (math.exp(gap) - 1) / data_term) ** (-1 / beta)
    assert prior.tokens_ratio(gap, loss, alpha, 1e9, ev.conversions[0], equal_split=True) == pytest.approx(want)
    assert prior.tokens_ratio(10.0, loss, alpha, 1e9, ev.conversions[0], equal_split=True) == math.inf


@pytest.mark.parametrize("params", [35e6, 124e6, 1.3e9, 2.4e9])
def test_more_replicas_need_more_steps_and_the_band_holds_the_value(params):
    ratios = []
    for m in (1, 2, 3, 4, 6, 8):
        est = prior.estimate(params, m)
        assert est.low <= est.steps_vs_ddp <= est.high
        ratios.append(est.steps_vs_ddp)
    assert ratios == sorted(ratios)


def test_larger_models_close_the_gap_within_the_fitted_range():
    assert [prior.estimate(n, 8).steps_vs_ddp for n in (35e6, 180e6, 1.3e9, 2.4e9)] == sorted(
        [prior.estimate(n, 8).steps_vs_ddp for n in (35e6, 180e6, 1.3e9, 2.4e9)], reverse=True)
    assert prior.estimate(2.4e9, 1).steps_vs_ddp < 1 < prior.estimate(2.4e9, 8).steps_vs_ddp


def test_above_the_fit_the_measured_4b_and_10b_gaps_are_used(ev):
    mdl = prior.model(ev)
    for i, n in enumerate(ev.check_params):
        for m in ev.check_joint:
            gap, _ = mdl.gap(n, m)
            assert gap == pytest.approx(math.log(ev.check_joint[m][i] / ev.check_ddp[i]))
    assert prior.estimate(10e9, 4).steps_vs_ddp > 1  # the fitted trend alone says < 1 (docs/validation.md)


@pytest.mark.parametrize("params, replicas, says", [
    (124e6, 32, "M = 32 replicas is outside the paper's M = 1..8"),
    (124e6, 9, "M = 9 replicas"),
    (8e6, 4, "N = 8M parameters is outside the paper's evidence"),
    (20e9, 2, "N = 20B parameters is outside"),
    (4e9, 8, "for M = 8"),  # the paper ran M = 8 up to 2.4B only
])
def test_outside_the_evidence_there_is_no_answer_and_it_says_why(params, replicas, says):
    est = prior.estimate(params, replicas)
    assert est.steps_vs_ddp is None and est.low is None and says in est.why


def test_the_default_experiment_gets_every_reason():
    exp = config.load()
    diloco = next(a for a in exp.algorithms if a.name == "diloco")
    palsgd_spec = next(a for a in exp.algorithms if a.name == "palsgd")
    assert prior.refusals(diloco, exp) == [f"H = {diloco.sync_every}: the paper's losses are at H = 30 only"]
    assert "measured DiLoCo only, not palsgd" in prior.refusals(palsgd_spec, exp)[0]
    assert prior.refusals(dataclasses.replace(palsgd_spec, sync_every=30), exp, like="diloco") == []
    assert prior.estimate(exp.workload.params, prior.replicas(exp)).steps_vs_ddp is None  # 32 replicas


def test_settings_outside_the_paper_are_refused():
    exp = config.load(overrides=["algorithm.sync_every=30", "train.optimizer=sgd"])
    spec = AlgorithmSpec(name="diloco", sync_every=30, payload_dtype="int8")
    reasons = " ".join(prior.refusals(spec, exp))
    assert "AdamW, not sgd" in reasons and "payload int8" in reasons
    resnet = config.load(workload="resnet50-imagenet")
    assert "family = resnet" in " ".join(prior.refusals(spec, resnet))


def test_docs_validation_holds_the_scripts_output():
    spec = importlib.util.spec_from_file_location("validate_prior", ROOT / "scripts" / "validate_prior.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.markdown() in (ROOT / "docs" / "validation.md").read_text(encoding="utf-8")


def test_the_fitted_optimal_batch_is_the_papers_law(ev):
    assert prior.optimal_batch_tokens(2.4e9) == pytest.approx(462.68 * 2.4e9 ** 0.281)
    assert prior.optimal_batch_tokens(2.4e9, 8) == pytest.approx(14.521 * 2.4e9 ** 0.4695 * 8 ** 0.3399)
    # DiLoCo's optimal batch is larger than DDP's and grows with M (the paper's Finding 3)
    assert prior.optimal_batch_tokens(1e9) < prior.optimal_batch_tokens(1e9, 1) < prior.optimal_batch_tokens(1e9, 8)
