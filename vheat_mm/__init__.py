"""vheat_mm: vHeat (arXiv 2405.16555) as a plain PyTorch model and an OpenMMLab plugin.

``import vheat_mm`` registers the backbone ``vHeat`` into every installed toolbox among
mmpretrain, mmdet and mmseg (plus ``MMDET_VHEAT`` / ``MMSEG_VHEAT``, the official config names),
so configs use it with ``custom_imports=dict(imports=['vheat_mm'])``. With timm installed it
also registers ``vheat_tiny``, ``vheat_small`` and ``vheat_base`` as timm models.
"""
import importlib.util

from .checkpoint import CheckpointError, load_pretrained
from .mm import register_all
from .models import ARCH_SETTINGS, VHeat, VHeatFeatures
from .version import __version__

REGISTERED_INTO = register_all()

if importlib.util.find_spec('timm') is not None:  # vheat_tiny/small/base as timm models
    from .timm_models import register_timm_models
    TIMM_MODELS = register_timm_models()
else:
    TIMM_MODELS = ()

__all__ = ['ARCH_SETTINGS', 'CheckpointError', 'REGISTERED_INTO', 'TIMM_MODELS', 'VHeat',
           'VHeatFeatures', 'register_all',
           'load_pretrained', '__version__']
