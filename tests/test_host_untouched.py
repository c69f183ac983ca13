"""Checkpoints that are not vHeat's load with vheat_mm imported exactly as without it.

mmengine's own ``load_checkpoint`` (what the inferencers and a non-vHeat ``init_cfg`` use) is
left as it is, and ``VHeatRunner``'s reading (:func:`vheat_mm.mm.runner.load_checkpoint`) takes
the same files the same way: BatchNorm's step counters, a module's extra state held in a dict,
and ``map_location``. Without a WARNING for an exact checkpoint.
"""
import logging

import pytest
import torch
from mmengine.runner import load_checkpoint as mmengine_load_checkpoint
from mmengine.runner.checkpoint import get_state_dict, save_checkpoint, weights_to_cpu
from torch import nn

import vheat_mm.mm  # noqa: F401  (as a config's custom_imports does)
from vheat_mm.mm.runner import load_checkpoint as vheat_load_checkpoint

LOADERS = {'mmengine': mmengine_load_checkpoint, 'VHeatRunner': vheat_load_checkpoint}


def resnet18():
    import mmdet.models  # noqa: F401  (registers ResNet)
    from mmdet.registry import MODELS
    return MODELS.build(dict(type='ResNet', depth=18))


def warnings_in(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize('loader', list(LOADERS))
def test_an_exact_resnet_checkpoint_loads_strictly_without_a_warning(loader, tmp_path, caplog):
    """Its 20 num_batches_tracked buffers are tensors of the model like any other."""
    source = resnet18()
    with torch.no_grad():
        for module in source.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_()
                module.num_batches_tracked.fill_(7)
    path = tmp_path / 'resnet18.pth'
    save_checkpoint({'state_dict': weights_to_cpu(get_state_dict(source)),
                     'meta': dict(epoch=1, iter=10)}, str(path))
    target = resnet18()
    with caplog.at_level(logging.INFO):
        LOADERS[loader](target, str(path), strict=True)
    assert not warnings_in(caplog)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


class WithExtraState(nn.Module):
    """A module whose extra state is a dict (torch allows any picklable value)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.config = {'scale': 1.0, 'names': ['a']}

    def get_extra_state(self) -> dict:
        return {'config': dict(self.config)}

    def set_extra_state(self, state: dict) -> None:
        self.config = state['config']


@pytest.mark.parametrize('layout', ['runner', 'bare'])
@pytest.mark.parametrize('loader', list(LOADERS))
def test_a_state_dict_holding_a_dict_extra_state_loads(loader, layout, tmp_path, caplog):
    source = WithExtraState()
    source.config = {'scale': 2.5, 'names': ['b', 'c']}
    path = tmp_path / 'extra.pth'
    state = source.state_dict()
    torch.save({'state_dict': state, 'meta': {}} if layout == 'runner' else state, path)
    target = WithExtraState()
    with caplog.at_level(logging.INFO):
        LOADERS[loader](target, str(path), strict=True)
    assert target.config == source.config
    assert torch.equal(target.linear.weight, source.linear.weight)
    assert not warnings_in(caplog)


@pytest.mark.parametrize('loader', list(LOADERS))
def test_map_location_is_honoured(loader, tmp_path):
    path = tmp_path / 'linear.pth'
    torch.save({'state_dict': nn.Linear(2, 2).state_dict()}, path)
    seen = []

    def remap(storage, location):
        seen.append(location)
        return storage

    LOADERS[loader](nn.Linear(2, 2), str(path), map_location=remap)
    assert seen == ['cpu', 'cpu']


def test_a_model_wrapped_for_a_distributed_tta_test_gets_the_weights(tmp_path):
    """DDP around a TTA model, as ``dist_test.sh --tta`` builds it: mmengine's Runner unwraps
    the first wrapper and mmengine's ``load_state_dict`` the second; VHeatRunner's loading
    reaches the model inside both, and checks the fit against what it loaded."""
    from mmengine.model import BaseModel, BaseTTAModel

    class Net(BaseModel):
        def __init__(self):
            super().__init__()
            self.backbone = resnet18()

        def forward(self, inputs, data_samples=None, mode='tensor'):
            return self.backbone(inputs)

    class TTA(BaseTTAModel):
        def merge_preds(self, data_samples_list):
            return data_samples_list

    source = Net()
    path = tmp_path / 'net.pth'
    save_checkpoint({'state_dict': weights_to_cpu(get_state_dict(source)),
                     'meta': dict(epoch=1, iter=10)}, str(path))
    target = Net()
    wrapped = nn.DataParallel(TTA(module=target))  # a model wrapper of mmengine's registry
    vheat_load_checkpoint(wrapped, str(path), strict=True)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
