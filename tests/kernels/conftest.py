"""Kernel-test fixtures: one CPU thread, NaN-poisoned kernel scratch."""

import pytest
import torch

from pabench.kernels import decode


@pytest.fixture(autouse=True)
def _one_cpu_thread():
    """Tiny tensors on a busy 2-core box: intra-op threads only add wake-up latency."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def poison_scratch(monkeypatch):
    """Fill the decode kernel's fp32 partials with NaN so a chunk left unwritten fails the test."""
    monkeypatch.setattr(decode, "POISON_SCRATCH", True)
