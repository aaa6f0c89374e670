import pytest
import torch


@pytest.fixture
def g():
    return torch.Generator().manual_seed(0)
