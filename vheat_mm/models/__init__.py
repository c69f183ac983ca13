"""The vHeat network in plain PyTorch (no OpenMMLab import).

- :mod:`.heat`: the heat conduction as plain functions (DCT bases, decay map, transforms);
- :mod:`.layers`: generic channels-last layers (the in-place rule is :mod:`vheat_mm.policy`'s);
- :mod:`.heat_operator`: the Heat Conduction Operator and the cache of what it derives;
- :mod:`.arch`: the architectures, the stride and freq_embed grid of each stage, argument checks;
- :mod:`.keywords`: the constructors' keyword checks (one error for an unknown keyword);
- :mod:`.blocks`: the residual block and the stage;
- :mod:`.freq_embed_resize`: resizing a loaded freq_embed of another resolution (the mode table);
- :mod:`.trunk`: :class:`VHeatTrunk`, what both models share (stem, freq_embeds, stages, the
  deploy form, the load hooks);
- :mod:`.vheat`: the models, :class:`VHeat` (classifier) and :class:`VHeatFeatures` (backbone).
"""
from .arch import ARCH_SETTINGS, Arch, freq_embed_sizes, resolve_arch, stage_stride
from .freq_embed_resize import (FREQ_EMBED_RESIZE_MODES, FreqEmbedResize, freq_embed_resizes,
                                resize_loaded_freq_embeds)
from .heat import dct_basis, heat_conduction, heat_decay_map, pad_freq_embed, resize_freq_embed
from .heat_operator import HeatConductionOperator, HeatContext, TensorCache
from .trunk import VHeatTrunk, switch_to_deploy
from .vheat import VHeat, VHeatFeatures

__all__ = ['ARCH_SETTINGS', 'FREQ_EMBED_RESIZE_MODES', 'Arch', 'FreqEmbedResize',
           'HeatConductionOperator', 'HeatContext', 'TensorCache', 'VHeat', 'VHeatFeatures',
           'VHeatTrunk', 'dct_basis', 'freq_embed_resizes', 'freq_embed_sizes', 'heat_conduction',
           'heat_decay_map', 'pad_freq_embed', 'resize_freq_embed', 'resize_loaded_freq_embeds',
           'resolve_arch', 'stage_stride',
           'switch_to_deploy']
