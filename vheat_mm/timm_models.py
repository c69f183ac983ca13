"""vHeat as timm models: ``timm.create_model('vheat_tiny' | 'vheat_small' | 'vheat_base', ...)``.

Registered when timm is installed and vheat_mm is imported. The model is the same
:class:`~vheat_mm.models.VHeat` (official state-dict keys) with timm's interface:
``forward_features`` (the last stage, NCHW, before the head's norm), ``forward_head``
(norm, average pool, linear; ``pre_logits=True`` stops before the linear),
``get_classifier`` / ``reset_classifier``, ``forward_intermediates`` and ``feature_info``, so
``features_only=True`` with ``out_indices`` gives the stage maps (through timm's getter
wrapper). ``pretrained=True`` reads the official ImageNet-1k release named in the
``pretrained_cfg`` (or a local ``file`` given in ``pretrained_cfg_overlay``), through
:func:`vheat_mm.checkpoint.checkpoint_filter_fn`: a checkpoint of another resolution has its
freq_embed resized, and the official ``{'model': ..., 'model_ema': ...}`` layout is unwrapped
(timm reads ``model_ema`` first). Files written by the official training code, with its yacs
config, are read as they are (:func:`~vheat_mm.checkpoint.reading_official_checkpoints`);
weights holding NaN or inf are refused.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import Tensor, nn

from .checkpoint import (PRETRAINED_URLS, check_finite, checkpoint_filter_fn, find_state_dict,
                         reading_official_checkpoints)
from .models import VHeat

__all__ = ['VHeatTimm', 'register_timm_models']
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VHeatTimm(VHeat):
    """:class:`~vheat_mm.models.VHeat` with timm's model interface (module docstring).

    timm's keywords ``in_chans`` (for ``in_channels``), ``num_classes`` (0: no classifier) and
    ``global_pool`` (only ``'avg'``); the others are those of :class:`~vheat_mm.models.VHeat`.
    """

    def __init__(self, arch: str | dict = 'tiny', *, in_chans: int = 3, num_classes: int = 1000,
                 global_pool: str = 'avg', **kwargs):
        if global_pool != 'avg':
            raise ValueError(f"vHeat pools by averaging: global_pool must be 'avg', got "
                             f'{global_pool!r}')
        super().__init__(arch, in_channels=in_chans, num_classes=max(num_classes, 1), **kwargs)
        self.num_features = self.head_hidden_size = self.arch.dims[-1]
        self.feature_info = [dict(num_chs=dim, reduction=4 * 2**i, module=f'layers.{i}')
                             for i, dim in enumerate(self.arch.dims)]
        self.reset_classifier(num_classes)

    def get_classifier(self) -> nn.Module:
        return self.classifier[3]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool not in (None, 'avg'):
            raise ValueError(f"global_pool must be 'avg', got {global_pool!r}")
        self.num_classes = num_classes
        self.classifier[3] = (nn.Linear(self.num_features, num_classes) if num_classes > 0
                              else nn.Identity())

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's map, (B, C, H, W), before the head's norm."""
        return self.forward_stages(x)[-1].permute(0, 3, 1, 2)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        norm, pool, flatten, fc = self.classifier
        x = flatten(pool(norm(x.permute(0, 2, 3, 1))))
        return x if pre_logits else fc(x)

    def forward_intermediates(self, x: Tensor, indices: int | Sequence[int] | None = None,
                              norm: bool = False, stop_early: bool = False,
                              output_fmt: str = 'NCHW', intermediates_only: bool = False):
        """timm's feature API: the stage maps at ``indices`` (NCHW), and the final features."""
        from timm.models._features import feature_take_indices
        if output_fmt not in ('NCHW', 'NHWC'):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take, _ = feature_take_indices(len(self.layers), indices)
        stages = self.forward_stages(x)
        maps = [stages[i] if output_fmt == 'NHWC' else stages[i].permute(0, 3, 1, 2)
                for i in take]
        if intermediates_only:
            return maps
        return stages[-1].permute(0, 3, 1, 2), maps

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1,
                                  prune_norm: bool = False, prune_head: bool = True) -> list[int]:
        """The absolute stage indices for ``indices``; with ``prune_head`` the classifier goes.
        (The stages stay, so the state-dict keys stay the official ones.)"""
        from timm.models._features import feature_take_indices
        take, _ = feature_take_indices(len(self.layers), indices)
        if prune_head:
            self.reset_classifier(0)
        return take


def timm_filter_fn(checkpoint: Mapping[str, Any], model: VHeatTimm) -> dict[str, Tensor]:
    """timm's ``pretrained_filter_fn``: the official layouts unwrapped, NaN or inf refused,
    freq_embed fitted."""
    state_dict = find_state_dict(checkpoint)
    check_finite(state_dict, f'the pretrained weights of {type(model).__name__}')
    return checkpoint_filter_fn(state_dict, model)


def _pretrained_cfg(arch: str) -> dict:
    return dict(url=PRETRAINED_URLS[arch], num_classes=1000, input_size=(3, 224, 224),
                pool_size=(7, 7), crop_pct=0.875, interpolation='bicubic',
                mean=IMAGENET_MEAN, std=IMAGENET_STD, first_conv='patch_embed.conv1',
                classifier='classifier.3', fixed_input_size=False, license='apache-2.0',
                paper_ids='arXiv:2405.16555', origin_url='https://github.com/MzeroMiko/vHeat')


def register_timm_models() -> tuple[str, ...]:
    """Register vheat_tiny/small/base with timm (once); returns their names."""
    from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
    from timm.models._registry import _model_entrypoints

    names = tuple(f'vheat_{arch}' for arch in PRETRAINED_URLS)
    if all(name in _model_entrypoints for name in names):
        return names

    def entrypoint(arch: str):
        def create(pretrained: bool = False, **kwargs) -> VHeatTimm:
            kwargs.setdefault('arch', arch)
            with reading_official_checkpoints():  # timm reads the file inside
                return build_model_with_cfg(
                    VHeatTimm, f'vheat_{arch}', pretrained,
                    pretrained_filter_fn=timm_filter_fn,
                    feature_cfg=dict(feature_cls='getter', out_indices=(0, 1, 2, 3)), **kwargs)
        create.__name__ = create.__qualname__ = f'vheat_{arch}'
        create.__module__ = __name__
        create.__doc__ = f'vHeat-{arch[0].upper()} (arXiv 2405.16555), ImageNet-1k.'
        return create

    default_cfgs = generate_default_cfgs({f'vheat_{arch}.in1k': _pretrained_cfg(arch)
                                          for arch in PRETRAINED_URLS})
    import sys
    module = sys.modules[__name__]
    module.default_cfgs = default_cfgs  # timm reads the variants' configs from the module
    for arch in PRETRAINED_URLS:
        fn = entrypoint(arch)
        setattr(module, fn.__name__, fn)
        register_model(fn)
    return names
