"""`palsgd advise`: the fastest configuration to the target of a hand-made convergence table."""

import json
import os
import subprocess
import sys

from palsgd.core import config, convergence
from palsgd.harness.commands.advise import advice_json, advise

# On 8 nodes joined by 10 Gb/s Ethernet, GPT-Neo-8M's all-reduce dominates a step. Local SGD needs DDP's
# steps up to H = 8 and four times as many at H = 16, so H = 8 (fewest syncs for no extra steps) is the
# optimum; PALSGD needs 1.5x the steps and skips at most 30% of the compute, so it comes second.
TABLE = """
[workload.convergence]
target_loss = 3.0
ddp_steps = 400
source = "hand-made"
""" + "".join(f"""
[[workload.convergence.points]]
algorithm = "{name}"
sync_every = {h}
{f"p = {p}" if p is not None else ""}
steps_vs_ddp = {ratio}
source = "hand-made"
""" for name, h, p, ratio in [("local_sgd", 2, None, 1.0), ("local_sgd", 8, None, 1.0), ("local_sgd", 16, None, 4.0),
                              ("palsgd", 8, 0.1, 1.5), ("palsgd", 8, 0.3, 1.5)])
WHERE = ["--workload", "gpt-neo-8m", "--cluster", "a100-8x1-eth10", "--algorithms", "ddp,local_sgd,palsgd"]


def test_advise_finds_the_known_optimum_inside_the_measured_range(tmp_path):
    path = tmp_path / "convergence.toml"
    path.write_text(TABLE)
    exp = config.load(workload="gpt-neo-8m", cluster="a100-8x1-eth10", algorithms=["ddp", "local_sgd", "palsgd"])
    advice = advise(exp.replace(repeats=2), convergence.load(path))
    best, runner_up = (a.candidate for a in advice.ranked)
    assert (best.spec.name, best.spec.sync_every, best.steps) == ("local_sgd", 8, 400)
    assert runner_up.spec.name == "palsgd" and runner_up.steps == 600
    assert advice.ddp.candidate.steps == 400 and advice.ddp.time_s > advice.ranked[0].time_s
    # the preset's own H = 100 lies outside the measured 2..16: never a candidate
    assert advice.searched == 1 + 4 + 5  # DDP; H = 2, 4, 8, 16; p = 0.1, 0.15, ..., 0.3 at H = 8


def test_cli_prints_best_runner_up_ddp_bands_and_why(tmp_path):
    path = tmp_path / "convergence.toml"
    path.write_text(TABLE)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cli = [sys.executable, "-m", "palsgd.cli", "advise", *WHERE, "--convergence", str(path), "--repeats", "2"]
    r = subprocess.run([*cli, "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert answer["best"]["algorithm"] == "local_sgd" and answer["best"]["sync_every"] == 8
    lo, hi = answer["best"]["time_to_target_5_95_s"]
    assert lo <= answer["best"]["time_to_target_s"] <= hi
    assert answer["ddp"]["speedup_to_target_vs_ddp"] == 1.0 and answer["best"]["speedup_to_target_vs_ddp"] > 1
    assert "less exposed communication" in answer["why"]
    assert any("independent of the number of workers" in a for a in answer["assumptions"])

    path.write_text(TABLE.replace("ddp_steps = 400", "ddp_steps = -1"))
    r = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "workload.convergence.ddp_steps = -1" in r.stderr and "Traceback" not in r.stderr


def test_advise_searches_streaming_diloco_fragments_inside_the_measured_range(convergence_table):
    path = convergence_table([{"algorithm": "streaming_diloco", "fragments": f, "steps_vs_ddp": ratio}
                              for f, ratio in ((1, 1.0), (4, 3.0))])
    exp = config.load(workload="gpt-neo-8m", cluster="a100-8x1-eth10", algorithms=["ddp", "streaming_diloco"],
                      overrides=["algorithm.sync_every=8"])
    advice = advise(exp, convergence.load(path))
    best = advice.ranked[0].candidate
    assert (best.spec.name, best.spec.fragments, best.steps) == ("streaming_diloco", 1, 400)
    # fragments 1, 2 and 4 were simulated; none outside 1..4
    assert advice.searched == 4 and not any("fragments = 8" in r for r in advice.refused)


def test_advise_searches_the_replica_group_size_where_it_was_measured(convergence_table):
    # DiLoCo measured with every worker a replica and with a node (8 workers) per replica, at H = 8 and 16:
    # group sizes 1, 2, 4, 8 are searched (powers of two between); a replica of a node needs fewer steps
    # here (a made-up table), so where the sync is cheap enough the node groups win.
    path = convergence_table([{"algorithm": "diloco", "sync_every": h, "replica_group": g, "steps_vs_ddp": ratio}
                              for h, g, ratio in [(8, 1, 2.0), (16, 1, 3.0), (8, 8, 1.0), (16, 8, 1.2)]],
                             ddp_steps=200)
    exp = config.load(workload="gpt-neo-8m", algorithms=["ddp", "diloco"])
    assert exp.cluster.gpus_per_node == 8
    advice = advise(exp, convergence.load(path))
    assert advice.searched == 1 + 2 * 4  # DDP; H = 8, 16 x group sizes 1, 2, 4, 8
    best = advice.ranked[0].candidate
    assert exp.group_size(best.spec) == 8 and best.steps == 200
    row = json.loads(json.dumps(advice_json(advice)))
    assert row["best"]["replica_group"] == 8 and row["ddp"]["replica_group"] is None


def test_advise_ranks_sparseloco_from_its_int2_points(convergence_table):
    path = convergence_table([{"algorithm": "sparseloco", "sync_every": h, "steps_vs_ddp": ratio}
                              for h, ratio in ((8, 1.1), (32, 1.5))])
    conv = convergence.load(path)
    assert conv.payload_dtypes("sparseloco") == ["int2"]  # its default dtype when a point names none
    exp = config.load(workload="gpt-neo-8m", cluster="a100-8x1-eth10", algorithms=["ddp", "sparseloco"])
    advice = advise(exp, conv)
    best = advice.ranked[0].candidate
    assert best.spec.name == "sparseloco" and best.spec.payload_dtype == "int2"
    assert 8 <= best.spec.sync_every <= 32


def test_advise_searches_the_sync_delay_and_eager_outer_steps_where_measured(convergence_table):
    # Streaming DiLoCo with P = 1, H = 8 measured at tau = 0 and tau = H, plain and eager (a made-up table:
    # the delay costs steps, eager updates win most of them back). Only the measured values are searched.
    measured = ((0, False, 1.0), (0, True, 1.0), (8, False, 1.5), (8, True, 1.02))
    path = convergence_table([{"algorithm": "streaming_diloco", "fragment_sync_delay": tau, "eager_outer": eager,
                               "steps_vs_ddp": ratio} for tau, eager, ratio in measured])
    exp = config.load(workload="gpt-neo-8m", cluster="a100-8x1-eth10", algorithms=["ddp", "streaming_diloco"],
                      overrides=["algorithm.sync_every=8", "algorithm.warmup_steps=0",
                                 "cluster.inter_node.bandwidth_gbps=1"])
    advice = advise(exp, convergence.load(path))
    assert advice.searched == 5  # DDP and the four measured (tau, eager) pairs
    best = advice.ranked[0].candidate
    assert (best.spec.fragment_sync_delay, best.spec.eager_outer, best.steps) == (8, True, 408)
    assert advice_json(advice)["best"]["eager_outer"] is True
