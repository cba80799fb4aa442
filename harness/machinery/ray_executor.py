"""Sweep points as Ray tasks, on a Ray cluster that already runs (``palsgd sweep --executor ray``).

Each chunk of points is one task. A task whose worker or node is lost is run again by Ray
(``max_retries``); a simulation is a pure function of its point's experiment and seed, so a retried chunk
gives the same rows. Results are taken as they finish, so the caller can store them one by one.
Install with ``pip install 'palsgd[ray]'``.
"""

from __future__ import annotations

from ...core.errors import ConfigError

TASK_RETRIES = 3
"""How often Ray runs a chunk again after its worker died (a node lost, a worker killed for memory)."""


class RayExecutor:
    def __init__(self, address: str | None):
        try:
            import ray  # optional (pip install palsgd[ray]): only for --executor ray
        except ImportError:
            raise ConfigError("needs Ray: pip install 'palsgd[ray]'", key="--executor", value="ray",
                              source="command line") from None
        self.ray = ray
        if not ray.is_initialized():
            # no address: the cluster named by RAY_ADDRESS, else a fresh one on this machine
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)

    def slots(self, n_points: int) -> int:
        return max(1, min(int(self.ray.cluster_resources().get("CPU", 1)), n_points))

    def map(self, fn, chunks: list, tags: list):
        """Yield (tag, fn(chunk)) as each task finishes; pending tasks are cancelled if the caller stops."""
        task = self.ray.remote(max_retries=TASK_RETRIES, retry_exceptions=False)(fn)
        pending = {task.remote(chunk): tag for chunk, tag in zip(chunks, tags, strict=True)}
        try:
            while pending:
                ready, _ = self.ray.wait(list(pending), num_returns=1)
                yield pending.pop(ready[0]), self.ray.get(ready[0])
        finally:
            for ref in pending:
                self.ray.cancel(ref)
