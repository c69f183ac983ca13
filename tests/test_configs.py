"""The shipped configs build in their toolbox with the official architectures' parameter counts."""
import importlib
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

CONFIGS = Path(__file__).parents[1] / 'configs'
EXPECTED = {
    'mask_rcnn/mask-rcnn_vheat-t_fpn_1x_coco.py': 52.74,
    'mask_rcnn/mask-rcnn_vheat-s_fpn_1x_coco.py': 74.11,
    'mask_rcnn/mask-rcnn_vheat-b_fpn_1x_coco.py': 114.69,
    'mask_rcnn/mask-rcnn_vheat-t_fpn_ms-crop-3x_coco.py': 50.36,  # img_size 224, as official
    'mask_rcnn/mask-rcnn_vheat-s_fpn_ms-crop-3x_coco.py': 74.11,
    'upernet/upernet_vheat-t_8xb2-160k_ade20k-512x512.py': 64.89,
    'upernet/upernet_vheat-s_8xb2-160k_ade20k-512x512.py': 86.26,
    'upernet/upernet_vheat-b_8xb2-160k_ade20k-512x512.py': 128.82,
    'classification/vheat-t_16xb128_in1k.py': 30.85,
    'classification/vheat-s_16xb128_in1k.py': 52.22,
    'classification/vheat-b_16xb128_in1k.py': 92.13,
}


@pytest.mark.slow
@pytest.mark.parametrize('name,params', EXPECTED.items())
def test_config_builds_with_official_parameter_count(name, params):
    cfg = Config.fromfile(str(CONFIGS / name))
    assert cfg.custom_imports['imports'] == ['vheat_mm']
    assert cfg.model.backbone.type == 'vHeat'
    registry = importlib.import_module(f'{cfg.default_scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(cfg.default_scope):  # leaves no global scope
        model = registry.build(cfg.model)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == params
