"""Fixtures of the model tests: one torch thread, tiny random batches (see model_batches.py)."""
import pytest
import torch

from model_batches import random_batch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models: intra-op threads only add synchronisation, which is ruinous on a busy shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    return random_batch()
