"""One torch thread: these tests share 2 cores with the rest of the suite, and two spinning intra-op
threads on a busy machine make a tiny model 3-10x slower, not faster."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
