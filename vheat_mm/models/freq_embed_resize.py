"""Resizing a loaded freq_embed of another resolution to the model's: the one mode table.

The trunk's load_state_dict pre-hook resizes each ``freq_embed.i`` of a state dict being loaded
(:func:`resize_loaded_freq_embeds`), as the model's ``freq_embed_resize`` says;
``interpolate4downstream.py`` enlarges a checkpoint's with the same table.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

from torch import Tensor

from .heat import pad_freq_embed, resize_freq_embed

__all__ = ['FREQ_EMBED_RESIZE_MODES', 'FreqEmbedResize', 'check_freq_embed_resize',
           'freq_embed_resizes', 'resize_loaded_freq_embeds']

#: How a loaded freq_embed of another (H, W) is resized to the model's (``freq_embed_resize``).
FREQ_EMBED_RESIZE_MODES = {'pad': pad_freq_embed, 'bicubic': resize_freq_embed}


def check_freq_embed_resize(mode: str) -> str:
    """``mode`` if it is one of :data:`FREQ_EMBED_RESIZE_MODES`, else a one-line ValueError."""
    if mode not in FREQ_EMBED_RESIZE_MODES:
        raise ValueError(f'freq_embed_resize must be one of {list(FREQ_EMBED_RESIZE_MODES)}, '
                         f'got {mode!r}')
    return mode


class FreqEmbedResize(NamedTuple):
    """A loaded ``freq_embed.i`` of another (H, W) than the model's, which the load resizes."""
    key: str
    loaded: tuple[int, ...]
    model: tuple[int, ...]

    def __str__(self) -> str:
        return f'{self.key} {self.loaded} -> {self.model}'


def freq_embed_resizes(state_dict: Mapping, prefix: str, freq_embed: Sequence[Tensor],
                       mode: str = 'bicubic') -> list[FreqEmbedResize]:
    """The ``{prefix}freq_embed.{i}`` of ``state_dict`` that the model's ``freq_embed[i]`` takes
    after resizing: another (H, W), the same channels. Reads shapes only. Under
    ``mode='pad'`` a tensor larger than the model's cannot be resized: ValueError naming the
    key and both shapes."""
    check_freq_embed_resize(mode)
    resizes = []
    for i, own in enumerate(freq_embed):
        key = f'{prefix}freq_embed.{i}'
        value = state_dict.get(key)
        if isinstance(value, Tensor) and value.dim() == 3 and value.shape[2] == own.shape[2] \
                and value.shape != own.shape:
            if mode == 'pad' and (value.shape[0] > own.shape[0] or value.shape[1] > own.shape[1]):
                raise ValueError(f"freq_embed_resize='pad' cannot shrink {key} of shape "
                                 f"{tuple(value.shape)} to the model's {tuple(own.shape)}; use "
                                 f"freq_embed_resize='bicubic'")
            resizes.append(FreqEmbedResize(key, tuple(value.shape), tuple(own.shape)))
    return resizes


def resize_loaded_freq_embeds(state_dict: dict[str, Tensor], prefix: str,
                              freq_embed: Sequence[Tensor],
                              mode: str = 'bicubic') -> list[FreqEmbedResize]:
    """Resize, in ``state_dict``, each ``{prefix}freq_embed.{i}`` of another (H, W) than the
    model's ``freq_embed[i]`` (:func:`freq_embed_resizes`) to the model's size; returns them.

    ``mode='bicubic'`` resizes (:func:`~vheat_mm.models.heat.resize_freq_embed`); ``'pad'``
    zero-pads at the bottom and right (:func:`~vheat_mm.models.heat.pad_freq_embed`), as the
    official ``interpolate4downstream.py`` does. The one place where loaded freq_embeds are
    resized: the trunk's load_state_dict pre-hook, which every load path reaches
    (``load_state_dict``, mmengine's ``load_from`` and resume, ``init_cfg``, timm, hub).
    """
    resizes = freq_embed_resizes(state_dict, prefix, freq_embed, mode)
    for resize in resizes:
        resized = FREQ_EMBED_RESIZE_MODES[mode](state_dict[resize.key], resize.model[:2])
        state_dict[resize.key] = resized
    return resizes
