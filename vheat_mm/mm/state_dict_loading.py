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
  keys; loads with mmengine's ``load_state_dict`` and then applies
  :func:`~vheat_mm.checkpoint.check_fit` (a warning naming the file and the counts, an error
  under strict loading);
- :func:`require_runner_checkpoint`: resuming needs a checkpoint that mmengine's runner wrote.
"""
from __future__ import annotations

import logging
import re
from collections import OrderedDict
from typing import Mapping, Sequence

from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner.checkpoint import load_state_dict
from torch import Tensor, nn

from ..checkpoint import (LAYOUTS, STATE_DICT_ENTRIES, CheckpointError, check_fit, find_layout,
                          is_state_dict, official_to_model)
from ..checkpoint.messages import MAX_SHOWN, cut, shown_keys, shown_path
from ..models import VHeatTrunk, fit_freq_embeds

__all__ = ['LAYOUT_MARK', 'described', 'load_into_model', 'require_runner_checkpoint',
           'runner_layout']

_logger = logging.getLogger(__name__)

# The key that marks a checkpoint runner_layout unwrapped; its value says what it was.
LAYOUT_MARK = 'vheat_mm_layout'
# BatchNorm's step counters: a model's state dict holds them, older checkpoints may not, and
# mmengine does not count them as missing; neither does the fit check.
_COUNTERS = 'num_batches_tracked'


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
    converted, then check the fit; ``source`` names the file in messages. The weights go into
    the model inside every wrapper (:func:`unwrapped`: DDP around a TTA model, as a distributed
    ``--tta`` test builds it), the one whose keys the fit is checked against."""
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
    own = {k: getattr(v, 'shape', None) for k, v in model_state.items()
           if not k.endswith(_COUNTERS)}
    converted, how = official_to_model(state_dict, list(own))
    if how is not None:
        _logger.info("%s: official vHeat keys loaded as the model's (%s)", shown_path(source),
                     how)
    # mmengine logs the keys the model does not take as they are: shown escaped and cut
    converted = OrderedDict(
        (k if k in model_state or not isinstance(k, str) else cut(k, 4 * MAX_SHOWN), v)
        for k, v in converted.items())
    if metadata is not None:
        converted._metadata = metadata
    load_state_dict(target, converted, strict)  # mmengine's unwraps one level per module
    check_fit(source, list(own), [k for k in converted if not k.endswith(_COUNTERS)],
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
