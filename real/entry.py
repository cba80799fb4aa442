"""torchrun's entry point of a rank: ``python -m palsgd.real.entry`` with ``real/worker.py``'s arguments.

A launcher killed while its ranks start must leave none running. Each rank asks Linux to kill it when its
parent (the torchrun agent, which dies with the launcher) dies, before anything slow: importing torch
takes seconds, and a parent that dies before the request is made never signals. A parent already gone
by then is noticed here (the rank was re-parented), and the rank exits without starting.
"""

from __future__ import annotations

import os
import sys

from ..core.procs import die_with_parent, parent_command

TORCHRUN_AGENTS = ("torch.distributed.run", "torchrun", "torch.distributed.launch")
ORPHANED_EXIT_CODE = 1


def main() -> int:
    die_with_parent()
    parent = parent_command()
    if parent is not None and not any(agent in parent for agent in TORCHRUN_AGENTS):
        print(f"palsgd rank: its torchrun agent is gone (parent is now {parent!r}); not starting",
              file=sys.stderr, flush=True)
        return ORPHANED_EXIT_CODE
    from .worker import main as run_worker  # imports torch: only once the rank is sure to die with its agent

    return run_worker()


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter finalisation: C++ destructors of background threads (gloo, the rendezvous store)
    # racing at exit occasionally aborted a finished rank (SIGABRT, "terminate called without an active
    # exception": 5 of 48 validation runs). Every result file is written, closed and renamed by now.
    os._exit(code)
