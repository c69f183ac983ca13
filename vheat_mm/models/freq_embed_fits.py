"""Fitting a loaded freq_embed of another resolution to the model's: the one mode table.

The trunk's load_state_dict pre-hook fits each ``freq_embed.i`` of a state dict being loaded
(:func:`fit_freq_embeds`), as the model's ``freq_embed_fit`` says; ``interpolate4downstream.py``
enlarges a checkpoint's with the same table.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor

from .heat import pad_freq_embed, resize_freq_embed

__all__ = ['FREQ_EMBED_FITS', 'check_freq_embed_fit', 'fit_freq_embeds']

#: How a loaded freq_embed of another (H, W) is fitted to the model's (``freq_embed_fit``).
FREQ_EMBED_FITS = {'pad': pad_freq_embed, 'bicubic': resize_freq_embed}


def check_freq_embed_fit(mode: str) -> str:
    """``mode`` if it is one of :data:`FREQ_EMBED_FITS`, else a one-line ValueError."""
    if mode not in FREQ_EMBED_FITS:
        raise ValueError(f'freq_embed_fit must be one of {list(FREQ_EMBED_FITS)}, got {mode!r}')
    return mode


def fit_freq_embeds(state_dict: dict[str, Tensor], prefix: str, freq_embed: Sequence[Tensor],
                    mode: str = 'bicubic') -> list[str]:
    """Fit, in ``state_dict``, each ``{prefix}freq_embed.{i}`` of another (H, W) than the
    model's ``freq_embed[i]`` (same channels) to the model's size. Returns one line per fitted
    tensor.

    ``mode='bicubic'`` resizes (:func:`~vheat_mm.models.heat.resize_freq_embed`); ``'pad'``
    zero-pads at the bottom and right (:func:`~vheat_mm.models.heat.pad_freq_embed`), as the
    official ``interpolate4downstream.py`` does, and refuses a tensor larger than the model's
    (ValueError naming the key and both shapes). The one place where loaded freq_embeds are
    fitted: the trunk's load_state_dict pre-hook (so every load path: ``load_state_dict``,
    mmengine's ``load_from`` and resume, ``init_cfg``) and
    :func:`vheat_mm.checkpoint.checkpoint_filter_fn` call it.
    """
    fit = FREQ_EMBED_FITS[check_freq_embed_fit(mode)]
    lines = []
    for i, own in enumerate(freq_embed):
        key = f'{prefix}freq_embed.{i}'
        value = state_dict.get(key)
        if isinstance(value, Tensor) and value.dim() == 3 and value.shape[2] == own.shape[2] \
                and value.shape != own.shape:
            if mode == 'pad' and (value.shape[0] > own.shape[0] or value.shape[1] > own.shape[1]):
                raise ValueError(f"freq_embed_fit='pad' cannot shrink {key} of shape "
                                 f"{tuple(value.shape)} to the model's {tuple(own.shape)}; use "
                                 f"freq_embed_fit='bicubic'")
            state_dict[key] = fit(value, own.shape[:2])
            lines.append(f'{key} {tuple(value.shape)} -> {tuple(own.shape)}')
    return lines
