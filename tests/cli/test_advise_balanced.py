"""`palsgd advise` on a cluster of mixed speeds also weighs each local candidate with a balanced H."""

import math

from palsgd.core import config, convergence
from palsgd.harness.commands.advise import _candidates, _name


def candidates(convergence_table, slow_workers):
    path = convergence_table([{"algorithm": "diloco", "sync_every": 8, "steps_vs_ddp": 1.2}])
    exp = config.load(workload="gpt-neo-8m", cluster="a100-8x1-eth10", algorithms=["ddp", "diloco"],
                      overrides=[f"cluster.variability.slow_workers={slow_workers}",
                                 "cluster.variability.slow_factor=2"])
    return _candidates(exp, convergence.load(path))[0]


def test_a_balanced_candidate_needs_the_fixed_h_s_local_steps_in_all(convergence_table):
    fixed, balanced = [c for c in candidates(convergence_table, 2) if c.spec.name == "diloco"]
    assert not fixed.spec.sync_balanced and balanced.spec.sync_balanced
    assert "balanced" in _name(balanced.spec) and "assumed, not measured" in balanced.assumption
    # 8 workers, 2 of them 2x slower: they take 4 of every 8 steps, 7/8 of the local steps in all.
    assert fixed.steps == 480 and balanced.steps == math.ceil(480 * 8 / 7)


def test_a_uniform_cluster_gets_no_balanced_candidate(convergence_table):
    assert not any(c.spec.sync_balanced for c in candidates(convergence_table, 0))
