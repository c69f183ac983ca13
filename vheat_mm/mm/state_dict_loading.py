"""Every load through mmengine understands the official vHeat layouts and says how well it fits.

``load_from``, ``tools/test.py CKPT``, ``--resume``, ``mim test``, the inferencers' ``weights`` /
``pretrained``, ``init_cfg`` of other modules and mmengine's ``load_checkpoint`` all end in
``mmengine.runner.checkpoint.load_state_dict(module, state_dict)``, which receives the
checkpoint's ``state_dict`` entry or, where there is none, the whole checkpoint.
:func:`use_vheat_state_dict_loading` puts :func:`load_state_dict` in its place, which:

- reads an official vHeat checkpoint (``model`` / ``model_ema``, official keys) as the model's
  keys, for classifier, detector and segmentor alike (:func:`~vheat_mm.checkpoint.official_to_model`),
  in one logged line; a DeepSpeed ``module`` entry likewise;
- refuses a checkpoint that is neither a state dict nor of a known layout, naming its keys;
- after mmengine's own loading, applies :func:`~vheat_mm.checkpoint.check_fit` (a warning
  naming the file and the count, an error under strict loading).

``--resume`` needs a checkpoint of mmengine's runner: :class:`RequireRunnerCheckpointHook`,
which the tools add when resuming, refuses any other in one line.

The file a state dict came from is known by its tensors: :func:`remember_source`, called by
the safe reader of :mod:`.safe_load`, notes it for the first tensor of each state dict.
"""
from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from typing import Mapping

from mmengine.hooks import Hook
from mmengine.model import BaseTTAModel, is_model_wrapper
from torch import Tensor, nn

from ..checkpoint import (LAYOUTS, CheckpointError, check_fit, find_layout, is_state_dict,
                          official_to_model, weight_entries)

__all__ = ['RequireRunnerCheckpointHook', 'load_state_dict', 'remember_source', 'source_of', 'use_vheat_state_dict_loading']

logger = logging.getLogger(__name__)

_SOURCES: OrderedDict[int, tuple[weakref.ref, str]] = OrderedDict()
_SOURCES_KEPT = 32


def _first_tensor(state_dict: Mapping) -> Tensor | None:
    return next((v for v in state_dict.values() if isinstance(v, Tensor)), None)


def remember_source(checkpoint: Mapping, path: str) -> None:
    """Note ``path`` as the file of each state dict in ``checkpoint`` (by its first tensor)."""
    for state_dict in weight_entries(checkpoint):
        tensor = _first_tensor(state_dict)
        if tensor is not None:
            _SOURCES[id(tensor)] = (weakref.ref(tensor), path)
            _SOURCES.move_to_end(id(tensor))
    while len(_SOURCES) > _SOURCES_KEPT:
        _SOURCES.popitem(last=False)


def source_of(state_dict: Mapping) -> str:
    """The file ``state_dict`` (or an entry of it) was read from, or a description."""
    for entries in ([state_dict], weight_entries(state_dict)):
        for entry in entries:
            tensor = _first_tensor(entry)
            known = _SOURCES.get(id(tensor)) if tensor is not None else None
            if known is not None and known[0]() is tensor:
                return known[1]
    return 'given to mmengine'


def _unwrapped(module: nn.Module) -> nn.Module:
    while is_model_wrapper(module) or isinstance(module, BaseTTAModel):
        module = module.module
    return module


def model_state_dict(state_dict: Mapping, model_keys: list[str], source: str) -> Mapping:
    """``state_dict`` as mmengine passed it, made into the model's state dict: an official
    vHeat checkpoint converted, another layout's entry taken (DeepSpeed's ``module``), a state
    dict as it is. Raises :class:`CheckpointError` for anything else."""
    if not state_dict or is_state_dict(state_dict):
        return state_dict
    try:
        layout, entry = find_layout(state_dict)
    except CheckpointError as err:
        raise CheckpointError(f'cannot load {source}: it is neither a runner checkpoint '
                              f"(with 'state_dict') nor a known layout: {err}") from None
    inner = state_dict[entry]
    if layout != 'official':
        logger.info('%s: the state dict is its %s entry %r', source, layout, entry)
        return inner
    converted, how = official_to_model(inner, model_keys)
    logger.info('%s is an official vHeat checkpoint: %d tensors of its %r entry loaded as the '
                "model's keys (%s)", source, len(inner), entry, how)
    return converted


def load_state_dict(module: nn.Module, state_dict: Mapping, strict: bool = False,
                    logger: object = None) -> None:
    """mmengine's ``load_state_dict`` for official layouts too, with the fit check."""
    source = source_of(state_dict)
    model_keys = [k for k in _unwrapped(module).state_dict()
                  if not k.endswith('num_batches_tracked')]
    converted = model_state_dict(state_dict, model_keys, source)
    if converted is not state_dict:
        metadata = getattr(state_dict, '_metadata', None)
        converted = OrderedDict(converted)
        if metadata is not None:
            converted._metadata = metadata
    _MMENGINE_LOAD_STATE_DICT(module, converted, strict, logger)
    check_fit(source, sum(k in converted for k in model_keys), len(model_keys), strict=strict)


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
        official = [key for key in LAYOUTS['official'].entries
                    if isinstance(checkpoint.get(key), Mapping)]
        what = (f'an official vHeat checkpoint (entries {", ".join(official)})' if official
                else f'a checkpoint with the top-level keys {sorted(map(str, checkpoint))[:10]}')
        raise CheckpointError(
            f"cannot resume from {source}: it is {what}, not a checkpoint of mmengine's runner "
            f"(with 'state_dict' and 'meta'); to start from its weights, give it as load_from "
            f'or as the backbone\'s init_cfg instead')
