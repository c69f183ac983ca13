"""vHeat as timm models: ``timm.create_model('vheat_tiny' | 'vheat_small' | 'vheat_base', ...)``.

A timm model file: it imports timm, and its ``@register_model`` functions register the three
names when it is imported (``import vheat_mm`` imports it where timm is imported already;
elsewhere ``import vheat_mm.timm_models`` does). The model is
:class:`~vheat_mm.models.VHeat` itself (official state-dict keys), which has timm's interface:
``forward_features`` (the last stage, NCHW), ``forward_head(pre_logits=...)``,
``get_classifier`` / ``reset_classifier`` (``global_pool=''``: the unpooled map, of
``pool_size`` at the config's ``input_size``), ``forward_intermediates`` and ``feature_info``, so
``features_only=True`` with ``out_indices`` gives the stage maps (through timm's getter
wrapper, the only ``feature_cls`` allowed). timm's keyword ``in_chans`` is the model's
``in_channels``; the others are those of :class:`~vheat_mm.models.VHeat` (``img_size``,
``drop_path_rate``, ...). The models trace with torch.fx and export with torch.export as the
plain model does (no timm registration needed); TorchScript is refused.

``pretrained=True`` reads the official ImageNet-1k release named in the ``pretrained_cfg`` (or a
local ``file`` or another ``url`` given in ``pretrained_cfg_overlay``) with
:func:`~vheat_mm.checkpoint.read_checkpoint`, the reader of every vheat_mm checkpoint (nothing in
the file runs; files written by the official training code, with its yacs config, are read as
they are), and gives it to timm through :func:`~vheat_mm.checkpoint.checkpoint_filter_fn`: the
official ``{'model': ..., 'model_ema': ...}`` layout is unwrapped (timm reads ``model_ema``
first), weights holding NaN or inf are refused, and the load is judged as on every vheat_mm load
path (a checkpoint that covers the model badly warns, or fails under strict loading; tensors of
another shape are not loaded; freq_embed of another resolution is resized by the model's load
hook); then timm adapts ``in_chans`` and a new ``num_classes`` as for its own models.
A state dict given in memory (``pretrained_cfg_overlay=dict(state_dict=...)``) takes the same
way, without reading; the Hugging Face hub and local folders, which timm would read itself, are
refused.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from timm.models import (build_model_with_cfg, generate_default_cfgs, register_model,
                         resolve_pretrained_cfg)
from torch import nn

from .checkpoint import CheckpointError, checkpoint_filter_fn, is_url, read_checkpoint
from .checkpoint.download import shown_url
from .checkpoint.messages import shown_path
from .models import VHeat
from .variants import Release, classifiers

__all__ = ['MODEL_NAMES', 'register_timm_models']  # and the model functions

MODEL_NAMES = tuple(f'vheat_{release.arch}' for release in classifiers())
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _pretrained_cfg(release: Release) -> dict:
    return dict(url=release.url, num_classes=1000, input_size=(3, 224, 224),
                pool_size=(7, 7), crop_pct=0.875, interpolation='bicubic',
                mean=IMAGENET_MEAN, std=IMAGENET_STD, first_conv='patch_embed.conv1',
                classifier=VHeat.FC_NAME, fixed_input_size=False, license='apache-2.0',
                paper_ids='arXiv:2405.16555', origin_url='https://github.com/MzeroMiko/vHeat')


# timm reads the variants' configs from the module's ``default_cfgs`` when it registers a name:
# one per released classifier (vheat_mm/variants.py)
default_cfgs = generate_default_cfgs({f'vheat_{release.arch}.in1k': _pretrained_cfg(release)
                                      for release in classifiers()})


def _vheat_with_timm_keywords(*, arch: str | dict, in_chans: int = 3, **kwargs) -> VHeat:
    return VHeat(arch, in_channels=in_chans, **kwargs)


def _create(variant: str, pretrained: bool, **kwargs) -> VHeat:
    feature_cls = kwargs.get('feature_cls', 'getter')
    if kwargs.get('features_only') and feature_cls != 'getter':
        # timm's other wrappers take the output of each module 'layers.i', which is the stage
        # and its downsampling
        raise ValueError(f"vHeat's features_only maps come from forward_intermediates: "
                         f"feature_cls must be 'getter' (the default), got {feature_cls!r}")
    kwargs.setdefault('arch', variant)  # a dict arch builds another size under the same name
    filter_fn = checkpoint_filter_fn
    if pretrained:
        source = _pretrained_source(variant, kwargs.get('pretrained_cfg'),
                                    kwargs.get('pretrained_cfg_overlay'))
        if source is not None:
            kwargs['pretrained_cfg_overlay'] = dict(kwargs.get('pretrained_cfg_overlay') or {},
                                                    state_dict={'read from': source})
            filter_fn = _filter_read(read_checkpoint(source), source)
    # the verdict on the weights is vheat_mm's, as on every load path (checkpoint_filter_fn):
    # timm loads what it judged loadable
    kwargs.setdefault('pretrained_strict', False)
    model = build_model_with_cfg(
        _vheat_with_timm_keywords, f'vheat_{variant}', pretrained,
        pretrained_filter_fn=filter_fn,
        feature_cfg=dict(feature_cls='getter', out_indices=(0, 1, 2, 3)), **kwargs)
    model.pretrained_cfg.pop('state_dict', None)  # the weights are in the model
    return model


def _pretrained_source(variant: str, pretrained_cfg: Any, overlay: Mapping | None) -> str | None:
    """The file or URL of the pretrained weights that timm would read for ``vheat_<variant>``;
    None where the config holds a state dict in memory. Raises :class:`ValueError` for a
    source vheat_mm does not read (the Hugging Face hub, a local folder) or none."""
    cfg = resolve_pretrained_cfg(f'vheat_{variant}', pretrained_cfg=pretrained_cfg,
                                 pretrained_cfg_overlay=dict(overlay or {}))
    if cfg.state_dict is not None:
        return None
    source = cfg.file or cfg.url
    if cfg.source in ('hf-hub', 'local-dir') or not isinstance(source, str) or not source:
        raise ValueError(f"vheat_{variant}'s pretrained weights are read from a file or an "
                         f"http(s) URL (pretrained_cfg's 'file' or 'url'), got source "
                         f"{cfg.source!r}, file {cfg.file!r}, url {cfg.url!r}")
    return source


def _filter_read(checkpoint: Mapping, source: str) -> Callable[[Mapping, nn.Module], dict]:
    """timm's ``pretrained_filter_fn`` for a checkpoint vheat_mm has read from ``source``: timm
    is given a small dict in its place (its config keeps, and deep-copies for
    ``features_only``, what it is given), and this gives the checkpoint's fitted state dict
    (a :class:`CheckpointError` names ``source``)."""
    shown = shown_url(source) if is_url(source) else shown_path(source)

    def filter_fn(_given: Mapping, model: nn.Module) -> dict:
        try:
            return checkpoint_filter_fn(checkpoint, model, source=source)
        except CheckpointError as err:
            message = str(err)
            raise CheckpointError(message if shown in message else f'{shown}: {message}') from None
    return filter_fn


@register_model
def vheat_tiny(pretrained: bool = False, **kwargs) -> VHeat:
    """vHeat-T (arXiv 2405.16555), ImageNet-1k."""
    return _create('tiny', pretrained, **kwargs)


@register_model
def vheat_small(pretrained: bool = False, **kwargs) -> VHeat:
    """vHeat-S (arXiv 2405.16555), ImageNet-1k."""
    return _create('small', pretrained, **kwargs)


@register_model
def vheat_base(pretrained: bool = False, **kwargs) -> VHeat:
    """vHeat-B (arXiv 2405.16555), ImageNet-1k."""
    return _create('base', pretrained, **kwargs)


def register_timm_models() -> tuple[str, ...]:
    """The names of the vHeat models in timm's registry. Importing this module registered them
    (the ``@register_model`` functions above); this returns :data:`MODEL_NAMES`."""
    return MODEL_NAMES
