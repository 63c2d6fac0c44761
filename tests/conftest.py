"""Fixtures every test shares."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread per test process: the suite runs in 2 processes on 2 cores (``pytest -n 2``),
    and oversubscribed torch threads run ~20x slower than one each."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
