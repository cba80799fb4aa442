"""Rules of the design that a refactor could silently break."""

import subprocess
import sys

from palsgd.core.algorithms import ALGORITHMS


def test_sim_and_real_implement_exactly_the_same_algorithms():
    from palsgd.real.algorithms import ALGORITHM_CLASSES
    from palsgd.sim.algorithms import REGISTRY

    assert tuple(REGISTRY) == ALGORITHMS
    assert set(ALGORITHM_CLASSES) == set(ALGORITHMS)


def test_cli_harness_and_reports_do_not_import_torch():
    code = ("import sys, palsgd.cli, palsgd.harness.simulate, palsgd.harness.launch, palsgd.harness.sweep, "
            "palsgd.harness.validate, palsgd.reports.render; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
