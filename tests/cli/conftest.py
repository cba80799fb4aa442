"""A hand-made convergence description for the advise and to-target tests."""

import pytest
import tomli_w


@pytest.fixture
def convergence_table(tmp_path):
    """``write(points, ddp_steps=400)``: a description at target loss 3.0 with one point per dict (its
    keys as a ``[[workload.convergence.points]]`` table), written to a file whose path it returns."""
    def write(points: list[dict], ddp_steps: int = 400):
        path = tmp_path / "convergence.toml"
        hand = {"source": "hand-made"}
        path.write_text(tomli_w.dumps({"workload": {"convergence": {
            "target_loss": 3.0, "ddp_steps": ddp_steps, **hand, "points": [{**p, **hand} for p in points]}}}))
        return path
    return write
