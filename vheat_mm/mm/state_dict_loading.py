"""A checkpoint read for mmengine's runner, and loaded into its model, vHeat layouts understood.

:class:`~.runner.VHeatRunner` reads a file (:func:`~.addresses.read_address`), lets its hooks
see it (``after_load_checkpoint``: EMAHook copies its ``ema_state_dict``) and loads it here:

- :func:`runner_layout`, called by the reader, gives an official vHeat checkpoint
  (``model_ema``, read first where present, or ``model``) or a DeepSpeed one (``module``) as
  ``{'state_dict': that entry}``, marked with :data:`LAYOUT_MARK`, so that every hook finds the
  weights where a runner checkpoint has them;
- :func:`load_into_model` loads official vHeat keys as the model's keys, for classifier,
  detector and segmentor alike (:func:`~vheat_mm.checkpoint.official_to_model`), in one logged
  line; refuses a checkpoint that is neither a state dict nor of a known layout, naming its
  keys; then follows every load path's order
  (:func:`~vheat_mm.checkpoint.load_state_dict_checked`: the verdict before anything is loaded,
  the load with mmengine's ``load_state_dict``, the report);
- :func:`require_runner_checkpoint`: resuming needs a checkpoint that mmengine's runner wrote.
"""
from __future__ import annotations

import logging
import re
from collections import OrderedDict
from typing import Mapping, Sequence

from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner.checkpoint import load_state_dict
from torch import nn

from ..checkpoint import (LAYOUTS, STATE_DICT_ENTRIES, CheckpointError, LoadReport, find_layout,
                          is_state_dict, load_state_dict_checked, official_to_model)
from ..checkpoint.messages import MAX_SHOWN, cut, shown_keys, shown_path

__all__ = ['LAYOUT_MARK', 'described', 'load_into_model', 'require_runner_checkpoint',
           'runner_layout']

_logger = logging.getLogger(__name__)

# The key that marks a checkpoint runner_layout unwrapped; its value says what it was.
LAYOUT_MARK = 'vheat_mm_layout'


def runner_layout(checkpoint: Mapping) -> Mapping:
    """``checkpoint`` as mmengine's hooks and loaders read it: a runner checkpoint or a state
    dict as it is; another layout of :data:`~vheat_mm.checkpoint.LAYOUTS` (official, DeepSpeed)
    as ``{'state_dict': its entry, LAYOUT_MARK: what it was}``. An unknown layout is returned as
    it is, for :func:`load_into_model` to refuse."""
    if not checkpoint or is_state_dict(checkpoint) \
            or isinstance(checkpoint.get('state_dict'), Mapping):
        return checkpoint
    try:
        layout, entry = find_layout(checkpoint)
    except CheckpointError:
        return checkpoint
    present = [key for key in LAYOUTS[layout].entries if isinstance(checkpoint.get(key), Mapping)]
    what = f'{layout} checkpoint, its {entry!r} entry' + (
        f' (of {", ".join(map(repr, present))})' if len(present) > 1 else '')
    return {'state_dict': checkpoint[entry], LAYOUT_MARK: what}


def described(source: str, checkpoint: Mapping) -> str:
    """``source`` with what :func:`runner_layout` read of it, for messages."""
    return f'{source} ({checkpoint[LAYOUT_MARK]})' if LAYOUT_MARK in checkpoint else source


def require_runner_checkpoint(checkpoint: Mapping, source: str) -> None:
    """Refuse, before anything of it is loaded, a checkpoint that mmengine's runner did not
    write (one without ``state_dict`` and ``meta``), such as an official vHeat checkpoint."""
    if isinstance(checkpoint.get('state_dict'), Mapping) and 'meta' in checkpoint:
        return
    what = (f'an {checkpoint[LAYOUT_MARK]}' if LAYOUT_MARK in checkpoint
            else f'a checkpoint with the top-level keys {shown_keys(checkpoint, 10)}')
    raise CheckpointError(
        f"cannot resume from {source}: it holds {what}, not a checkpoint of mmengine's "
        f"runner (with 'state_dict' and 'meta'); to start from its weights, give it as "
        f"load_from or as the backbone's init_cfg instead")


def unwrapped(module: nn.Module) -> nn.Module:
    """The model inside mmengine's wrappers (DDP, TTA), as mmengine's loading unwraps it."""
    while is_model_wrapper(module) or isinstance(module, BaseTTAModel):
        module = module.module
    return module


def load_into_model(model: nn.Module, checkpoint: Mapping, *, source: str, strict: bool = False,
                    revise_keys: Sequence[tuple[str, str]] = ((r'^module\.', ''),)) -> None:
    """Load ``checkpoint`` (its ``state_dict``, or itself) into ``model`` as mmengine's
    ``_load_checkpoint_to_model`` does (``revise_keys`` applied), official vHeat keys
    converted, judged before anything is loaded and reported as on every load path
    (:func:`~vheat_mm.checkpoint.load_state_dict_checked`); ``source`` names the file in
    messages. The weights go into the model inside every wrapper (:func:`unwrapped`: DDP around
    a TTA model, as a distributed ``--tta`` test builds it), the one the load is judged
    against."""
    source = described(source, checkpoint)
    state_dict = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"cannot load checkpoint {source}: its 'state_dict' holds a "
                              f'{type(state_dict).__name__}, not a mapping of tensors')
    if state_dict is checkpoint and checkpoint and not is_state_dict(checkpoint):
        raise CheckpointError(
            f"cannot load checkpoint {source}: it is neither a runner checkpoint (with "
            f"'state_dict') nor of a known layout (entries {', '.join(STATE_DICT_ENTRIES)}) "
            f'nor a state dict; top-level keys: {shown_keys(checkpoint)}')
    metadata = getattr(state_dict, '_metadata', None)
    for pattern, replacement in revise_keys:
        state_dict = OrderedDict((re.sub(pattern, replacement, k), v)
                                 for k, v in state_dict.items())
    target = unwrapped(model)
    model_state = target.state_dict()
    converted, how = official_to_model(state_dict, list(model_state))
    if how is not None:
        _logger.info("%s: official vHeat keys loaded as the model's (%s)", shown_path(source),
                     how)
    # mmengine logs the keys the model does not take as they are: shown escaped and cut
    converted = OrderedDict(
        (k if k in model_state or not isinstance(k, str) else cut(k, 4 * MAX_SHOWN), v)
        for k, v in converted.items())
    if metadata is not None:
        converted._metadata = metadata

    def mmengine_load(module: nn.Module, weights: Mapping, _report: LoadReport) -> None:
        load_state_dict(module, weights, strict)  # mmengine's: skips other shapes, logs them

    load_state_dict_checked(target, converted, source=source, strict=strict, load=mmengine_load)
