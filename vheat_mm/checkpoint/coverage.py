"""What loading a state dict into a model would do, and the one verdict on it.

:func:`survey` reads the shapes of a state dict and a model (nothing is loaded or copied) into a
:class:`LoadReport`: the model's tensors it fills, those it leaves missing, its own that the
model does not have, those of another shape, and the freq_embeds that the model's load hook
resizes. :func:`check_coverage` is the verdict every load path applies to that report, before
anything is loaded:

- a checkpoint that fills fewer than :data:`MIN_COVERAGE` of the model's tensors (a Swin
  checkpoint in a vHeat model, an empty state dict), or of whose tensors the model uses fewer
  than :data:`MIN_COVERAGE` (a larger arch's weights in a smaller one, a silent mix), logs a
  WARNING naming the file and the counts; under strict loading (a keyword of the loaders, or
  :func:`strict_loading` around a whole run, as the tools' ``--strict`` does) it raises
  :class:`~vheat_mm.checkpoint.CheckpointError` instead;
- with the loaders' ``strict=True``, any tensor missing, unused or of another shape raises.

Tensors of another shape are not loaded, on every path (as mmengine skips them).
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
from dataclasses import dataclass, field
from typing import Iterator, Mapping

from torch import nn

from ..models import VHeatTrunk, freq_embed_resizes
from .errors import CheckpointError
from .messages import cut, shown_keys, shown_path

__all__ = ['MIN_COVERAGE', 'LoadReport', 'check_coverage', 'log_report', 'strict_loading',
           'strict_loading_enabled', 'survey']

logger = logging.getLogger(__name__)

MIN_COVERAGE = 0.9
_STRICT = contextvars.ContextVar('vheat_mm_strict_loading', default=False)
# BatchNorm's step counters: a model's state dict holds them, older checkpoints may not, and
# mmengine does not count them as missing; neither do the counts here.
_COUNTERS = 'num_batches_tracked'
_KEYS_LISTED = 100  # keys a report line lists


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


@dataclass
class LoadReport:
    """What loading a state dict from ``path`` into a model does (:func:`survey`)."""
    path: str
    loaded: int = 0          # the model's tensors the state dict fills
    total: int = 0           # the model's tensors
    used_of: int = 0         # the state dict's tensors
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # 'key: checkpoint (..) vs model (..)'
    resized: list[str] = field(default_factory=list)     # 'freq_embed.i (..) -> (..)'
    skipped: frozenset = frozenset()  # keys not loaded: unexpected or of another shape

    @property
    def covers(self) -> bool:
        """Whether the state dict fills at least :data:`MIN_COVERAGE` of the model's tensors
        and the model uses at least :data:`MIN_COVERAGE` of the state dict's."""
        return not self.total or (self.loaded >= MIN_COVERAGE * self.total
                                  and self.loaded >= MIN_COVERAGE * self.used_of)

    @property
    def exact(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def loadable(self, state_dict: Mapping) -> dict:
        """The entries of ``state_dict`` that the model takes."""
        return {k: v for k, v in state_dict.items() if k not in self.skipped}

    def lines(self) -> list[str]:
        return [f'loaded vHeat weights from {shown_path(self.path)}: {self.loaded} of the '
                f'model\'s {self.total} tensors', *self.mismatch_lines()]

    def mismatch_lines(self) -> list[str]:
        out = []
        if self.missing:
            out.append(f'missing in the checkpoint, left as initialised ({len(self.missing)}): '
                       + _listed(self.missing))
        if self.unexpected:
            out.append(f'in the checkpoint but not in the model, ignored '
                       f'({len(self.unexpected)}): ' + _listed(self.unexpected))
        if self.mismatched:
            out.append(f'of another shape than the model\'s, not loaded ({len(self.mismatched)}): '
                       + _listed(self.mismatched))
        return out


def _listed(keys: list[str]) -> str:
    """Keys of a report line, each cut to a bounded length, at most :data:`_KEYS_LISTED`."""
    return shown_keys(keys, _KEYS_LISTED, as_list=False)


def survey(model: nn.Module, state_dict: Mapping, source: str) -> LoadReport:
    """What loading ``state_dict`` into ``model`` does, from shapes alone: a freq_embed of
    another resolution counts as loaded where a vHeat trunk's load hook resizes it
    (:func:`~vheat_mm.models.freq_embed_resize.freq_embed_resizes`; one it cannot, under
    ``freq_embed_resize='pad'``, raises :class:`CheckpointError` naming ``source``)."""
    own = {k: getattr(v, 'shape', None) for k, v in model.state_dict().items()}
    resizes = []
    for name, trunk in model.named_modules():
        if isinstance(trunk, VHeatTrunk):
            try:
                resizes += freq_embed_resizes(state_dict, f'{name}.' if name else '',
                                              trunk.freq_embed, trunk.freq_embed_resize)
            except ValueError as err:
                raise CheckpointError(f'{shown_path(source)}: {err}') from None
    resized = {resize.key for resize in resizes}
    # a module's extra state (any object, no shape) is the module's to take
    mismatched = {k: f'{cut(k)}: checkpoint {_shape(v)} vs model {tuple(own[k])}'
                  for k, v in state_dict.items() if k in own and k not in resized
                  and own[k] is not None and getattr(v, 'shape', None) != own[k]}
    counted_own = {k for k in own if not k.endswith(_COUNTERS)}
    counted = {k for k in state_dict if not (isinstance(k, str) and k.endswith(_COUNTERS))}
    unexpected = {k for k in state_dict if k not in own}
    return LoadReport(
        path=str(source), loaded=len((counted_own & counted) - set(mismatched)),
        total=len(counted_own), used_of=len(counted),
        missing=sorted(counted_own - counted), unexpected=sorted(map(str, unexpected)),
        mismatched=[mismatched[k] for k in sorted(mismatched)],
        resized=[str(resize) for resize in resizes],
        skipped=frozenset(unexpected | set(mismatched)))


def _shape(value) -> str:
    shape = getattr(value, 'shape', None)
    return str(tuple(shape)) if shape is not None else f'a {type(value).__name__}'


def check_coverage(report: LoadReport, *, strict: bool = False) -> None:
    """The verdict on a load, before it happens: a WARNING when the checkpoint covers the model
    badly (:attr:`LoadReport.covers`), raised instead under ``strict`` or
    :func:`strict_loading`; under ``strict``, also any tensor missing, unused or of another
    shape raises (:class:`CheckpointError`)."""
    if not report.covers:
        message = (f'checkpoint {shown_path(report.path)} fits the model badly: {report.loaded} '
                   f'of the model\'s {report.total} tensors loaded from it, '
                   f'{report.used_of - report.loaded} of its {report.used_of} not used (each '
                   f'should be under {1 - MIN_COVERAGE:.0%})')
        if strict or strict_loading_enabled():
            raise CheckpointError(f'{message}; is it a checkpoint of this architecture?')
        logger.warning('%s; what was not loaded keeps its initial values (strict loading makes '
                       'this an error)', message)
    if strict and not report.exact:
        raise CheckpointError(f'checkpoint {shown_path(report.path)} does not match the model '
                              f'exactly (strict): ' + '; '.join(report.mismatch_lines()))


def log_report(report: LoadReport) -> None:
    """One INFO line of what was loaded, and one for each kind of tensor that was not."""
    for line in report.lines():
        logger.info(line)
