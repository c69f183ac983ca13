from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / 'data'


@pytest.fixture(scope='session')
def official_mini():
    """Official vHeat outputs on a small model (see tests/data/README.md)."""
    return torch.load(DATA / 'vheat_official_mini.pt', weights_only=True)


def mini_arch(config: dict) -> dict:
    """The arch dict of an official constructor config."""
    return {k: config[k] for k in ('depths', 'dims', 'post_norm', 'layer_scale')}


MINI = dict(depths=(1, 1, 2, 1), dims=8, post_norm=False, layer_scale=None)
MINI_POST = dict(depths=(1, 1, 2, 1), dims=8, post_norm=True, layer_scale=1e-5)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def load_script(path: Path):
    """Import a command-line script (not a package module) by its path, as a module."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
