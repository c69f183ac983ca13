"""The vHeat network in plain PyTorch (no OpenMMLab import)."""
from .heat import dct_basis, heat_conduction, heat_decay_map, resize_freq_embed
from .vheat import ARCH_SETTINGS, HeatConductionOperator, VHeat, VHeatFeatures, resolve_arch

__all__ = ['ARCH_SETTINGS', 'HeatConductionOperator', 'VHeat', 'VHeatFeatures', 'dct_basis',
           'heat_conduction', 'heat_decay_map', 'resize_freq_embed', 'resolve_arch']
