"""Property-based fuzzing: random and malformed TOML and --set values give a clear error or a valid
experiment, never a crash (issue: reliability). Hostile values too (issue 26): huge, tiny, subnormal, NaN and
infinite numbers, integers past 64 bits, long strings, control characters, deep nesting; an experiment that is
accepted is then priced as the simulator prices it (``bounds.check``, ``step_costs``, the variability
sampler), which is where a number meets a formula. The big runs are in the slow set."""

import dataclasses
import math
import typing

import numpy as np
import pytest
import tomli_w
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from palsgd.core import config
from palsgd.core.errors import ConfigError
from palsgd.core.variability import ComputeFactors
from palsgd.sim import bounds
from palsgd.sim.costs import step_costs


def _keys(cls, prefix=""):
    """Every dotted key of the experiment, as the TOML sees it."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _keys(hint, f"{prefix}{f.name}.")
        elif f.name != "algorithms":
            yield f"{prefix}{f.name}"


KEYS = [*_keys(config.Experiment), *(f"algorithm.{f.name}" for f in dataclasses.fields(config.AlgorithmSpec)),
        *(f"algorithm.palsgd.{f.name}" for f in dataclasses.fields(config.AlgorithmSpec)),
        "algorithms", "workload.preset", "cluster.preset", "bogus.key", "cluster.nope"]

HOSTILE_NUMBERS = [2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**400, 1e308, 1e200, 1e31, 1e-31, 5e-324, 2.2e-308,
                   -1e200, 1e12, 10**12, 10**8]
scalars = st.one_of(
    st.integers(-10**6, 10**9), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.text(max_size=12), st.sampled_from(["ddp", "palsgd", "gloo", "nccl", "ring", "shared", "kept", "adamw"]),
    st.lists(st.sampled_from(["ddp", "local_sgd", "diloco", "palsgd", "x"]), max_size=5),
    st.sampled_from(HOSTILE_NUMBERS), st.integers(), st.floats(min_value=0, max_value=1e-300),
    st.text(alphabet=st.characters(max_codepoint=0x20), max_size=20), st.text(min_size=1000, max_size=5000),
    st.sampled_from(["~nosuchuser", "~nosuchuser/w.toml", "/dev/zero", "/dev/null"]),
)
documents = st.dictionaries(st.sampled_from(KEYS), scalars, max_size=6)


def _nest(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):  # a scalar and a table at the same key: keep the first
                break
            node = nxt
        else:
            node.setdefault(parts[-1], value)
    return out


def _load_or_error(**kwargs):
    try:
        exp = config.load(**kwargs)
    except ConfigError as err:
        assert str(err) and "\n" not in str(err).strip()
        return None
    assert isinstance(exp, config.Experiment)
    _price(exp)
    return exp


def _price(exp: config.Experiment) -> None:
    """What the simulator computes before and at its start, for an accepted experiment: a refusal is a
    ConfigError, never an overflow or a NaN."""
    try:
        bounds.check(exp, record_steps=False, keep_totals=False, out=True)
    except ConfigError as err:
        assert "\n" not in str(err).strip()
        return
    for algo in exp.algorithms:
        costs = step_costs(exp, algo)
        assert costs.compute_s >= 0 and math.isfinite(costs.compute_s), (algo, costs)
    factors = ComputeFactors(exp.cluster.variability, min(exp.workers, 64), exp.seed).draw(2)
    assert np.isfinite(factors).all()


def _fuzz_files(tmp_path_factory, flat):
    path = tmp_path_factory.mktemp("fuzz") / "exp.toml"
    path.write_text(tomli_w.dumps(_nest(flat)))
    _load_or_error(path=path)


def _fuzz_overrides(flat):
    overrides = [f"{k}={v}" for k, v in flat.items()]
    _load_or_error(overrides=overrides, steps=1000)


def _fuzz_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("raw") / "exp.toml"
    path.write_bytes(data)
    _load_or_error(path=path)


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(flat=documents)
def test_random_toml_files(tmp_path_factory, flat):
    _fuzz_files(tmp_path_factory, flat)


@FAST
@given(flat=documents)
@example(flat={"cluster.variability.jitter_cv": 1e200})  # OverflowError in core/variability.py (issue 26)
@example(flat={"workload.model.layers": 10**12})  # MemoryError laying the model out (issue 26)
@example(flat={"seed": 2**64})  # accepted, beyond what tables and torch hold (issue 26)
@example(flat={"workload": "~nosuchuser"})  # RuntimeError from expanduser (issue 26)
def test_random_overrides(flat):
    _fuzz_overrides(flat)


@FAST
@given(data=st.binary(max_size=200))
@example(data=b"a = " + b"[" * 5000 + b"]" * 5000)  # RecursionError in tomllib (issue 26)
def test_random_bytes(tmp_path_factory, data):
    _fuzz_bytes(tmp_path_factory, data)


nested = st.tuples(st.integers(1, 2000), st.sampled_from(["[", "{a = ", "[{b = "])).map(
    lambda d: "v = " + d[1] * d[0])


@settings(FAST, max_examples=40)
@given(doc=nested)
def test_nested_documents(tmp_path_factory, doc):
    """Arrays and inline tables nested up to 3,000 deep, closed or not: one line, never a RecursionError."""
    _fuzz_bytes(tmp_path_factory, doc.encode())
    _load_or_error(overrides=[doc.replace("v = ", "seed=", 1)], steps=1000)


@pytest.mark.slow
@SLOW
@given(flat=documents)
def test_random_toml_files_many(tmp_path_factory, flat):
    _fuzz_files(tmp_path_factory, flat)


@pytest.mark.slow
@SLOW
@given(flat=documents)
def test_random_overrides_many(flat):
    _fuzz_overrides(flat)


@pytest.mark.slow
@SLOW
@given(text=st.text(max_size=80))
def test_random_override_text_many(text):
    _load_or_error(overrides=[text], steps=1000)
