"""Where a vHeat checkpoint keeps its weights: the table of layouts, and the look-ups in it.

A checkpoint is a dict whose entry (a top-level key) holds the state dict, in one of the
:data:`LAYOUTS`, or is itself a bare state dict (a mapping of tensors).

An official checkpoint may hold two state dicts: ``model`` (the raw weights) and ``model_ema``
(their exponential moving average, what the official release reports top-1 for). By default
the EMA is read where it is present (as timm reads ``model_ema`` first); ``entry='model'``
chooses the raw weights, which the official detection and segmentation code loads.
"""
from __future__ import annotations

import re
from typing import Mapping, NamedTuple

from torch import Tensor

from ..models import VHeat
from .errors import CheckpointError
from .messages import shown, shown_keys

__all__ = ['BACKBONE_MODULE', 'WRAPPED_MODULE', 'Layout', 'LAYOUTS', 'STATE_DICT_ENTRIES',
           'FreqEmbedKey', 'find_layout', 'find_state_dict', 'is_state_dict',
           'named_weight_entries', 'select_prefix', 'weight_entries', 'find_freq_embeds']


class Layout(NamedTuple):
    """One checkpoint layout.

    ``entries``: the top-level entries that hold its state dicts. ``freq_embed``: the pattern of
    its freq_embed keys (group 1: the stage), or None where the layout is not converted for a
    downstream resolution. ``to_mmpretrain``: key prefix -> prefix in mmpretrain's
    ``ImageClassifier``, ``''`` standing for every other key; empty where no such conversion is
    defined.
    """
    entries: tuple[str, ...]
    freq_embed: re.Pattern[str] | None
    to_mmpretrain: Mapping[str, str]


# Names of a model held inside another, which prefix the inner model's keys: an OpenMMLab model's
# trunk, and the model inside DistributedDataParallel or DeepSpeed's engine (DeepSpeed's
# checkpoint entry is named after it).
BACKBONE_MODULE = 'backbone'
WRAPPED_MODULE = 'module'

_FREQ_EMBED = re.compile(rf'(?:{BACKBONE_MODULE}\.)?freq_embed\.(\d+)')

# By writer, in the order find_state_dict tries their entries.
LAYOUTS: dict[str, Layout] = {
    'mmengine': Layout(entries=('state_dict',), freq_embed=_FREQ_EMBED, to_mmpretrain={}),
    'official': Layout(entries=('model_ema', 'model'), freq_embed=_FREQ_EMBED,
                       to_mmpretrain={'classifier.0.': f'{BACKBONE_MODULE}.outnorm3.',
                                      f'{VHeat.FC_NAME}.': 'head.fc.', '': f'{BACKBONE_MODULE}.'}),
    'DeepSpeed': Layout(entries=(WRAPPED_MODULE,), freq_embed=None, to_mmpretrain={}),
}
STATE_DICT_ENTRIES = tuple(entry for layout in LAYOUTS.values() for entry in layout.entries)
# Entry -> the pattern of its freq_embed keys, for the layouts converted downstream.
_FREQ_EMBED_PATTERNS = {entry: layout.freq_embed for layout in LAYOUTS.values()
                        if layout.freq_embed for entry in layout.entries}


# torch's key suffix for what a module's get_extra_state returns (any value, a dict included)
EXTRA_STATE_SUFFIX = '_extra_state'


def is_state_dict(checkpoint: Mapping) -> bool:
    """Whether ``checkpoint`` is itself a state dict: a mapping of tensors (and of the values a
    module's extra state holds), without a nested mapping other than an extra state."""
    return any(isinstance(v, Tensor) for v in checkpoint.values()) \
        and not any(isinstance(v, Mapping) and not str(k).endswith(EXTRA_STATE_SUFFIX)
                    for k, v in checkpoint.items())


def find_layout(checkpoint: Mapping, entry: str | None = None) -> tuple[str, str | None]:
    """The layout of ``checkpoint`` and the entry to read: ``(name, entry)``, with ``('bare',
    None)`` for a bare state dict.

    ``entry`` chooses among the entries present (e.g. ``'model'`` of an official checkpoint
    that also holds ``model_ema``); by default the first present in :data:`LAYOUTS`' order.
    Raises :class:`CheckpointError` for an unknown layout or an absent ``entry``, listing the
    checkpoint's top-level keys.
    """
    present = [(name, key) for name, layout in LAYOUTS.items() for key in layout.entries
               if isinstance(checkpoint.get(key), Mapping)]
    if entry is not None:
        if entry not in STATE_DICT_ENTRIES:
            raise ValueError(f'unknown checkpoint entry {shown(entry)}; choose one of '
                             f'{list(STATE_DICT_ENTRIES)}')
        chosen = [(name, key) for name, key in present if key == entry]
        if not chosen:
            raise CheckpointError(f'the checkpoint has no {entry!r} entry (top-level keys: '
                                  f'{shown_keys(checkpoint)})')
        return chosen[0]
    if present:
        return present[0]
    if is_state_dict(checkpoint):
        return 'bare', None
    not_mappings = [f'{shown(key)} holds a {type(checkpoint[key]).__name__}'
                    for key in STATE_DICT_ENTRIES if key in checkpoint]
    raise CheckpointError(
        f'no state dict found: expected one of the entries {list(STATE_DICT_ENTRIES)} or a '
        f'mapping of tensors, found keys {shown_keys(checkpoint)}'
        + (f' ({", ".join(not_mappings)}, not a mapping of tensors)' if not_mappings else ''))


def find_state_dict(checkpoint: Mapping, entry: str | None = None) -> dict[str, Tensor]:
    """The state dict inside a checkpoint of any recognised layout (:func:`find_layout`)."""
    _, key = find_layout(checkpoint, entry)
    return dict(checkpoint if key is None else checkpoint[key])


def named_weight_entries(checkpoint: Mapping) -> list[tuple[str | None, Mapping]]:
    """Every state dict a checkpoint holds, with its entry: its :data:`LAYOUTS` entries, or
    ``[(None, checkpoint)]`` when it is a bare state dict."""
    entries = [(key, checkpoint[key]) for key in STATE_DICT_ENTRIES
               if isinstance(checkpoint.get(key), Mapping)]
    return entries or ([(None, checkpoint)] if is_state_dict(checkpoint) else [])


def weight_entries(checkpoint: Mapping) -> list[Mapping]:
    """Every state dict a checkpoint holds: its :data:`LAYOUTS` entries, or itself when bare."""
    return [mapping for _, mapping in named_weight_entries(checkpoint)]


def select_prefix(state_dict: Mapping[str, Tensor], prefix: str | None) -> dict[str, Tensor]:
    """Keys under ``prefix`` (e.g. 'backbone'), stripped of it.

    With ``prefix=None``, a :data:`WRAPPED_MODULE` (DDP) prefix is removed and, if the keys are
    those of a whole classifier, detector or segmentor, the :data:`BACKBONE_MODULE` part is
    selected.
    """
    if prefix is None:
        wrapped, backbone = f'{WRAPPED_MODULE}.', f'{BACKBONE_MODULE}.'
        state_dict = {k.removeprefix(wrapped): v for k, v in state_dict.items()}
        prefix = backbone if any(k.startswith(backbone) for k in state_dict) else ''
    if not prefix:
        return dict(state_dict)
    head = prefix.rstrip('.') + '.'
    selected = {k[len(head):]: v for k, v in state_dict.items() if k.startswith(head)}
    if not selected:
        raise CheckpointError(f'no key starts with {shown(head)}; the checkpoint has keys such '
                              f'as {shown_keys(state_dict, 10)}')
    return selected


class FreqEmbedKey(NamedTuple):
    """Where a freq_embed sits in a checkpoint: ``checkpoint[entry][key]``, of stage ``stage``."""
    entry: str
    key: str
    stage: int


def find_freq_embeds(checkpoint: Mapping) -> list[FreqEmbedKey]:
    """Every freq_embed in the entries of the :data:`LAYOUTS` that have freq_embed keys
    (``state_dict``, ``model``, ``model_ema``: ``[backbone.]freq_embed.{i}``).

    Raises :class:`CheckpointError` listing the top-level keys when none of those entries is
    present, or listing an entry's keys when that entry holds no freq_embed.
    """
    present = [(entry, pattern) for entry, pattern in _FREQ_EMBED_PATTERNS.items()
               if isinstance(checkpoint.get(entry), Mapping)]
    if not present:
        official, mmengine = (', '.join(LAYOUTS[name].entries) for name in ('official', 'mmengine'))
        raise CheckpointError(
            f'unknown checkpoint layout: expected an official entry ({official}) or an mmengine '
            f'entry ({mmengine}), found top-level keys {shown_keys(checkpoint)}')
    found = []
    for entry, pattern in present:
        keys = [FreqEmbedKey(entry, key, _stage_index(match.group(1))) for key in checkpoint[entry]
                if isinstance(key, str) and (match := pattern.fullmatch(key))]
        if not keys:
            raise CheckpointError(f'no freq_embed in the checkpoint entry {entry!r} (is it a '
                                  f'vHeat checkpoint?): expected keys freq_embed.<stage> or '
                                  f'{BACKBONE_MODULE}.freq_embed.<stage>; keys found: '
                                  f'{shown_keys(checkpoint[entry], as_list=False) or "none"}')
        keys.sort(key=lambda k: (k.stage, k.key))
        _check_stage_indices(entry, keys)
        found.extend(keys)
    return found


# More digits than any stage index has: such a key is refused before its index is read.
_MAX_STAGE_DIGITS = 4


def _stage_index(digits: str) -> int:
    """The stage index of a freq_embed key; -1 (refused by :func:`_check_stage_indices`) for
    one too long to be a stage."""
    return int(digits) if len(digits) <= _MAX_STAGE_DIGITS else -1


def _check_stage_indices(entry: str, keys: list[FreqEmbedKey]) -> None:
    """Raise :class:`CheckpointError` naming the key unless the stages of ``keys`` are 0, 1,
    ..., n-1: a vHeat trunk has one freq_embed per stage, so an index is never larger than
    their number (and never drives a loop)."""
    count = len({k.stage for k in keys})
    for key in keys:
        if not 0 <= key.stage < count:  # n distinct indices other than 0..n-1 hold one >= n
            raise CheckpointError(
                f'{entry}[{shown(key.key)}] is not the freq_embed of a stage: the entry holds '
                f'freq_embeds of {count} stage{"s" if count > 1 else ""}, numbered from 0 '
                f'(keys {", ".join(shown(k.key) for k in keys[:6])})')
