"""Streaming DiLoCo's plan and fragment layout (core, shared by sim and real)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from palsgd.core import buckets
from palsgd.core.algorithms import plan
from palsgd.core.config import load
from palsgd.core.errors import ConfigError
from palsgd.core.model_facts import model_facts


def test_fragments_are_synced_in_turn_every_h_over_p_steps_and_started_tau_steps_earlier():
    # W = 2, H = 6, P = 3: a fragment sync after every H/P = 2 local steps, fragments 0, 1, 2, 0, ...
    p = plan("streaming_diloco", workers=2, steps=12, seed=0, warmup_steps=2, sync_every=6, fragments=3,
             sync_delay=1)
    assert np.flatnonzero(p.sync_after).tolist() == [3, 5, 7, 9, 11]
    assert p.fragment[p.sync_after].tolist() == [0, 1, 2, 0, 1]
    assert (p.fragment[~p.sync_after] == -1).all()
    # tau = 1: each all-reduce starts after the step before its sync.
    assert np.flatnonzero(p.start_after >= 0).tolist() == [2, 4, 6, 8, 10]
    assert p.start_after[[2, 4, 6, 8, 10]].tolist() == [0, 1, 2, 0, 1]


def test_one_fragment_without_delay_plans_as_diloco():
    kw = dict(workers=2, steps=50, seed=3, warmup_steps=5, sync_every=7)
    a, b = plan("diloco", **kw), plan("streaming_diloco", **kw)
    assert (a.kinds == b.kinds).all() and (a.sync_after == b.sync_after).all()
    assert (b.start_after == np.where(b.sync_after, 0, -1)).all()


def test_a_whole_round_of_delay_starts_each_fragment_at_the_sync_before_and_none_in_the_warmup():
    # W = 2, H = 6, P = 3, tau = H/P = 2: each all-reduce starts after the previous fragment's sync; the
    # first would start after the last warm-up step, with nothing trained, so it has none.
    p = plan("streaming_diloco", workers=2, steps=12, seed=0, warmup_steps=2, sync_every=6, fragments=3,
             sync_delay=2)
    assert np.flatnonzero(p.start_after >= 0).tolist() == [3, 5, 7, 9]
    assert p.start_after[[3, 5, 7, 9]].tolist() == [1, 2, 0, 1]
    assert [p.sync_started(t) for t in (3, 5, 7, 9, 11)] == [False, True, True, True, True]
    # P = 1, tau = H: DiLoCo with the outer all-reduce of round r overlapping round r + 1; W = 0 too.
    one = plan("streaming_diloco", workers=2, steps=12, seed=0, sync_every=4, sync_delay=4)
    assert np.flatnonzero(one.start_after >= 0).tolist() == [3, 7]
    assert [one.sync_started(t) for t in (3, 7, 11)] == [False, True, True]


def test_eager_outer_is_a_streaming_diloco_key_and_delay_may_be_a_whole_round():
    exp = load(algorithms=["streaming_diloco"], steps=1000,
               overrides=["algorithm.sync_every=10", "algorithm.streaming_diloco.fragments=2",
                          "algorithm.streaming_diloco.fragment_sync_delay=5",
                          "algorithm.streaming_diloco.eager_outer=true"])
    spec = exp.algorithms[0]
    assert spec.eager_outer is True and spec.fragment_sync_delay == 5
    with pytest.raises(ConfigError, match="eager_outer"):
        load(algorithms=["diloco"], steps=1000, overrides=["algorithm.diloco.eager_outer=true"])


def test_fragments_tile_the_parameters_in_order_at_about_equal_size():
    facts = model_facts(load(workload="gpt-neo-125m").workload.model)
    bounds = buckets.fragment_bounds(facts.param_numels, 4)
    assert bounds[0][0] == 0 and bounds[-1][1] == facts.tensors
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    sizes = [sum(facts.param_numels[a:b]) for a, b in bounds]
    # The 38.6M-element embedding alone is over N/4 (31.1M): the first fragment is it, the rest share the rest.
    assert bounds[0] == (0, 1)
    assert max(sizes[1:]) - min(sizes[1:]) <= max(facts.param_numels[1:])
    with pytest.raises(ValueError):
        buckets.fragment_bounds([1, 2], 3)


@pytest.mark.parametrize(("key", "value", "rule"), [
    ("fragments", 3, "must divide sync_every"),
    ("fragment_sync_delay", 26, "must be in [0, sync_every / fragments = 25]"),
    ("fragment_update_alpha", 1.5, "must be in [0, 1]"),
])
def test_fragment_settings_follow_torchfts_rules(key, value, rule):
    with pytest.raises(ConfigError, match=key) as err:
        load(algorithms=["streaming_diloco"], steps=1000,
             overrides=["algorithm.sync_every=100", "algorithm.streaming_diloco.fragments=4",
                        f"algorithm.streaming_diloco.{key}={value}"])
    assert rule in str(err.value)
