"""How well a checkpoint fits a model: the one rule every load path applies.

A load that fills fewer than :data:`MIN_FIT` of the model's tensors (a Swin checkpoint in a vHeat
model, an empty state dict), or uses fewer than :data:`MIN_FIT` of the checkpoint's (a larger
arch's weights in a smaller one, a silent mix), would leave a model unlike the checkpoint's
behind a successful call. It logs a WARNING naming the file and the count; under
``strict`` (a keyword of the loaders, or :func:`strict_loading` around a whole run, as the
tools' ``--strict`` does) it raises :class:`~vheat_mm.checkpoint.CheckpointError` instead.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
from typing import Collection, Iterator

from .errors import CheckpointError
from .messages import shown_path

__all__ = ['MIN_FIT', 'check_fit', 'strict_loading', 'strict_loading_enabled']

logger = logging.getLogger(__name__)

MIN_FIT = 0.9
_STRICT = contextvars.ContextVar('vheat_mm_strict_loading', default=False)


@contextlib.contextmanager
def strict_loading(enabled: bool = True) -> Iterator[None]:
    """Inside the block, every load path treats a checkpoint that fits badly as an error."""
    token = _STRICT.set(enabled)
    try:
        yield
    finally:
        _STRICT.reset(token)


def strict_loading_enabled() -> bool:
    return _STRICT.get()


def check_fit(source: str, model_keys: Collection[str], checkpoint_keys: Collection[str], *,
              mismatched: Collection[str] = (), strict: bool = False) -> None:
    """Warn, or raise under ``strict`` (or :func:`strict_loading`), when the checkpoint's keys
    fill fewer than :data:`MIN_FIT` of the model's, or the model uses fewer than
    :data:`MIN_FIT` of the checkpoint's. Keys in ``mismatched`` (a shape the model's cannot
    take) count as not loaded."""
    model_keys, checkpoint_keys = set(model_keys), set(checkpoint_keys)
    loaded = len((model_keys & checkpoint_keys) - set(mismatched))
    if not model_keys or (loaded >= MIN_FIT * len(model_keys)
                          and loaded >= MIN_FIT * len(checkpoint_keys)):
        return
    message = (f'checkpoint {shown_path(source)} fits the model badly: {loaded} of the model\'s '
               f'{len(model_keys)} tensors loaded from it, {len(checkpoint_keys) - loaded} of its '
               f'{len(checkpoint_keys)} not used (each should be under {1 - MIN_FIT:.0%})')
    if strict or strict_loading_enabled():
        raise CheckpointError(f'{message}; is it a checkpoint of this architecture?')
    logger.warning('%s; what was not loaded keeps its initial values (strict loading makes '
                   'this an error)', message)
