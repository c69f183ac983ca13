"""Loading a vHeat checkpoint into a model: the one order every load path follows.

Read (:func:`~.io.read_checkpoint`), find the state dict (:mod:`.layout`), survey what the load
does and judge it (:func:`~.coverage.survey`, :func:`~.coverage.check_coverage`), load (the
trunk's load hook resizes freq_embed), report (:func:`~.coverage.log_report`).
:func:`load_state_dict_checked` is the part after reading, which mmengine's loading
(:mod:`vheat_mm.mm.state_dict_loading`) and timm's (:func:`checkpoint_filter_fn`)
share with :func:`load_pretrained`.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from torch import Tensor, nn

from .coverage import LoadReport, check_coverage, log_report, survey
from .errors import CheckpointError
from .io import read_checkpoint, refuse_non_finite
from .layout import find_state_dict, select_prefix
from .messages import shown_path

__all__ = ['checkpoint_filter_fn', 'load_pretrained', 'load_state_dict_checked']


def _load_what_fits(model: nn.Module, state_dict: Mapping, report: LoadReport) -> None:
    model.load_state_dict(report.loadable(state_dict), strict=False)


def load_state_dict_checked(
        model: nn.Module, state_dict: Mapping, *, source: str, strict: bool = False,
        load: Callable[[nn.Module, Mapping, LoadReport], None] = _load_what_fits
) -> LoadReport:
    """Survey the load of ``state_dict`` into ``model``, judge it (a warning, or
    :class:`CheckpointError` before anything is loaded), load what fits with ``load`` (by
    default ``model.load_state_dict`` of the tensors the model takes), log the report."""
    report = survey(model, state_dict, source)
    check_coverage(report, strict=strict)
    load(model, state_dict, report)
    log_report(report)
    return report


def load_pretrained(model: nn.Module, path: str | os.PathLike, *, prefix: str | None = None,
                    strict: bool = False, entry: str | None = None) -> LoadReport:
    """Load a vHeat checkpoint of any recognised layout into ``model``.

    ``entry`` picks the state dict of a checkpoint that holds several (an official one's
    ``model_ema``, read by default where present, or ``model``; see
    :mod:`~vheat_mm.checkpoint.layout`); ``prefix`` keeps the keys under it (a detector's
    ``backbone.``). freq_embed tensors of another resolution are resized as the model's
    ``freq_embed_resize`` says; tensors of another shape are not loaded. The verdict is
    :func:`~vheat_mm.checkpoint.coverage.check_coverage`'s: a checkpoint that covers the model
    badly warns (raises under ``strict`` or strict loading), and under ``strict`` any tensor
    missing, unused or of another shape raises. Returns the :class:`LoadReport`.
    """
    checkpoint = read_checkpoint(path)
    try:
        state_dict = select_prefix(find_state_dict(checkpoint, entry), prefix)
    except CheckpointError as err:
        raise CheckpointError(f'{shown_path(path)}: {err}') from None
    return load_state_dict_checked(model, state_dict, source=os.fspath(path), strict=strict)


def checkpoint_filter_fn(checkpoint: Mapping[str, Any], model: nn.Module,
                         source: str = 'the pretrained weights') -> dict[str, Tensor]:
    """timm's ``pretrained_filter_fn``: the state dict that a checkpoint of any recognised layout
    holds (:func:`~vheat_mm.checkpoint.layout.find_state_dict`), NaN or inf refused, surveyed and
    judged as every load path does (:func:`~vheat_mm.checkpoint.coverage.check_coverage`, its
    report logged), and given to timm as the tensors the model takes (the model's load hook
    resizes freq_embed; timm adapts the first convolution to ``in_chans`` after this, so that
    weight is judged by its other dimensions). ``source`` names the weights in messages. The
    input is left untouched."""
    state_dict = find_state_dict(checkpoint)
    refuse_non_finite(state_dict, f'the pretrained weights of {type(model).__name__}')
    report = survey(model, _as_timm_adapts(model, state_dict), source)
    check_coverage(report)
    log_report(report)
    return report.loadable(state_dict)


def _as_timm_adapts(model: nn.Module, state_dict: Mapping) -> Mapping:
    """``state_dict`` with the weights of the model's ``pretrained_cfg['first_conv']`` shown in
    the model's shape where they differ from it only in input channels: timm's
    ``adapt_input_conv`` sums or repeats them over ``in_chans`` after the filter."""
    first_conv = (getattr(model, 'pretrained_cfg', None) or {}).get('first_conv') or ()
    parameters = dict(model.named_parameters())
    view = dict(state_dict)
    for conv in [first_conv] if isinstance(first_conv, str) else first_conv:
        key = f'{conv}.weight'
        given, own = view.get(key), parameters.get(key)
        if isinstance(given, Tensor) and own is not None and given.dim() == own.dim() == 4 \
                and given.shape[0] == own.shape[0] and given.shape[2:] == own.shape[2:]:
            view[key] = own.new_empty(own.shape, device='meta')
    return view
