"""The official repository's 8 downstream configs, with only their ``_base_`` fixed.

A user arriving from github MzeroMiko/vHeat changes two things in an official config: the
``_base_`` (a Swin config the official repository does not ship, here taken from the toolbox's
packaged configs) and ``custom_imports``. Each config then builds in its toolbox with the
official parameter count, loads its ``pretrained`` checkpoint (freq_embed resized from 224)
and runs. The configs are read from a checkout of the official repository named by
``VHEAT_OFFICIAL_CHECKOUT``; without one the test is skipped.
"""
import logging
import os
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from helpers import ROOT, load_script
from vheat_mm.mm.toolbox import registry as toolbox_registry
from vheat_mm.models import VHeat

CHECKOUT = Path(os.environ.get('VHEAT_OFFICIAL_CHECKOUT', '/nonexistent'))
# official config -> (toolbox, classifier arch of its pretrained checkpoint, params in millions)
OFFICIAL = {
    'detection/configs/vheat/mask_rcnn_fpn_coco_tiny.py': ('mmdet', 'tiny', 52.74),
    'detection/configs/vheat/mask_rcnn_fpn_coco_small.py': ('mmdet', 'small', 74.11),
    'detection/configs/vheat/mask_rcnn_fpn_coco_base.py': ('mmdet', 'base', 114.69),
    'detection/configs/vheat/mask_rcnn_fpn_coco_tiny_ms_3x.py': ('mmdet', 'tiny', 50.36),
    'detection/configs/vheat/mask_rcnn_fpn_coco_small_ms_3x.py': ('mmdet', 'small', 74.11),
    'segmentation/configs/vheat/upernet_vheat_160k_ade20k_512x512_tiny.py': ('mmseg', 'tiny', 64.89),
    'segmentation/configs/vheat/upernet_vheat_160k_ade20k_512x512_small.py': ('mmseg', 'small', 86.26),
    'segmentation/configs/vheat/upernet_vheat_160k_ade20k_512x512_base.py': ('mmseg', 'base', 128.82),
}
fix_base = load_script(ROOT / 'tools/analysis_tools/recipes.py').fix_base


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
    """Official-layout ImageNet checkpoints (224) of each arch, made here."""
    directory = tmp_path_factory.mktemp('pretrained')
    paths = {}
    for arch in ('tiny', 'small', 'base'):
        paths[arch] = directory / f'vHeat_{arch}.pth'
        torch.save(dict(model=VHeat(arch).state_dict()), paths[arch])
    return paths


@pytest.mark.slow
@pytest.mark.skipif(not CHECKOUT.is_dir(), reason='set VHEAT_OFFICIAL_CHECKOUT to a checkout of '
                                                  'github MzeroMiko/vHeat')
@pytest.mark.parametrize('name', list(OFFICIAL))
def test_official_config_builds_loads_and_runs(name, pretrained, tmp_path, caplog):
    toolbox, arch, params = OFFICIAL[name]
    path = tmp_path / Path(name).name
    path.write_text(fix_base((CHECKOUT / name).read_text(), toolbox))
    cfg = Config.fromfile(str(path))
    assert cfg.model.backbone.pretrained == 'path/to/pth'  # the official placeholder
    cfg.model.backbone.pretrained = str(pretrained[arch])
    registry = toolbox_registry(toolbox).MODELS
    with DefaultScope.overwrite_default_scope(toolbox), \
            caplog.at_level(logging.INFO, logger='vheat_mm'):
        model = registry.build(cfg.model)
        assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == params
        model.init_weights()
        logged = caplog.text
        assert 'ignoring the Swin keywords the config inherits' in logged
        assert 'ignoring init_cfg=' in logged  # Swin's, never loaded
        assert f'loaded vHeat weights from {pretrained[arch]}' in logged
        size = model.backbone.img_size
        assert f'freq_embed.0 (56, 56, {model.backbone.arch.dims[0]}) -> ' in logged \
            or size == 224
        torch.testing.assert_close(
            model.backbone.layers[0][0].op.linear.weight,
            torch.load(pretrained[arch], weights_only=True)['model']['layers.0.0.op.linear.weight'])
        model.eval()
        with torch.no_grad():
            feats = model.extract_feat(torch.randn(1, 3, 128, 160))
    assert len(feats) >= 4 and all(torch.isfinite(f).all() for f in feats)
