"""Every load through mmengine understands the official vHeat layouts and says how well it fits.

``load_from``, ``tools/test.py CKPT``, ``--resume``, ``mim test``, the inferencers' ``weights`` /
``pretrained``, ``init_cfg`` and mmengine's ``load_checkpoint`` read a file through mmengine's
``CheckpointLoader`` (vheat_mm's safe reader, :mod:`.safe_load`), let hooks see it
(``after_load_checkpoint``: EMAHook copies its ``state_dict``), then pass its ``state_dict``
entry, or the whole checkpoint where there is none, to
``mmengine.runner.checkpoint.load_state_dict(module, state_dict)``. Here:

- :func:`runner_layout`, called by the reader, gives an official vHeat checkpoint (``model_ema``,
  read first where present, or ``model``) or a DeepSpeed one (``module``) to mmengine as
  ``{'state_dict': that entry}``, marked with :data:`LAYOUT_MARK`, so that every loader and
  hook finds the weights where a runner checkpoint has them;
- :func:`load_state_dict`, in the place of mmengine's (:func:`use_vheat_state_dict_loading`),
  loads official vHeat keys as the model's keys, for classifier, detector and segmentor alike
  (:func:`~vheat_mm.checkpoint.official_to_model`), in one logged line; refuses a checkpoint
  that is neither a state dict nor of a known layout, naming its keys; and after mmengine's
  own loading applies :func:`~vheat_mm.checkpoint.check_fit` (a warning naming the file and
  the counts, an error under strict loading);
- ``--resume`` needs a checkpoint of mmengine's runner: :class:`RequireRunnerCheckpointHook`,
  which the tools add when resuming, refuses any other in one line.

The file a state dict came from is known by its tensors: :func:`remember_source` notes it for
the first tensor of each state dict the reader returns.
"""
from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from typing import Mapping

from mmengine.hooks import Hook
from mmengine.model import BaseTTAModel, is_model_wrapper
from torch import Tensor, nn

from ..checkpoint import (LAYOUTS, STATE_DICT_ENTRIES, CheckpointError, check_fit, find_layout,
                          is_state_dict, official_to_model)
from ..checkpoint.messages import shown_keys
from ..models import VHeatTrunk, fit_freq_embeds

__all__ = ['LAYOUT_MARK', 'RequireRunnerCheckpointHook', 'load_state_dict', 'remember_source',
           'runner_layout', 'source_of', 'use_vheat_state_dict_loading']

_logger = logging.getLogger(__name__)

# The key that marks a checkpoint runner_layout unwrapped; its value says what it was.
LAYOUT_MARK = 'vheat_mm_layout'

_SOURCES: OrderedDict[int, tuple[weakref.ref, str]] = OrderedDict()
_SOURCES_KEPT = 32
_LAST_WITHOUT_TENSORS: str | None = None


def _first_tensor(state_dict: Mapping) -> Tensor | None:
    return next((v for v in state_dict.values() if isinstance(v, Tensor)), None)


def _state_dicts(checkpoint: Mapping) -> list[Mapping]:
    """``checkpoint`` and the mappings in it (its state dicts, of a known layout or not)."""
    return [checkpoint, *(v for v in checkpoint.values() if isinstance(v, Mapping))]


def remember_source(checkpoint: Mapping, path: str) -> None:
    """Note ``path`` as the file of each state dict in ``checkpoint`` (by its first tensor)."""
    global _LAST_WITHOUT_TENSORS
    tensors = [t for t in map(_first_tensor, _state_dicts(checkpoint)) if t is not None]
    for tensor in tensors:
        _SOURCES[id(tensor)] = (weakref.ref(tensor), path)
        _SOURCES.move_to_end(id(tensor))
    if not tensors:  # an empty state dict: known as the last such file read
        _LAST_WITHOUT_TENSORS = path
    while len(_SOURCES) > _SOURCES_KEPT:
        _SOURCES.popitem(last=False)


def source_of(checkpoint: Mapping) -> str:
    """The file a state dict (or a checkpoint holding it) was read from, or a description."""
    for state_dict in _state_dicts(checkpoint):
        tensor = _first_tensor(state_dict)
        known = _SOURCES.get(id(tensor)) if tensor is not None else None
        if known is not None and known[0]() is tensor:
            return known[1]
    if _LAST_WITHOUT_TENSORS and all(_first_tensor(d) is None for d in _state_dicts(checkpoint)):
        return _LAST_WITHOUT_TENSORS
    return 'given to mmengine'


def _unwrapped(module: nn.Module) -> nn.Module:
    while is_model_wrapper(module) or isinstance(module, BaseTTAModel):
        module = module.module
    return module


def runner_layout(checkpoint: Mapping, path: str) -> Mapping:
    """``checkpoint`` as mmengine's loaders and hooks read it: a runner checkpoint or a state
    dict as it is; another layout of :data:`~vheat_mm.checkpoint.LAYOUTS` (official, DeepSpeed)
    as ``{'state_dict': its entry, LAYOUT_MARK: what it was}``. An unknown layout is returned as
    it is, for :func:`load_state_dict` to refuse. Notes ``path`` (:func:`remember_source`)."""
    if not checkpoint or is_state_dict(checkpoint) \
            or isinstance(checkpoint.get('state_dict'), Mapping):
        remember_source(checkpoint, path)
        return checkpoint
    try:
        layout, entry = find_layout(checkpoint)
    except CheckpointError:
        remember_source(checkpoint, path)
        return checkpoint
    present = [key for key in LAYOUTS[layout].entries if isinstance(checkpoint.get(key), Mapping)]
    what = f'{layout} checkpoint, its {entry!r} entry' + (
        f' (of {", ".join(map(repr, present))})' if len(present) > 1 else '')
    unwrapped = {'state_dict': checkpoint[entry], LAYOUT_MARK: what}
    remember_source(unwrapped, f'{path} ({what})')
    return unwrapped


def load_state_dict(module: nn.Module, state_dict: Mapping, strict: bool = False,
                    logger: object = None) -> None:
    """mmengine's ``load_state_dict`` for official vHeat keys too, with the fit check."""
    source = source_of(state_dict)
    if state_dict and not is_state_dict(state_dict):
        raise CheckpointError(
            f"cannot load checkpoint {source}: it is neither a runner checkpoint (with "
            f"'state_dict') nor of a known layout (entries {', '.join(STATE_DICT_ENTRIES)}) "
            f'nor a state dict; top-level keys: {shown_keys(state_dict)}')
    target = _unwrapped(module)
    own = {k: v.shape for k, v in target.state_dict().items()
           if not k.endswith('num_batches_tracked')}
    model_keys = list(own)
    converted, how = official_to_model(state_dict, model_keys)
    if how is not None:
        _logger.info("%s: official vHeat keys loaded as the model's (%s)", source, how)
        metadata = getattr(state_dict, '_metadata', None)
        converted = OrderedDict(converted)
        if metadata is not None:
            converted._metadata = metadata
    _MMENGINE_LOAD_STATE_DICT(module, converted, strict, logger)
    check_fit(source, model_keys, [k for k, v in converted.items() if isinstance(v, Tensor)],
              mismatched=_mismatched(target, converted, own), strict=strict)


def _mismatched(model: nn.Module, state_dict: Mapping, own: Mapping) -> list[str]:
    """Keys of ``state_dict`` whose tensors the model cannot take (mmengine skips them, with a
    warning): another shape than the model's once the vHeat trunks' load hook has fitted
    freq_embed (:func:`~vheat_mm.models.fit_freq_embeds`, run here on a copy)."""
    fitted = dict(state_dict)
    for name, trunk in model.named_modules():
        if isinstance(trunk, VHeatTrunk):
            try:
                fit_freq_embeds(fitted, f'{name}.' if name else '', trunk.freq_embed,
                                trunk.freq_embed_fit)
            except ValueError:  # the load hook has raised it already
                pass
    return [k for k, v in fitted.items()
            if k in own and isinstance(v, Tensor) and v.shape != own[k]]


_MMENGINE_LOAD_STATE_DICT = None


def use_vheat_state_dict_loading() -> None:
    """Put :func:`load_state_dict` in the place of mmengine's (once)."""
    global _MMENGINE_LOAD_STATE_DICT
    from mmengine.runner import checkpoint as mmengine_checkpoint

    if mmengine_checkpoint.load_state_dict is load_state_dict:
        return
    _MMENGINE_LOAD_STATE_DICT = mmengine_checkpoint.load_state_dict
    mmengine_checkpoint.load_state_dict = load_state_dict


class RequireRunnerCheckpointHook(Hook):
    """Refuses to resume from a checkpoint that mmengine's runner did not write (one without
    ``state_dict`` and ``meta``), such as an official vHeat checkpoint, before anything of it
    is loaded. Added by :func:`~vheat_mm.mm.tool_config.set_resume`."""

    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if isinstance(checkpoint.get('state_dict'), Mapping) and 'meta' in checkpoint:
            return
        source = source_of(checkpoint)
        what = (f'an {checkpoint[LAYOUT_MARK]}' if LAYOUT_MARK in checkpoint
                else f'a checkpoint with the top-level keys {shown_keys(checkpoint, 10)}')
        raise CheckpointError(
            f"cannot resume from {source}: it holds {what}, not a checkpoint of mmengine's "
            f"runner (with 'state_dict' and 'meta'); to start from its weights, give it as "
            f"load_from or as the backbone's init_cfg instead")
