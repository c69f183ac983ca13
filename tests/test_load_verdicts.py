"""One checkpoint and one model give one verdict on every load path.

Each case below is a checkpoint made from the state dict of the model it is loaded into (so
that 'exact' is exact for a classifier and a backbone alike); each path loads it as a user
would:

- ``load_pretrained`` (a classifier);
- ``init_cfg`` (mm's backbone, ``type='Pretrained'``);
- ``load_from`` (the runner's ``load_checkpoint``, what ``load_from``, ``--resume`` and
  ``tools/test.py CKPT`` reach; a classifier);
- ``timm`` (``timm.create_model(..., pretrained=True)`` with the file in
  ``pretrained_cfg_overlay``; timm has no strict keyword);
- ``hub`` (hubconf's ``pretrained=PATH``, which is always strict).

Each path runs in each mode it has: by default, inside ``strict_loading()`` (the tools'
``--strict``) and with ``strict=True``; the verdict is 'loaded', 'warned' (the coverage
warning) or 'refused' (:class:`CheckpointError`), and it must be the row's in every cell.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Callable

import pytest
import timm
import torch

from helpers import MINI, ROOT, load_script
from vheat_mm.checkpoint import CheckpointError, load_pretrained, strict_loading
from vheat_mm.mm.backbone import VHeatBackbone
from vheat_mm.mm.runner import load_checkpoint
from vheat_mm.models import VHeat
import vheat_mm.timm_models  # noqa: F401  registers vheat_tiny with timm

hub = load_script(ROOT / 'hubconf.py')

DEEPER = dict(MINI, depths=(1, 1, 6, 1))
WIDER = dict(MINI, dims=16)


def classifier(arch=MINI, **options) -> VHeat:
    return VHeat(arch, img_size=options.pop('img_size', 64), num_classes=5, **options)


def backbone(arch=MINI, **options) -> VHeatBackbone:
    return VHeatBackbone(arch, img_size=options.pop('img_size', 64), **options)


def _other_shape(state: dict) -> dict:
    key = next(k for k in state if k.endswith('norm1.weight'))
    return dict(state, **{key: torch.ones(state[key].shape[0] + 1)})


def _nan(state: dict) -> dict:
    key = next(k for k in state if k.endswith('op.linear.weight'))
    bad = state[key].clone()
    bad[0, 0] = float('nan')
    return dict(state, **{key: bad})


# name: (checkpoint from (model factory, model options), model options, verdicts by mode)
LOADED, WARNED, REFUSED = 'loaded', 'warned', 'refused'
CASES: dict[str, tuple[Callable, dict, tuple[str, str, str]]] = {
    'exact (official layout)': (lambda make, kw: {'model': make(**kw).state_dict()}, {},
                                (LOADED, LOADED, LOADED)),
    "mmengine's runner layout": (
        lambda make, kw: {'state_dict': make(**kw).state_dict(), 'meta': {'epoch': 1}}, {},
        (LOADED, LOADED, LOADED)),
    'official with model_ema': (
        lambda make, kw: {'model': make(**kw).state_dict(), 'model_ema': make(**kw).state_dict()},
        {}, (LOADED, LOADED, LOADED)),
    'freq_embed of another resolution': (
        lambda make, kw: {'model': make(img_size=128, **kw).state_dict()}, {},
        (LOADED, LOADED, LOADED)),
    "a larger freq_embed under 'pad'": (
        lambda make, kw: {'model': make(img_size=128, **kw).state_dict()},
        {'freq_embed_resize': 'pad'}, (REFUSED, REFUSED, REFUSED)),
    'one tensor of another shape': (
        lambda make, kw: {'model': _other_shape(make(**kw).state_dict())}, {},
        (LOADED, LOADED, REFUSED)),
    'one tensor missing': (
        lambda make, kw: {'model': dict(list(make(**kw).state_dict().items())[1:])}, {},
        (LOADED, LOADED, REFUSED)),
    'one tensor the model lacks': (
        lambda make, kw: {'model': dict(make(**kw).state_dict(), extra=torch.ones(2))}, {},
        (LOADED, LOADED, REFUSED)),
    'a wider arch': (lambda make, kw: {'model': make(WIDER, **kw).state_dict()}, {},
                     (WARNED, REFUSED, REFUSED)),
    'a deeper arch': (lambda make, kw: {'model': make(DEEPER, **kw).state_dict()}, {},
                      (WARNED, REFUSED, REFUSED)),
    'another network': (
        lambda make, kw: {'model': {'patch_embed.proj.weight': torch.ones(96, 3, 4, 4),
                                    'head.weight': torch.ones(1000, 768)}}, {},
        (WARNED, REFUSED, REFUSED)),
    'NaN in a weight': (lambda make, kw: {'model': _nan(make(**kw).state_dict())}, {},
                        (REFUSED, REFUSED, REFUSED)),
}
MODES = ('default', 'strict_loading()', 'strict=True')


def _load_pretrained(path, options, strict):
    model = classifier(**options)
    load_pretrained(model, path, strict=strict)
    return model


def _init_cfg(path, options, strict):
    model = backbone(**options, init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                              strict=strict))
    model.init_weights()
    return model


def _load_from(path, options, strict):
    model = classifier(**options)
    load_checkpoint(model, str(path), strict=strict)
    return model


def _timm(path, options, strict):
    assert not strict
    return timm.create_model('vheat_tiny', pretrained=True, arch=MINI, img_size=64,
                             num_classes=5, **options,
                             pretrained_cfg_overlay=dict(file=str(path), num_classes=5))


def _hub(path, options, strict):
    assert strict
    return hub._vheat(MINI, path, num_classes=5, img_size=64, **options)


# path: (load, the model it loads into, its modes)
PATHS = {
    'load_pretrained': (_load_pretrained, classifier, MODES),
    'init_cfg': (_init_cfg, backbone, MODES),
    'load_from': (_load_from, classifier, MODES),
    'timm': (_timm, classifier, MODES[:2]),
    'hub': (_hub, classifier, MODES[2:]),
}


def verdict(load: Callable, caplog) -> tuple[str, object]:
    caplog.clear()
    try:
        with caplog.at_level(logging.WARNING):
            model = load()
    except CheckpointError:
        return REFUSED, None
    warned = any(r.levelno == logging.WARNING and 'fits the model badly' in r.getMessage()
                 for r in caplog.records)
    return (WARNED if warned else LOADED), model


@pytest.mark.parametrize('case', list(CASES))
def test_one_verdict_on_every_path(case, tmp_path, caplog):
    make_checkpoint, options, expected = CASES[case]
    got, want = {}, {}
    for name, (load, model_factory, modes) in PATHS.items():
        path = tmp_path / f'{name}.pth'
        torch.manual_seed(0)
        checkpoint = make_checkpoint(model_factory, {})
        torch.save(checkpoint, path)
        for mode in modes:
            context = strict_loading() if mode == 'strict_loading()' else contextlib.nullcontext()
            with context:
                got[name, mode], model = verdict(
                    lambda: load(path, options, strict=mode == 'strict=True'), caplog)
            want[name, mode] = expected[MODES.index(mode)]
            if got[name, mode] == LOADED and case.startswith(('exact', 'official with')):
                state = checkpoint.get('model_ema', checkpoint['model'])
                own = model.state_dict()
                assert all(torch.equal(own[k], v) for k, v in state.items()), (name, mode)
    assert got == want
