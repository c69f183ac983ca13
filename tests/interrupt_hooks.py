"""Test-only mmengine hooks that SIGKILL the training process at a chosen, deterministic point.

``tests/test_interruption.py`` puts this directory on ``PYTHONPATH`` and imports the module
through the config's ``custom_imports``. Nothing runs at import: a hook acts only when a config
names it.
"""
from __future__ import annotations

import os
import signal

from mmengine.fileio import LocalBackend
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module()
class KillDuringIteration(Hook):
    """SIGKILL inside the backbone's forward pass of training iteration ``iteration`` (1-based),
    after its data was loaded and before the optimizer step."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model

        def kill_in_forward(module, inputs, output) -> None:
            if module.training and runner.iter + 1 == self.iteration:
                _kill()

        model.backbone.register_forward_hook(kill_in_forward)


@HOOKS.register_module()
class KillDuringSave(Hook):
    """SIGKILL while the checkpoint of iteration ``iteration`` is written: the first half of its
    bytes reach the file (flushed to disk), then the process dies.

    It wraps the one write of mmengine's ``save_checkpoint`` (``LocalBackend.put``), whatever
    file name the checkpoint hook chose for it.
    """

    priority = 'VERY_LOW'

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if checkpoint['meta']['iter'] != self.iteration:
            return

        def put_half_then_kill(backend: LocalBackend, obj: bytes, filepath) -> None:
            with open(filepath, 'wb') as file:
                file.write(obj[:len(obj) // 2])
                file.flush()
                os.fsync(file.fileno())
            _kill()

        LocalBackend.put = put_half_then_kill
