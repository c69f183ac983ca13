"""vheat_mm: vHeat (arXiv 2405.16555) as a plain PyTorch model and an OpenMMLab plugin.

``import vheat_mm`` (or any of ``vheat_mm.models``, ``.kernels``, ``.checkpoint``) imports
torch alone: it registers nothing, patches nothing and installs no hook. Where mmengine is
imported already, as it is when a config's ``custom_imports=dict(imports=['vheat_mm'])`` runs,
it also imports :mod:`vheat_mm.mm`, which registers the backbone ``vHeat`` into every installed
toolbox among mmpretrain, mmdet and mmseg (plus ``MMDET_VHEAT`` / ``MMSEG_VHEAT``, the
official config names) and makes mmengine read checkpoints safely. Where timm is imported
already, it imports :mod:`vheat_mm.timm_models`, which registers ``vheat_tiny``,
``vheat_small`` and ``vheat_base`` as timm models. A program that imports vheat_mm before
mmengine or timm imports ``vheat_mm.mm`` or ``vheat_mm.timm_models`` itself.
"""
import sys

from .checkpoint import CheckpointError, load_pretrained
from .models import ARCH_SETTINGS, VHeat, VHeatFeatures
from .version import __version__

REGISTERED_INTO: tuple[str, ...] = ()  # the toolboxes vheat_mm.mm registered into
TIMM_MODELS: tuple[str, ...] = ()  # the timm models vheat_mm.timm_models registered
if 'mmengine' in sys.modules:
    from .mm import REGISTERED_INTO
if 'timm' in sys.modules:
    from .timm_models import MODEL_NAMES as TIMM_MODELS


def register_all() -> tuple[str, ...]:
    """Register into every installed toolbox (:func:`vheat_mm.mm.register_all`); returns the
    toolboxes registered into."""
    from .mm import register_all as register
    return register()


__all__ = ['ARCH_SETTINGS', 'CheckpointError', 'REGISTERED_INTO', 'TIMM_MODELS', 'VHeat',
           'VHeatFeatures', 'register_all', 'load_pretrained', '__version__']
