"""Loading a vHeat checkpoint file into a model: read, find the state dict, convert, load."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from torch import nn

from .convert import fit_state_dict
from .errors import CheckpointError
from .fit import check_fit
from .io import read_checkpoint
from .layout import find_state_dict, select_prefix
from .messages import cut, shown_keys, shown_path

__all__ = ['LoadReport', 'load_pretrained']

logger = logging.getLogger(__name__)

_KEYS_LISTED = 100  # keys a report line lists


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did: keys it could not fill, keys it ignored, resizes."""
    path: str
    loaded: int = 0
    total: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    fit_mode: str = 'bicubic'

    def lines(self) -> list[str]:
        out = [f'loaded vHeat weights from {shown_path(self.path)}: {self.loaded} of the model\'s '
               f'{self.total} tensors']
        if self.resized:
            out.append(f'freq_embed fitted ({self.fit_mode}) to the model: '
                       + _listed(self.resized))
        out.extend(self.mismatch_lines())
        return out

    def mismatch_lines(self) -> list[str]:
        out = []
        if self.missing:
            out.append(f'missing in the checkpoint, left as initialised ({len(self.missing)}): '
                       + _listed(self.missing))
        if self.unexpected:
            out.append(f'in the checkpoint but not in the model, ignored '
                       f'({len(self.unexpected)}): ' + _listed(self.unexpected))
        return out


def _listed(keys: list[str]) -> str:
    """Keys of a report line, each cut to a bounded length, at most :data:`_KEYS_LISTED`."""
    return shown_keys(keys, _KEYS_LISTED, as_list=False)


def load_pretrained(model: nn.Module, path: str | os.PathLike, *, prefix: str | None = None,
                    strict: bool = False, entry: str | None = None) -> LoadReport:
    """Load a vHeat checkpoint of any recognised layout into ``model``.

    ``entry`` picks the state dict of a checkpoint that holds several (an official one's
    ``model_ema``, read by default where present, or ``model``; see
    :mod:`~vheat_mm.checkpoint.layout`). freq_embed tensors of another resolution are fitted
    as the model's ``freq_embed_fit`` says. Tensors whose shapes cannot fit raise
    :class:`CheckpointError` naming every such key. A
    checkpoint that fills fewer than 90% of the model's tensors, or more than 10% of whose
    tensors the model does not use, logs a warning
    (:func:`~vheat_mm.checkpoint.fit.check_fit`); with ``strict=True`` that, and any missing
    or unexpected key, raises. The returned :class:`LoadReport` lists what was not loaded.
    """
    checkpoint = read_checkpoint(path)
    try:
        state_dict = select_prefix(find_state_dict(checkpoint, entry), prefix)
    except CheckpointError as err:
        raise CheckpointError(f'{shown_path(path)}: {err}') from None
    try:
        converted, resized = fit_state_dict(state_dict, model)
    except ValueError as err:  # e.g. a freq_embed larger than the model's, under 'pad'
        raise CheckpointError(f'{shown_path(path)}: {err}') from None
    own = model.state_dict()
    mismatched = [f'{cut(k)}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in converted.items() if k in own and v.shape != own[k].shape]
    if mismatched:
        more = f'; ... ({len(mismatched)} tensors)' if len(mismatched) > _KEYS_LISTED else ''
        raise CheckpointError(f'{shown_path(path)}: tensors that cannot fit the model: '
                              + '; '.join(mismatched[:_KEYS_LISTED]) + more)
    report = LoadReport(
        path=os.fspath(path),
        loaded=len(set(own) & set(converted)),
        total=len(own),
        missing=sorted(set(own) - set(converted)),
        unexpected=sorted(set(converted) - set(own)),
        resized=resized,
        fit_mode=getattr(model, 'freq_embed_fit', 'bicubic'),
    )
    check_fit(report.path, own, converted, strict=strict)
    if strict and (report.missing or report.unexpected):
        raise CheckpointError(f'checkpoint {shown_path(report.path)} does not match the model '
                              f'exactly (strict): ' + '; '.join(report.mismatch_lines()))
    model.load_state_dict({k: v for k, v in converted.items() if k in own}, strict=False)
    for line in report.lines():
        logger.info(line)
    return report
