"""pytest plugin that runs timm's own ``tests/test_models.py`` on the vHeat models.

Loaded with ``-p timm_suite_plugin`` (tests/ on ``PYTHONPATH``); tests/test_timm_suite.py runs
it. timm parametrizes its tests over ``timm.list_models(...)`` when its module is imported, so
the plugin, before collection:

- registers ``vheat_tiny/small/base`` (imports :mod:`vheat_mm.timm_models`);
- adds the vHeat module to the module lists timm passes as ``list_models(module=[...])``:
  timm picks the models of its ``forward_intermediates`` tests by the name of the file that
  defines them, from a list of its own files (``FEAT_INTER_FILTERS``), and vHeat has that API;
- keeps the vHeat items only, without the tests that download the release weights, and skips
  the TorchScript tests with the reason below, as timm leaves out the models it cannot script.
"""
from __future__ import annotations

import functools

import pytest
import timm

import vheat_mm.timm_models as vheat_timm

# timm names a model's module by the last part of its dotted name
VHEAT_MODULE = vheat_timm.__name__.rsplit('.', 1)[-1]

#: timm tests left out, with the reason.
DOWNLOADS = {
    'test_model_load_pretrained': 'downloads the release weights',
    'test_model_features_pretrained': 'downloads the release weights',
}
NOT_SCRIPTABLE = ('vHeat refuses torch.jit.script (its HCO keeps caches per feature size and '
                  'chooses kernels in Python); torch.export and torch.compile are its graph '
                  'paths')
SKIPPED = {
    'test_model_forward_torchscript': NOT_SCRIPTABLE,
    'test_model_forward_fx_torchscript': NOT_SCRIPTABLE,
}


def _with_vheat_module(list_models):
    @functools.wraps(list_models)
    def wrapped(*args, module='', **kwargs):
        if module and not isinstance(module, str):
            module = [*module, VHEAT_MODULE]
        return list_models(*args, module=module, **kwargs)
    return wrapped


def pytest_configure(config: pytest.Config) -> None:
    timm.list_models = _with_vheat_module(timm.list_models)  # before timm's module is imported


def is_vheat_item(item: pytest.Item) -> bool:
    return any(f'-{name}' in item.name for name in vheat_timm.MODEL_NAMES)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept = [item for item in items
            if is_vheat_item(item) and item.originalname not in DOWNLOADS]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept
    for item in kept:
        if item.originalname in SKIPPED:
            item.add_marker(pytest.mark.skip(reason=SKIPPED[item.originalname]))
