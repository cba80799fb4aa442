"""Property-based fuzzing: random and malformed TOML and --set values give a clear error or a valid
experiment, never a crash (issue: reliability). The big runs are in the slow set."""

import dataclasses
import typing

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palsgd.core import config
from palsgd.core.errors import ConfigError


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

scalars = st.one_of(
    st.integers(-10**6, 10**9), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.text(max_size=12), st.sampled_from(["ddp", "palsgd", "gloo", "nccl", "ring", "shared", "kept", "adamw"]),
    st.lists(st.sampled_from(["ddp", "local_sgd", "diloco", "palsgd", "x"]), max_size=5),
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
    return exp


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
def test_random_overrides(flat):
    _fuzz_overrides(flat)


@FAST
@given(data=st.binary(max_size=200))
def test_random_bytes(tmp_path_factory, data):
    _fuzz_bytes(tmp_path_factory, data)


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
