"""Reading vHeat checkpoints safely and converting them to a model's layout (plain PyTorch).

Three layouts are recognised: the official one (``{'model': state_dict, ...}``, also
``model_ema``), mmengine's (``{'state_dict': ..., 'meta': ...}``, keys with or without a
``backbone.`` prefix) and a bare state dict. Files are always read with ``weights_only=True``.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import Tensor, nn

from .models.heat import resize_freq_embed

__all__ = ['CheckpointError', 'read_checkpoint', 'find_state_dict', 'select_prefix',
           'checkpoint_filter_fn', 'load_pretrained', 'LoadReport']

logger = logging.getLogger(__name__)

STATE_DICT_ENTRIES = ('state_dict', 'model', 'model_ema', 'module')
_FREQ_EMBED = re.compile(r'^freq_embed\.(\d+)$')


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint file on the CPU with ``torch.load(weights_only=True)``.

    Raises :class:`FileNotFoundError` or :class:`CheckpointError`, naming the path, for a
    missing, unreadable, truncated or unsafe file (one whose pickle asks for code to run).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f'refusing to load {path}: it holds objects that weights_only loading does not '
            f'allow (loading it could run code). Details: {err}') from None
    except Exception as err:  # truncated zip, not a torch file, permission...
        raise CheckpointError(f'cannot read checkpoint {path}: {type(err).__name__}: {err}') \
            from err
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f'{path} holds a {type(checkpoint).__name__}, not a dict of tensors')
    return dict(checkpoint)


def find_state_dict(checkpoint: Mapping) -> dict[str, Tensor]:
    """The state dict inside a checkpoint of any recognised layout."""
    for entry in STATE_DICT_ENTRIES:
        if isinstance(checkpoint.get(entry), Mapping):
            return dict(checkpoint[entry])
    if checkpoint and all(isinstance(v, Tensor) for v in checkpoint.values()):
        return dict(checkpoint)
    raise CheckpointError(
        f'no state dict found: expected one of the entries {list(STATE_DICT_ENTRIES)} or a '
        f'mapping of tensors, found keys {sorted(checkpoint)[:20]}')


def select_prefix(state_dict: Mapping[str, Tensor], prefix: str | None) -> dict[str, Tensor]:
    """Keys under ``prefix`` (e.g. 'backbone'), stripped of it.

    With ``prefix=None``, a 'module.' (DDP) prefix is removed and, if the keys are those of a
    whole detector or segmentor, the 'backbone.' part is selected.
    """
    if prefix is None:
        state_dict = {k.removeprefix('module.'): v for k, v in state_dict.items()}
        prefix = 'backbone' if any(k.startswith('backbone.') for k in state_dict) else ''
    if not prefix:
        return dict(state_dict)
    head = prefix.rstrip('.') + '.'
    selected = {k[len(head):]: v for k, v in state_dict.items() if k.startswith(head)}
    if not selected:
        raise CheckpointError(f'no key starts with {head!r}; the checkpoint has keys such as '
                              f'{sorted(state_dict)[:10]}')
    return selected


def checkpoint_filter_fn(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Adapt a vHeat state dict to ``model``: each ``freq_embed.i`` is resized to the model's size.

    Pure: the input is left untouched. Other keys pass through unchanged.
    """
    targets = {name: p.shape for name, p in model.named_parameters() if _FREQ_EMBED.match(name)}
    out = {}
    for key, value in state_dict.items():
        if key in targets and value.dim() == 3 and value.shape[2] == targets[key][2] \
                and value.shape != targets[key]:
            value = resize_freq_embed(value, targets[key][:2])
        out[key] = value
    return out


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did: keys it could not fill, keys it ignored, resizes."""
    path: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f'loaded vHeat weights from {self.path}']
        if self.resized:
            out.append('resized (bicubic) to the model: ' + ', '.join(self.resized))
        if self.missing:
            out.append(f'missing in the checkpoint, left as initialised ({len(self.missing)}): '
                       + ', '.join(self.missing))
        if self.unexpected:
            out.append(f'in the checkpoint but not in the model, ignored '
                       f'({len(self.unexpected)}): ' + ', '.join(self.unexpected))
        return out


def load_pretrained(model: nn.Module, path: str | os.PathLike, *, prefix: str | None = None,
                    strict: bool = False) -> LoadReport:
    """Load a vHeat checkpoint of any recognised layout into ``model``.

    freq_embed tensors of another resolution are resized. Tensors whose shapes cannot fit raise
    :class:`CheckpointError` naming every such key; with ``strict=True`` missing or unexpected
    keys raise too. The returned :class:`LoadReport` lists what was not loaded.
    """
    state_dict = select_prefix(find_state_dict(read_checkpoint(path)), prefix)
    converted = checkpoint_filter_fn(state_dict, model)
    own = model.state_dict()
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in converted.items() if k in own and v.shape != own[k].shape]
    if mismatched:
        raise CheckpointError(f'{path}: tensors that cannot fit the model: '
                              + '; '.join(mismatched))
    report = LoadReport(
        path=os.fspath(path),
        missing=sorted(set(own) - set(converted)),
        unexpected=sorted(set(converted) - set(own)),
        resized=[f'{k} {tuple(state_dict[k].shape)} -> {tuple(converted[k].shape)}'
                 for k in converted if converted[k] is not state_dict[k]],
    )
    if strict and (report.missing or report.unexpected):
        raise CheckpointError('\n'.join(report.lines()))
    model.load_state_dict({k: v for k, v in converted.items() if k in own}, strict=False)
    for line in report.lines():
        logger.info(line)
    return report
