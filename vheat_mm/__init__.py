"""vheat_mm: vHeat (arXiv 2405.16555) as a plain PyTorch model and an OpenMMLab and timm plugin.

``import vheat_mm`` (or any of ``vheat_mm.models``, ``.kernels``, ``.checkpoint``) imports torch
alone. It registers vHeat with mmengine and timm whichever is imported first
(:mod:`vheat_mm.plugin`): :mod:`vheat_mm.mm` is imported as soon as mmengine is, and registers
the backbone ``vHeat`` (plus ``MMDET_VHEAT`` / ``MMSEG_VHEAT``, the official config names),
``VHeatRunner`` and the project's hooks into mmengine's root registries, which mmpretrain's,
mmdet's and mmseg's registries search; :mod:`vheat_mm.timm_models` is imported as soon as timm
is, and registers ``vheat_tiny``, ``vheat_small`` and ``vheat_base`` as timm models.
"""
from . import plugin
from .checkpoint import CheckpointError, load_pretrained
from .models import ARCH_SETTINGS, VHeat, VHeatFeatures
from .version import __version__

plugin.follow_hosts()

__all__ = ['ARCH_SETTINGS', 'CheckpointError', 'VHeat', 'VHeatFeatures', 'load_pretrained',
           '__version__']
