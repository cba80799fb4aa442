"""Convergence descriptions: hand-made tables, interpolation, refusal to extrapolate, file round trip."""

import math
import re

import pandas as pd
import pytest

from palsgd.core import convergence
from palsgd.core.config import AlgorithmSpec, BudgetSpec
from palsgd.core.errors import ConfigError


def _point(algorithm, ratio, **axes):
    return {"algorithm": algorithm, "steps_vs_ddp": ratio, "source": f"hand-made {algorithm} {axes}", **axes}


def _table(*points, **head):
    return {"target_loss": 3.0, "ddp_steps": 100.0, "source": "hand-made", **head, "points": list(points)}


GRID = _table(
    _point("palsgd", 1.0, sync_every=4, p=0.1), _point("palsgd", 2.0, sync_every=16, p=0.1),
    _point("palsgd", 1.5, sync_every=4, p=0.3), _point("palsgd", 3.0, sync_every=16, p=0.3),
    _point("local_sgd", 1.2),
)


def test_ddp_is_one_and_measured_points_are_exact():
    conv = convergence.from_dict(GRID)
    assert conv.lookup(AlgorithmSpec(name="ddp"), 8).steps_vs_ddp == 1.0
    assert conv.lookup(AlgorithmSpec(name="palsgd", sync_every=16, p=0.3), 8).steps_vs_ddp == 3.0


def test_interpolation_is_log_linear_in_h_and_linear_in_p():
    conv = convergence.from_dict(GRID)
    # H = 8 is halfway between 4 and 16 in log space; p = 0.2 halfway between 0.1 and 0.3
    assert conv.lookup(AlgorithmSpec(name="palsgd", sync_every=8, p=0.1), 8).steps_vs_ddp == pytest.approx(1.5)
    both = conv.lookup(AlgorithmSpec(name="palsgd", sync_every=8, p=0.2), 8)
    assert both.steps_vs_ddp == pytest.approx((1.0 + 2.0 + 1.5 + 3.0) / 4)
    assert len(both.sources) == 4


def test_outside_the_measured_range_is_refused_and_says_so():
    conv = convergence.from_dict(GRID)
    above = conv.lookup(AlgorithmSpec(name="palsgd", sync_every=32, p=0.2), 8)
    assert above.steps_vs_ddp is None and "sync_every = 32" in above.why and "4..16" in above.why
    assert "not extrapolated" in above.why
    with pytest.raises(ConfigError, match=r"p = 0\.05 is outside"):
        conv.require(AlgorithmSpec(name="palsgd", sync_every=8, p=0.05), 8)
    no_dtype = conv.lookup(AlgorithmSpec(name="palsgd", sync_every=8, p=0.2, payload_dtype="bf16"), 8)
    assert no_dtype.steps_vs_ddp is None and "bf16" in no_dtype.why
    assert conv.lookup(AlgorithmSpec(name="diloco"), 8).steps_vs_ddp is None


def test_an_axis_not_measured_is_an_assumption_named_in_the_answer():
    conv = convergence.from_dict(GRID)
    found = conv.lookup(AlgorithmSpec(name="local_sgd", sync_every=1000), 64)
    assert found.steps_vs_ddp == 1.2
    assert "independent of H (sync_every) and the number of workers" in found.why
    assert "workers" in conv.lookup(AlgorithmSpec(name="palsgd", sync_every=8, p=0.2), 8).why


def test_file_round_trip_gives_the_same_numbers(tmp_path):
    conv = convergence.from_dict(_table(*GRID["points"], _point("diloco", 1.0 / 3, workers=2, sync_every=8),
                                        _point("diloco", 0.7, workers=4, sync_every=8), ddp_workers=2))
    path = tmp_path / "convergence.toml"
    path.write_text(conv.to_toml())
    back = convergence.load(path)
    assert back == conv
    spec = AlgorithmSpec(name="diloco", sync_every=8)
    assert back.lookup(spec, 3).steps_vs_ddp == conv.lookup(spec, 3).steps_vs_ddp


@pytest.mark.parametrize(("change", "message"), [
    ({"ddp_steps": 0}, "ddp_steps = 0: must be a finite number > 0"),
    ({"target_loss": math.nan}, "target_loss = nan"),
    ({"source": ""}, "source = '': must be a non-empty string"),
    ({"points": [_point("sgd", 1.0)]}, "points[0].algorithm = 'sgd': must be one of ddp, local_sgd"),
    ({"points": [_point("ddp", 1.0)]}, "a DDP point gives DDP's steps on another number of workers"),
    ({"points": [_point("ddp", 1.0, workers=2, sync_every=4)]}, "`workers` and no other axis"),
    ({"points": [_point("diloco", 1.0, p=0.2)]}, "points[0].p = 0.2: applies to palsgd only"),
    ({"points": [_point("diloco", 1.0, fragments=2)]}, "points[0].fragments = 2: applies to streaming_diloco only"),
    ({"points": [_point("streaming_diloco", 1.0, fragments=0)]}, "points[0].fragments = 0: must be an integer"),
    ({"points": [_point("diloco", -1.0)]}, "points[0].steps_vs_ddp = -1.0"),
    ({"points": [_point("diloco", 1.0, sync_every=0)]}, "points[0].sync_every = 0: must be an integer >= 1"),
    ({"points": [_point("diloco", 1.0, speed=2)]}, "points[0].speed: unknown key"),
    ({"points": [_point("diloco", 1.0, sync_every=4), _point("diloco", 1.1)]}, "must give the same axes"),
    ({"points": [_point("diloco", 1.0, sync_every=4), _point("diloco", 1.1, sync_every=4)]}, "given twice"),
    ({"points": [_point("palsgd", 1.0, sync_every=4, p=0.1), _point("palsgd", 1.1, sync_every=8, p=0.2)]},
     "must form a full grid"),
])
def test_bad_tables_name_the_key_the_value_and_the_rule(change, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        convergence.from_dict({**_table(), **change})


def test_a_file_without_the_table_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[workload]\nname = 'x'\n")
    with pytest.raises(ConfigError, match=r"c\.toml: is not a convergence file"):
        convergence.load(path)


def test_a_file_error_names_the_file_and_the_full_key(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[workload.convergence]\ntarget_loss = 3.0\nddp_steps = 10\nsource = "me"\n'
                    '[[workload.convergence.points]]\nalgorithm = "palsgd"\nsteps_vs_ddp = "fast"\nsource = "me"\n')
    with pytest.raises(ConfigError) as err:
        convergence.load(path)
    assert str(err.value) == (f"{path}: workload.convergence.points[0].steps_vs_ddp = 'fast': "
                              "must be a finite number > 0")


def test_speedup_to_target_divides_the_same_steps_speedup_by_the_steps_ratio():
    from palsgd.core import config

    exp = config.load(workload="gpt-tiny", cluster="cpu-2core-gloo", algorithms=["ddp", "local_sgd", "palsgd"],
                      overrides=["algorithm.sync_every=8", "algorithm.p=0.2"])
    runs = pd.DataFrame({"algorithm": ["ddp", "local_sgd", "palsgd"], "speedup_vs_ddp": [1.0, 1.5, 2.0]})
    to_target = convergence.speedup_to_target(runs, exp, convergence.from_dict(GRID))
    assert to_target.tolist() == pytest.approx([1.0, 1.5 / 1.2, 2.0 / 1.875])
    assert convergence.speedup_to_target(runs, exp, None).isna().all()
    outside = exp.replace(algorithms=(AlgorithmSpec(name="palsgd", sync_every=32, p=0.2),), budget=BudgetSpec(steps=99))
    assert convergence.speedup_to_target(runs.tail(1), outside, convergence.from_dict(GRID)).isna().all()


@pytest.mark.parametrize(("name", "loss"), [("gpt-tiny", 3.05), ("resnet-tiny", 0.3)])
def test_the_cpu_presets_load_by_name_and_state_their_source(name, loss):
    conv = convergence.load(f"{name}-2rank")
    assert conv.target_loss == loss and f"palsgd run --workload {name}" in conv.source
    assert {p.algorithm for p in conv.points} == {"local_sgd", "diloco", "palsgd"}
    assert conv.ddp_workers == 2 and "/tmp" not in conv.to_toml()
    with pytest.raises(ConfigError, match="unknown convergence preset; known: gpt-tiny-2and4rank, gpt-tiny-2rank"):
        convergence.load("gpt-huge")


def test_the_workers_preset_answers_between_its_worker_counts_only():
    conv = convergence.load("gpt-tiny-2and4rank")
    palsgd = AlgorithmSpec(name="palsgd")
    assert conv.steps_to_target(palsgd, 2).steps_vs_ddp < conv.steps_to_target(palsgd, 4).steps_vs_ddp
    assert conv.ddp_steps_on(4).steps_vs_ddp > conv.ddp_steps_on(2).steps_vs_ddp == conv.ddp_steps
    assert conv.steps_to_target(palsgd, 8).steps_vs_ddp is None and "/tmp" not in conv.to_toml()


def test_streaming_diloco_is_interpolated_in_log_fragments_and_names_its_assumptions(tmp_path):
    conv = convergence.from_dict(_table(_point("streaming_diloco", 1.0, fragments=1),
                                        _point("streaming_diloco", 2.0, fragments=4)))
    found = conv.lookup(AlgorithmSpec(name="streaming_diloco", sync_every=8, fragments=2), 4)
    assert found.steps_vs_ddp == pytest.approx(1.5)  # halfway between 1 and 4 in log P
    assert "H (sync_every)" in found.why and "the number of workers" in found.why
    outside = conv.lookup(AlgorithmSpec(name="streaming_diloco", sync_every=8, fragments=8), 4)
    assert outside.steps_vs_ddp is None and "fragments = 8 is outside" in outside.why
    path = tmp_path / "c.toml"
    path.write_text(conv.to_toml())
    assert convergence.load(path) == conv


def test_ddp_steps_by_workers_are_interpolated_not_extrapolated():
    """DDP's own steps on other worker counts (relative to ddp_steps on ddp_workers): the absolute steps of
    every algorithm use DDP's steps on the asked workers."""
    conv = convergence.from_dict(_table(_point("ddp", 1.0, workers=2), _point("ddp", 1.5, workers=8),
                            _point("palsgd", 2.0), ddp_workers=2))
    assert conv.ddp_steps_on(4).steps_vs_ddp == pytest.approx(125.0)  # halfway in log workers
    palsgd = AlgorithmSpec(name="palsgd")
    assert conv.steps_to_target(palsgd, 8).steps_vs_ddp == pytest.approx(300.0)
    assert conv.lookup(palsgd, 8).steps_vs_ddp == 2.0  # the ratio to DDP on the same workers is unchanged
    beyond = conv.steps_to_target(palsgd, 16)
    assert beyond.steps_vs_ddp is None and "workers = 16 is outside the measured range of ddp" in beyond.why
    plain = convergence.from_dict(_table(_point("palsgd", 2.0), ddp_workers=2))
    assert plain.steps_to_target(palsgd, 16).steps_vs_ddp == 200.0
    assert "measured on 2 workers, assumed to hold on 16" in plain.steps_to_target(palsgd, 16).why


def test_the_experiment_carries_its_description_parsed_once():
    """``workload.described`` is the parsed table (the table itself stays the serialized form)."""
    from palsgd.core.config import from_dict, load

    conv = convergence.load("gpt-tiny-2rank")
    exp = convergence.with_convergence(load(workload="gpt-tiny"), conv)
    assert exp.workload.described == conv and convergence.of_experiment(exp) is exp.workload.described
    assert from_dict(exp.to_dict()).workload.described == conv
    assert load(workload="gpt-tiny").workload.described is None


def test_replica_group_is_an_axis_of_the_local_algorithms():
    from palsgd.core.config import AlgorithmSpec
    from palsgd.core.convergence import from_dict as conv_from_dict

    head = {"target_loss": 3.0, "ddp_steps": 100.0, "source": "hand-made"}
    point = {"algorithm": "diloco", "sync_every": 8, "steps_vs_ddp": 1.5, "source": "s"}
    plain = conv_from_dict({**head, "points": [point]})
    spec = AlgorithmSpec(name="diloco", sync_every=8, replica_group="node")
    # Not measured: assumed, and said so.
    assert "the workers per replica (replica_group)" in plain.lookup(spec, 32, 8).why
    grid = conv_from_dict({**head, "points": [{**point, "replica_group": 1}, {**point, "replica_group": 8,
                                                                            "steps_vs_ddp": 1.0}]})
    assert grid.lookup(spec, 32, 8).steps_vs_ddp == 1.0
    assert grid.lookup(spec, 32, 16).steps_vs_ddp is None  # outside 1..8: not extrapolated
    assert abs(grid.lookup(spec, 32, 2).steps_vs_ddp - (1.5 - 0.5 / 3)) < 1e-12  # log-linear in the size
    with pytest.raises(ConfigError, match="a DDP point gives DDP's steps on another number of workers"):
        conv_from_dict({**head, "points": [{"algorithm": "ddp", "workers": 4, "replica_group": 2,
                                            "steps_vs_ddp": 1.0, "source": "s"}]})
