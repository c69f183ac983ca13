"""The vHeat network in plain PyTorch (no OpenMMLab import).

- :mod:`.heat`: the heat conduction as plain functions (DCT bases, decay map, transforms);
- :mod:`.layers`: generic channels-last layers and the in-place rule;
- :mod:`.heat_operator`: the Heat Conduction Operator and the cache of what it derives;
- :mod:`.vheat`: architectures, blocks, stages, :class:`VHeatTrunk`, :class:`VHeat`,
  :class:`VHeatFeatures`.
"""
from .heat import dct_basis, heat_conduction, heat_decay_map, pad_freq_embed, resize_freq_embed
from .heat_operator import HeatConductionOperator, HeatContext, TensorCache
from .vheat import (ARCH_SETTINGS, FREQ_EMBED_FITS, Arch, VHeat, VHeatFeatures, VHeatTrunk,
                    fit_freq_embeds, freq_embed_sizes, resolve_arch, stage_stride)

__all__ = ['ARCH_SETTINGS', 'FREQ_EMBED_FITS', 'Arch', 'HeatConductionOperator',
           'HeatContext', 'TensorCache', 'VHeat', 'VHeatFeatures', 'VHeatTrunk', 'dct_basis',
           'fit_freq_embeds', 'freq_embed_sizes', 'heat_conduction', 'heat_decay_map',
           'pad_freq_embed', 'resize_freq_embed', 'resolve_arch', 'stage_stride']
