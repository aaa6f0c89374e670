import os

# Lessons and tests run at tiny scale unless the caller chose another; set before any kernel starts.
os.environ.setdefault("MINIDIFF_SCALE", "tiny")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def g():
    return torch.Generator().manual_seed(0)
