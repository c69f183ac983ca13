"""The vHeat backbone with the OpenMMLab backbone contract (``init_cfg``), shared by all toolboxes."""
from __future__ import annotations

import copy
import logging
from typing import Sequence

from mmengine.model import initialize

from ..checkpoint import load_pretrained
from ..models import VHeatFeatures
from ..models.keywords import reject_unknown_keywords, takes_keywords_of

__all__ = ['VHeatBackbone', 'build_official_backbone']

logger = logging.getLogger(__name__)


# Backbone keywords of mmdet's and mmseg's Swin configs that the official vHeat configs inherit
# (their _base_ is a Swin config) and the official MMDET_VHEAT / MMSEG_VHEAT swallow unused.
SWIN_LEFTOVERS = frozenset({
    'pretrain_img_size', 'in_channels', 'embed_dims', 'patch_size', 'window_size', 'num_heads',
    'strides', 'qkv_bias', 'qk_scale', 'patch_norm', 'drop_rate', 'attn_drop_rate',
    'use_abs_pos_embed', 'act_cfg', 'norm_cfg', 'with_cp', 'convert_weights'})


class VHeatBackbone(VHeatFeatures):
    """:class:`~vheat_mm.models.VHeatFeatures` with ``init_cfg``, registered as ``vHeat``.

    ``init_cfg=dict(type='Pretrained', checkpoint=PATH, prefix=None, entry=None, strict=False)``
    loads an official classification checkpoint (``entry``: ``'model_ema'``, the default where
    present, or ``'model'``), an mmengine checkpoint (with or without ``backbone.``) or a plain
    state dict when the runner calls :meth:`init_weights`, with
    :func:`~vheat_mm.checkpoint.load_pretrained`: freq_embed is resized to ``img_size``, every
    key not loaded is logged, and a checkpoint that fits badly warns (``strict``: fails).
    ``map_location``, which mmengine's ``Pretrained`` takes, changes nothing here: the file is
    always read into CPU memory (the safe reader), and ``load_state_dict`` copies each tensor
    to the device of the parameter it fills. Other init types go to mmengine's
    ``initialize``.
    ``check_finite=True`` (a debugging aid) raises on the first NaN or inf in the input or a
    stage's output. The other keywords are those of :class:`~vheat_mm.models.VHeatFeatures`;
    an unknown keyword is a TypeError listing the allowed ones.
    """

    @takes_keywords_of(VHeatFeatures.__init__)
    def __init__(self, arch: str | dict = 'tiny', *,
                 init_cfg: dict | list[dict] | None = None, **options):
        super().__init__(arch, **options)
        self.init_cfg = copy.deepcopy(init_cfg)
        self.is_init = False

    def init_weights(self) -> None:
        """Apply ``init_cfg``: other init types first, then ``Pretrained`` (as mmengine orders them)."""
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        cfgs = [dict(cfg) for cfg in cfgs if cfg]
        others = [cfg for cfg in cfgs if cfg.get('type') != 'Pretrained']
        if others:
            initialize(self, others)
        for cfg in cfgs:
            if cfg.get('type') == 'Pretrained':
                self._load_pretrained(cfg)
        self._freeze_stages()
        self.is_init = True

    def _load_pretrained(self, cfg: dict) -> None:
        unknown = set(cfg) - {'type', 'checkpoint', 'prefix', 'map_location', 'strict', 'entry'}
        if unknown or 'checkpoint' not in cfg:
            raise ValueError(f"init_cfg type='Pretrained' takes checkpoint, prefix, entry, "
                             f"strict and map_location; got {sorted(cfg)}")
        # map_location is not passed on: see the class docstring
        load_pretrained(self, cfg['checkpoint'], prefix=cfg.get('prefix'),  # logs its report
                        entry=cfg.get('entry'), strict=cfg.get('strict', False))


def build_official_backbone(name: str, default_img_size: int):
    """A builder taking the official ``MMDET_VHEAT`` / ``MMSEG_VHEAT`` config keywords.

    As the official classes, it takes its weights from ``pretrained`` (the ``model`` entry of an
    official checkpoint, as they read it) and ignores the Swin
    keywords that the official configs inherit from their Swin ``_base_`` (:data:`SWIN_LEFTOVERS`)
    and an inherited ``init_cfg`` (which would load Swin weights), each with one logged line.

    ``freq_embed_resize`` defaults to 'pad': the official classes load ``pretrained`` without
    resizing, so the official runs started from the file the official
    ``interpolate4downstream.py`` zero-pads; padding at load time starts from the same tensors
    when ``pretrained`` is the 224-pixel classification checkpoint itself.
    """

    @reject_unknown_keywords(f'{name} (official keywords)', tolerated=SWIN_LEFTOVERS | {'init_cfg'})
    def build(*, depths: Sequence[int] = (2, 2, 9, 2), dims: int | Sequence[int] = 96,
              post_norm: bool = True, layer_scale: float | None = None,
              img_size: int = default_img_size, drop_path_rate: float = 0.1,
              out_indices: Sequence[int] = (0, 1, 2, 3), use_checkpoint: bool = False,
              pretrained: str | None = None, frozen_stages: int = -1, in_chans: int = 3,
              mlp_ratio: float = 4.0, check_finite: bool = False, freq_embed_resize: str = 'pad',
              **leftovers) -> VHeatBackbone:
        init_cfg = leftovers.pop('init_cfg', None)
        if leftovers:
            logger.info('%s: ignoring the Swin keywords the config inherits, as the official '
                        'code does: %s', name, ', '.join(sorted(leftovers)))
        if init_cfg is not None:
            logger.warning('%s: ignoring init_cfg=%r; as in the official code, the weights '
                           'come from pretrained=%r', name, init_cfg, pretrained)
        arch = dict(depths=depths, dims=dims, post_norm=post_norm, layer_scale=layer_scale,
                    mlp_ratio=mlp_ratio)
        return VHeatBackbone(arch, img_size=img_size, in_channels=in_chans,
                             drop_path_rate=drop_path_rate, out_indices=out_indices,
                             frozen_stages=frozen_stages, with_cp=use_checkpoint,
                             check_finite=check_finite, freq_embed_resize=freq_embed_resize,
                             init_cfg=None if pretrained is None  # the official code reads 'model'
                             else dict(type='Pretrained', checkpoint=pretrained, entry='model'))

    build.__doc__ = (f'vHeat backbone from the official config keywords (img_size defaults '
                     f'to {default_img_size}, as in the official code).')
    return build
