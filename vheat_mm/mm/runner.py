"""``VHeatRunner``: mmengine's ``Runner``, reading checkpoints through vheat_mm's safe reader.

The project's configs name it (``runner_type = 'VHeatRunner'``, which the toolboxes' own
``tools/train.py`` and ``tools/test.py`` honour), and the project's tools build it for any
config that names no runner. ``load_from``, ``--resume`` and ``tools/test.py CKPT`` reach its
:meth:`~VHeatRunner.load_checkpoint`, which reads any address mmengine knows with
:func:`~.addresses.read_address` (nothing in the file runs; ``map_location`` honoured; the
types mmengine's own checkpoints hold allowed, on every torch), gives official vHeat layouts to
the hooks as ``{'state_dict': ...}``, loads official keys as the model's and reports the fit
(:func:`~.state_dict_loading.load_into_model`). Resuming refuses, before any weight is loaded,
a checkpoint that mmengine's runner did not write. Its optimizers hold their parameter groups as
plain dicts (:meth:`~VHeatRunner.build_optim_wrapper`), so that the ``compile`` key can compile
a ``train_step`` that steps them. Everything else is mmengine's ``Runner``.

:func:`load_checkpoint` is the same reading and loading outside a runner, with the signature of
mmengine's function of that name (``demo/image_demo.py`` loads its ``--weights`` with it).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence, Union

from mmengine.optim import OptimWrapperDict
from mmengine.runner import Runner
from torch import nn

from ..checkpoint.messages import shown_path
from .addresses import read_address
from .state_dict_loading import load_into_model, require_runner_checkpoint

__all__ = ['VHeatRunner', 'load_checkpoint']


class VHeatRunner(Runner):
    """mmengine's ``Runner`` whose checkpoints are read by vheat_mm's safe reader."""

    _resuming = False

    def resume(self, filename: str, resume_optimizer: bool = True,
               resume_param_scheduler: bool = True,
               map_location: Union[str, Callable] = 'default') -> None:
        self._resuming = True
        try:
            super().resume(filename, resume_optimizer, resume_param_scheduler, map_location)
        finally:
            self._resuming = False

    def build_optim_wrapper(self, optim_wrapper):
        """mmengine's, with each optimizer's parameter groups as plain dicts: with a
        ``paramwise_cfg``, mmengine's constructor hands them over inside a ConfigDict, which
        makes each a ConfigDict, and torch.compile cannot trace the optimizer's step over those
        (the ``compile`` key compiles ``train_step``, the step included)."""
        built = super().build_optim_wrapper(optim_wrapper)
        for wrapper in built.values() if isinstance(built, OptimWrapperDict) else [built]:
            groups = wrapper.optimizer.param_groups
            groups[:] = [group if type(group) is dict else dict(group) for group in groups]
        return built

    def load_checkpoint(self, filename: str, map_location: Union[str, Callable] = 'cpu',
                        strict: bool = False,
                        revise_keys: list = [(r'^module.', '')]) -> Mapping:  # noqa: B006
        # mmengine's signature, default included
        checkpoint = read_address(filename, map_location=map_location)
        if self._resuming:
            require_runner_checkpoint(checkpoint, filename)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        load_into_model(self.model, checkpoint, source=filename, strict=strict,
                        revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {shown_path(filename)}')
        return checkpoint


def load_checkpoint(model: nn.Module, filename: str, map_location: Union[str, Callable] = 'cpu',
                    strict: bool = False,
                    revise_keys: Sequence[tuple[str, str]] = ((r'^module\.', ''),)) -> Mapping:
    """Read ``filename`` (any address of :data:`~.addresses.ROUTED`) with the safe reader and
    load it into ``model`` as :class:`VHeatRunner` does; returns the checkpoint."""
    checkpoint = read_address(filename, map_location=map_location)
    load_into_model(model, checkpoint, source=filename, strict=strict, revise_keys=revise_keys)
    return checkpoint
