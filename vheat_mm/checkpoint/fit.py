"""How well a checkpoint fits a model: the one rule every load path applies.

A load that fills fewer than :data:`MIN_FIT` of the model's tensors (a Swin checkpoint in a vHeat
model, a small model's weights in a larger one, an empty state dict) would leave a mostly
random model behind a successful call. It logs a WARNING naming the file and the count; under
``strict`` (a keyword of the loaders, or :func:`strict_loading` around a whole run, as the
tools' ``--strict`` does) it raises :class:`~vheat_mm.checkpoint.CheckpointError` instead.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
from typing import Iterator

from .errors import CheckpointError

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


def check_fit(source: str, loaded: int, total: int, *, strict: bool = False) -> None:
    """Warn, or raise under ``strict`` (or :func:`strict_loading`), when ``loaded`` of the
    model's ``total`` tensors is fewer than :data:`MIN_FIT` of them."""
    if total == 0 or loaded >= MIN_FIT * total:
        return
    message = (f'checkpoint {source} fits the model badly: {loaded} of the model\'s {total} '
               f'tensors loaded from it (fewer than {MIN_FIT:.0%})')
    if strict or strict_loading_enabled():
        raise CheckpointError(f'{message}; is it a checkpoint of this architecture?')
    logger.warning('%s; the other %d keep their initial values (strict loading makes this an '
                   'error)', message, total - loaded)
