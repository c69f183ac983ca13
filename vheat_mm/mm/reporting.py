"""How vheat_mm's messages reach a user of the OpenMMLab tools.

- The plain-PyTorch layers log through Python's ``logging`` under the ``vheat_mm`` logger (for
  example each freq_embed resized while loading). :func:`forward_logs_to_mmengine` sends those
  records to mmengine's current logger, so they appear in a runner's log like its own lines.
- The project's tools print a :class:`~vheat_mm.checkpoint.CheckpointError` as one line,
  ``PROGRAM: error: MESSAGE`` naming the file; in a toolbox's own ``tools/test.py`` the
  traceback ends with that message.
"""
from __future__ import annotations

import logging

__all__ = ['forward_logs_to_mmengine']


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
