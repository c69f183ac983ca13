"""Fixtures of the whole suite; shared non-fixture code is in helpers.py."""
import logging
import os
import sys

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


def _mmengine_instance_registries() -> list[dict]:
    """The instance table of each class of mmengine's ManagerMixin (MMLogger, MessageHub,
    Visualizer and the toolboxes' visualizers: each has its own), where mmengine is imported
    (this never imports it)."""
    manager = getattr(sys.modules.get('mmengine.utils.manager'), 'ManagerMixin', None)
    tables, classes = [], [manager] if manager is not None else []
    while classes:
        cls = classes.pop()
        classes.extend(cls.__subclasses__())
        if '_instance_dict' in vars(cls):
            tables.append(cls._instance_dict)
    return tables


@pytest.fixture(autouse=True)
def _own_mmengine_instances():
    """mmengine's runner names its logger and visualizer after the config and the second it is
    built, and takes an existing instance of that name: two runners of one config built in one
    second would share the first's, which writes into the first test's tmp_path (removed when
    that test passed). The instances a test creates are dropped when it ends."""
    before = {id(table): set(table) for table in _mmengine_instance_registries()}
    yield
    for table in _mmengine_instance_registries():
        for name in set(table) - before.get(id(table), set()):
            instance = table.pop(name)
            for handler in list(getattr(instance, 'handlers', ())):
                if isinstance(handler, logging.FileHandler):
                    instance.removeHandler(handler)
                    handler.close()
