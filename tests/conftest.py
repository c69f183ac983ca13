"""Fixtures of the whole suite; shared non-fixture code is in helpers.py."""
import os

import pytest
import torch

from helpers import DATA

if not torch.cuda.is_available():
    # Triton kernels run on CPU tensors through Triton's interpreter (tests/test_kernels.py);
    # it must be chosen before Triton is first imported.
    os.environ.setdefault('TRITON_INTERPRET', '1')


@pytest.fixture(scope='session')
def official_mini():
    """Official vHeat outputs on a small model (see tests/data/README.md)."""
    return torch.load(DATA / 'vheat_official_mini.pt', weights_only=True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
