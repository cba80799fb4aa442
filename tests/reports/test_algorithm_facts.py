"""The per-algorithm facts of core/algorithms.py FACTS, as the reports and the specs read them."""

from palsgd.core import config
from palsgd.core.algorithms import FACTS
from palsgd.reports.assumptions import algorithm_table
from palsgd.reports.style import color, label


def test_the_registry_is_what_the_reports_and_the_specs_read():
    """One statement of each algorithm's facts: the report's parameter table shows a value exactly
    where the algorithm uses the key (Local SGD does use warmup_syncs_optimizer_state), and the spec's
    derived properties follow the flags."""
    exp = config.load(algorithms=list(FACTS)).to_dict()
    table = algorithm_table(exp)
    rows = {row[0].text: [c.text for c in row[1:]] for row in table.rows}
    for i, (name, facts) in enumerate(FACTS.items()):
        shown = {key for key, cells in rows.items() if cells[i] != "–"}
        assert shown == set(facts.keys), name
        assert (label(name), color(name)) == (facts.label, facts.colour)
        spec = config.AlgorithmSpec(name=name)
        assert spec.is_local == facts.local and (spec.effective_p > 0) == facts.pseudo_syncs


def test_a_whole_round_of_delay_and_eager_outer_steps_state_their_assumptions():
    plain = algorithm_table(config.load(algorithms=["streaming_diloco"]).to_dict())
    assert plain.notes == []
    exp = config.load(algorithms=["streaming_diloco"], overrides=[
        "algorithm.sync_every=100", "algorithm.streaming_diloco.fragments=4",
        "algorithm.streaming_diloco.fragment_sync_delay=25", "algorithm.streaming_diloco.eager_outer=true"])
    notes = algorithm_table(exp.to_dict()).notes
    assert len(notes) == 2 and "a round late" in notes[0] and "differs by worker" in notes[1]
