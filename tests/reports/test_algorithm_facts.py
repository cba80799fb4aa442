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
