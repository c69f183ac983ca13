"""Converting vHeat state dicts and checkpoints (pure: inputs are left untouched, no file I/O)."""
from __future__ import annotations

import copy
from typing import Collection, Mapping

from torch import Tensor, nn

from ..models import FREQ_EMBED_RESIZE_MODES, VHeat, freq_embed_sizes, stage_stride
from ..models.arch import NUM_STAGES
from .errors import CheckpointError
from .layout import BACKBONE_MODULE, LAYOUTS, find_freq_embeds, find_state_dict

__all__ = ['CONVERSION_MODES', 'check_downstream_sizes', 'convert_freq_embeds',
           'official_to_mmpretrain', 'official_to_model']

CONVERSION_MODES = tuple(FREQ_EMBED_RESIZE_MODES)  # the model's own table of freq_embed resizes


def official_to_mmpretrain(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Keys of an official vHeat classifier -> mmpretrain ``ImageClassifier`` keys.

    The official head is LayerNorm -> average pool -> Linear (``classifier.0`` / ``.3``); the
    mmpretrain config has the LayerNorm as the backbone's ``outnorm3`` (``out_indices=(3,)``),
    ``GlobalAveragePooling`` as neck and ``LinearClsHead`` (``head.fc``). Every other key goes
    under ``backbone.`` (the official layout's ``to_mmpretrain`` in
    :data:`~vheat_mm.checkpoint.layout.LAYOUTS`). Pure; the tensors are shared, not copied.
    """
    keys = set(state_dict)
    fc_weight = f'{VHeat.FC_NAME}.weight'
    if not {fc_weight, 'freq_embed.0'} <= keys:
        raise CheckpointError(
            'not an official vHeat classifier state dict (it needs freq_embed.0 and '
            f'{fc_weight}); keys found: {sorted(keys)[:20]}')
    renames = LAYOUTS['official'].to_mmpretrain
    converted = {}
    for key, value in state_dict.items():
        old = max((old for old in renames if key.startswith(old)), key=len)
        converted[renames[old] + key[len(old):]] = value
    return converted


def official_to_model(state_dict: Mapping[str, Tensor], model_keys: Collection[str]
                      ) -> tuple[Mapping[str, Tensor], str | None]:
    """Keys of an official vHeat state dict -> the keys of a model holding a vHeat trunk.

    The trunk is where ``model_keys`` has ``freq_embed.0``: at the root (a plain
    :class:`~vheat_mm.models.VHeat`, official keys already) or under a prefix such as
    ``backbone.`` (a detector, segmentor or classifier). An mmpretrain ``ImageClassifier``
    (``backbone.outnorm3`` and ``head.fc``) gets :func:`official_to_mmpretrain`'s keys; other
    models get the trunk's keys under the prefix, and the official head (``classifier.*``)
    stays as it is, so that it is reported as not used. A state dict without official keys
    (no ``freq_embed.0``), or for a trunk at the model's root, is returned as it is (the same
    object). Returns the state dict and one line on what was renamed (None: nothing). Pure.
    """
    if 'freq_embed.0' not in state_dict:
        return state_dict, None
    prefixes = sorted(key[:-len('freq_embed.0')] for key in model_keys
                      if key.endswith('freq_embed.0'))
    if len(prefixes) != 1:
        raise CheckpointError(
            'the model has no vHeat trunk (no key ending in freq_embed.0) to load official vHeat '
            'weights into' if not prefixes else
            f'the model has several vHeat trunks ({", ".join(p or "<root>" for p in prefixes)}); '
            f'load the official weights into one of them')
    prefix = prefixes[0]
    if not prefix:
        return state_dict, None
    backbone = f'{BACKBONE_MODULE}.'
    if prefix == backbone and {f'{backbone}outnorm3.weight', 'head.fc.weight'} <= set(model_keys):
        return (official_to_mmpretrain(state_dict),
                "official keys -> mmpretrain's (classifier.0 -> backbone.outnorm3, classifier.3 "
                "-> head.fc, the rest under backbone.)")
    return ({key if key.startswith('classifier.') else prefix + key: value
             for key, value in state_dict.items()},
            f'official keys -> the trunk under {prefix!r} (the official classifier head is not '
            f'used)')


def check_downstream_sizes(pt_size: int, tg_size: int, num_stages: int = NUM_STAGES) -> None:
    """Raise :class:`ValueError` unless both sizes are positive multiples of the last stage's
    stride (:func:`~vheat_mm.models.stage_stride`) and tg >= pt."""
    multiple = stage_stride(num_stages - 1)
    bad = [f'{name}={size}' for name, size in (('pt_size', pt_size), ('tg_size', tg_size))
           if size <= 0 or size % multiple]
    if bad:
        raise ValueError(f'image sizes must be positive multiples of {multiple} (the '
                         f'stride of the last stage), got {", ".join(bad)}')
    if tg_size < pt_size:
        raise ValueError(f'tg_size ({tg_size}) is smaller than pt_size ({pt_size}): the '
                         f'conversion only enlarges freq_embed, so tg_size must be at least '
                         f'pt_size')


def convert_freq_embeds(checkpoint: Mapping, *, pt_size: int, tg_size: int,
                        mode: str = 'pad') -> dict:
    """A copy of ``checkpoint`` with each freq_embed enlarged from ``pt_size`` to ``tg_size``.

    Stage i's freq_embed is (s, s, C) with s = size / stage_stride(i)
    (:func:`~vheat_mm.models.freq_embed_sizes`). ``mode`` is a resize mode of
    :data:`~vheat_mm.models.FREQ_EMBED_RESIZE_MODES`, the table the model's load hook uses: 'pad'
    zero-pads at the bottom and right, as the official ``interpolate4downstream.py`` does;
    'bicubic' resizes. The freq_embeds are those
    :func:`~vheat_mm.checkpoint.layout.find_freq_embeds` finds; every other entry and key is
    kept as it is (the same objects); the input is left untouched.
    """
    if mode not in CONVERSION_MODES:
        raise ValueError(f'unknown mode {mode!r}; choose one of {list(CONVERSION_MODES)}')
    found = find_freq_embeds(checkpoint)
    stages = 1 + max(k.stage for k in found)  # find_freq_embeds finds one at least
    check_downstream_sizes(pt_size, tg_size, stages)
    resize = FREQ_EMBED_RESIZE_MODES[mode]
    converted = dict(checkpoint)
    for entry in dict.fromkeys(k.entry for k in found):
        converted[entry] = copy.copy(checkpoint[entry])  # keeps OrderedDict and its _metadata
    pt_sides, tg_sides = freq_embed_sizes(pt_size, stages), freq_embed_sizes(tg_size, stages)
    for entry, key, stage in found:
        value = checkpoint[entry][key]
        expected = pt_sides[stage]
        if not isinstance(value, Tensor) or value.dim() != 3 \
                or tuple(value.shape[:2]) != (expected, expected):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise CheckpointError(
                f'{entry}[{key!r}] has shape {shape}, but pt_size={pt_size} gives stage {stage} '
                f'a ({expected}, {expected}, C) freq_embed; is pt_size the resolution the '
                f'checkpoint was trained at?')
        target = (tg_sides[stage],) * 2
        converted[entry][key] = resize(value, target)
    return converted
