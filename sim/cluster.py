"""Workers and links built from a ClusterSpec: step-time variability, failures, and the collective
stream as a SimPy resource.

Variability (``VariabilitySpec``) multiplies every compute time c of worker k at step t by the factors
of ``core/variability.py`` (slow workers, log-normal jitter, straggler spikes), the one sampler the real
harness's emulated accelerators draw from too.

Failures (``FailureSpec``): each worker fails after an exponential time of mean ``mtbf_s``
(memoryless, independent per worker), is down for ``restart_s``, and its clock restarts from the
end of the restart. A failure is charged at the start of the step it falls in (the step is redone).
"""

from __future__ import annotations

import numpy as np
import simpy

from ..core.cluster import ClusterSpec
from ..core.variability import ComputeFactors

FAILURE_STREAM = 0xFA11


class Workers:
    """The K workers of one run: draws their compute times and their failures, vectorized."""

    def __init__(self, cluster: ClusterSpec, seed: int):
        self.count = cluster.workers
        self.fail = cluster.failures
        self._factors = ComputeFactors(cluster.variability, self.count, seed)
        self._frng = np.random.default_rng([seed, FAILURE_STREAM])
        self.next_failure = self._draw_failures(np.zeros(self.count))

    @property
    def varies(self) -> bool:
        return self._factors.varies

    def compute(self, c: float, steps: int) -> np.ndarray:
        """[workers, steps] compute times c_kt (see the module docstring)."""
        if not self.varies:
            return np.full((self.count, steps), c)
        return c * self._factors.draw(steps)

    def _draw_failures(self, after: np.ndarray) -> np.ndarray:
        if self.fail.mtbf_s <= 0:
            return np.full(self.count, np.inf)
        return after + self._frng.exponential(self.fail.mtbf_s, len(after))

    def failures_before(self, ends: np.ndarray) -> np.ndarray:
        """Workers whose next failure comes before their ``ends`` time."""
        return np.flatnonzero(self.next_failure < ends)

    def restart(self, worker: int, back_at: float) -> None:
        """The worker is back at ``back_at``; its next failure is drawn from then on."""
        self.next_failure[worker] = self._draw_failures(np.array([back_at]))[0]


class Network:
    """The collective stream of a run as a SimPy resource: collectives issued on one communicator
    run one at a time, in order (NCCL and gloo serialize a communicator's collectives)."""

    def __init__(self, env: simpy.Environment):
        self.env = env
        self.stream = simpy.Resource(env, capacity=1)
        self.busy_s = 0.0

    def collective(self, seconds: float):
        """SimPy process: wait for the stream, hold it for ``seconds``."""
        with self.stream.request() as turn:
            yield turn
            yield self.env.timeout(seconds)
            self.busy_s += seconds
