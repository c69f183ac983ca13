"""Every import order works: vheat_mm before or after mmengine, the toolboxes and timm.

Each case runs in a fresh interpreter: a *first* import (vheat_mm, a part of it, or a toolbox and
then vheat_mm), then a *target*, what a user does next: a model built from a config by a toolbox's
API or by mmengine's runner, a config naming the official backbones, ``timm.create_model``. The
target prints the class and module of the backbone it built and the shapes of its outputs on a
64x64 image, which are asserted.

Every first runs with the cheapest target, every target after ``import vheat_mm.models``, and
each toolbox first with its own target; the rest of the matrix (the same mechanisms with other
targets, about 6 s each in a fresh interpreter) is marked ``matrix`` and runs with ``pytest -m
matrix tests/test_import_order.py``. ``tests/test_import.py`` checks that
the first imports themselves import no toolbox.
"""
from __future__ import annotations

import itertools
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

from helpers import CONFIGS, run_fresh

# what the interpreter runs first, by id; FIRST_NEEDS: the package a first imports besides vheat_mm
TOOLBOXES_FIRST = ('mmengine', 'mmdet', 'mmseg', 'mmpretrain', 'timm')
FIRSTS = {
    'vheat_mm': 'import vheat_mm',
    'vheat_mm.models': 'import vheat_mm.models',
    'from-vheat_mm-import-VHeat': 'from vheat_mm import VHeat',
    **{f'{toolbox}-then-vheat_mm': f'import {toolbox}\nimport vheat_mm'
       for toolbox in TOOLBOXES_FIRST},
}
FIRST_NEEDS = {f'{toolbox}-then-vheat_mm': toolbox for toolbox in TOOLBOXES_FIRST}

MASK_RCNN = CONFIGS / 'mask_rcnn/mask-rcnn_vheat-t_fpn_1x_coco.py'
UPERNET = CONFIGS / 'upernet/upernet_vheat-t_8xb2-160k_ade20k-512x512.py'
CLASSIFIER = CONFIGS / 'classification/vheat-t_16xb128_in1k.py'
DEMO = CONFIGS / 'demo/mask-rcnn_vheat-t_fpn_shapes.py'

# A user's configs in a folder of their own: one inherits the project's by absolute path, the
# others name vheat_mm in their own custom_imports.
USER_CONFIGS = {
    'inheriting.py': f'_base_ = [{str(MASK_RCNN)!r}]\n',
    'own_custom_imports.py': '''\
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['vheat_mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='vHeat', arch='tiny', img_size=224,
                  out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=[96, 192, 384, 768]))
''',
    # the official configs' way: the Swin config's backbone, its type and keywords replaced
    'official_mmdet.py': '''\
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'
custom_imports = dict(imports=['vheat_mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(type='MMDET_VHEAT', depths=(2, 2, 9, 2), dims=96, drop_path_rate=0.1,
                  pretrained=None),
    neck=dict(in_channels=[96, 192, 384, 768]))
''',
    'official_mmseg.py': '''\
_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['vheat_mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(type='MMSEG_VHEAT', depths=(2, 2, 9, 2), dims=96, drop_path_rate=0.3,
                  pretrained=None),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))
''',
}


class Target(NamedTuple):
    """What the interpreter runs after the first import: ``code`` sets ``found``, a dict of
    ``described(module)`` entries ({user} is the folder of USER_CONFIGS, {work_dir} a fresh
    folder); ``needs`` is the package it uses, ``expected`` what it must find."""
    needs: str
    code: str
    expected: dict


VHEAT_T_STAGES = [[1, 96, 16, 16], [1, 192, 8, 8], [1, 384, 4, 4], [1, 768, 2, 2]]
BACKBONE = dict(backbone=dict(cls='vheat_mm.mm.backbone.VHeatBackbone', shapes=VHEAT_T_STAGES))


def _init_detector(config: str) -> str:
    return f"""
        from mmdet.apis import init_detector
        found = dict(backbone=described(init_detector({config!r}, None, device='cpu').backbone))
        """


def _init_segmentor(config: str) -> str:
    return f"""
        from mmseg.apis import init_model
        found = dict(backbone=described(init_model({config!r}, None, device='cpu').backbone))
        """


TARGETS = {
    'mmdet.init_detector': Target('mmdet', _init_detector(str(MASK_RCNN)), BACKBONE),
    'mmdet.init_detector-user-config-inheriting': Target(
        'mmdet', _init_detector('{user}/inheriting.py'), BACKBONE),
    'mmdet.init_detector-user-config-own-custom_imports': Target(
        'mmdet', _init_detector('{user}/own_custom_imports.py'), BACKBONE),
    'mmseg.init_model': Target('mmseg', _init_segmentor(str(UPERNET)), BACKBONE),
    'mmpretrain.get_model': Target('mmpretrain', f"""
        import mmpretrain
        found = dict(backbone=described(mmpretrain.get_model({str(CLASSIFIER)!r}).backbone))
        """, dict(backbone=dict(BACKBONE['backbone'], shapes=VHEAT_T_STAGES[-1:]))),
    'mmengine.Runner.from_cfg': Target('mmdet', f"""
        from mmengine.config import Config
        from mmengine.runner import Runner
        cfg = Config.fromfile({str(DEMO)!r})
        cfg.work_dir = '{{work_dir}}'
        found = dict(backbone=described(Runner.from_cfg(cfg).model.backbone))
        """, BACKBONE),
    'MMDET_VHEAT': Target('mmdet', _init_detector('{user}/official_mmdet.py'), BACKBONE),
    'MMSEG_VHEAT': Target('mmseg', _init_segmentor('{user}/official_mmseg.py'), BACKBONE),
    'timm.create_model': Target('timm', """
        import timm
        found = dict(classifier=described(timm.create_model('vheat_tiny')),
                     features=described(timm.create_model('vheat_small', features_only=True)))
        """, dict(classifier=dict(cls='vheat_mm.models.vheat.VHeat', shapes=[[1, 1000]]),
                  # timm's getter wrapper around vHeat-S, whose stage widths are vHeat-T's
                  features=dict(cls='timm.models._features.FeatureGetterNet',
                                shapes=VHEAT_T_STAGES))),
}
CHEAPEST_TARGET = 'timm.create_model'

PROGRAM = '''
import json
{first}


def described(module):
    """The class of ``module`` and the shapes of its outputs on a 64x64 image."""
    import torch
    with torch.no_grad():
        out = module.eval()(torch.zeros(1, 3, 64, 64))
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    return dict(cls=f'{{type(module).__module__}}.{{type(module).__name__}}',
                shapes=[list(o.shape) for o in outs])

{target}
print(json.dumps(found))
'''


# Besides every target after `import vheat_mm.models` and every first before the cheapest
# target: each toolbox imported first, then vheat_mm, then that toolbox's own target (vheat_mm
# registers at once there, not through the finder).
OWN_TARGETS = {'mmengine-then-vheat_mm': 'mmengine.Runner.from_cfg',
               'mmdet-then-vheat_mm': 'mmdet.init_detector-user-config-inheriting',
               'mmseg-then-vheat_mm': 'MMSEG_VHEAT',
               'mmpretrain-then-vheat_mm': 'mmpretrain.get_model'}


def _cases():
    for first, target in itertools.product(FIRSTS, TARGETS):
        representative = target == CHEAPEST_TARGET or first == 'vheat_mm.models' \
            or OWN_TARGETS.get(first) == target
        yield pytest.param(first, target, id=f'{first}--{target}',
                           marks=() if representative else pytest.mark.matrix)


def _write_user_configs(folder: Path) -> Path:
    folder.mkdir()
    for name, text in USER_CONFIGS.items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize('first,target', _cases())
def test_a_model_builds_whatever_was_imported_first(first, target, tmp_path):
    for package in (FIRST_NEEDS.get(first), TARGETS[target].needs):
        if package:
            pytest.importorskip(package)
    user = _write_user_configs(tmp_path / 'user')
    code = PROGRAM.format(first=FIRSTS[first], target=textwrap.dedent(TARGETS[target].code).format(
        user=user, work_dir=tmp_path / 'work_dir'))
    assert run_fresh(code) == TARGETS[target].expected
