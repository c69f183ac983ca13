"""How vheat_mm's messages reach a user of the OpenMMLab tools.

- The plain-PyTorch layers log through Python's ``logging`` under the ``vheat_mm`` logger (for
  example each freq_embed resized while loading). :func:`forward_logs_to_mmengine` sends those
  records to mmengine's current logger, so they appear in a runner's log like its own lines.
- A :class:`~vheat_mm.checkpoint.CheckpointError` that no one catches (a truncated, empty or
  crafted checkpoint given to a toolbox's own ``tools/test.py``) ends the program with the one
  line the project's own tools print, ``PROGRAM: error: MESSAGE`` naming the file, instead of a
  traceback: :func:`one_line_checkpoint_errors`.
"""
from __future__ import annotations

import logging
import os
import sys

from ..checkpoint import CheckpointError

__all__ = ['forward_logs_to_mmengine', 'one_line_checkpoint_errors']


class _MMEngineHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        from mmengine.logging import print_log
        try:
            print_log(record.getMessage(), logger='current', level=record.levelno)
        except Exception:  # noqa: BLE001 -- logging must never raise
            self.handleError(record)


def forward_logs_to_mmengine() -> None:
    """Send INFO and higher records of the ``vheat_mm`` logger to mmengine (once)."""
    logger = logging.getLogger('vheat_mm')
    if not any(isinstance(h, _MMEngineHandler) for h in logger.handlers):
        logger.addHandler(_MMEngineHandler())
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)


def one_line_checkpoint_errors() -> None:
    """Print an uncaught CheckpointError as ``PROGRAM: error: MESSAGE`` on stderr (exit
    status 1), as ``tools/train.py`` and ``tools/test.py`` do."""
    previous = sys.excepthook
    if getattr(previous, 'vheat_mm', False):
        return

    def hook(kind, value, traceback):
        if issubclass(kind, CheckpointError):
            print(f'{os.path.basename(sys.argv[0])}: error: {value}', file=sys.stderr)
            return
        previous(kind, value, traceback)

    hook.vheat_mm = True
    sys.excepthook = hook
