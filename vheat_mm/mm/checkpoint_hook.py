"""``AtomicCheckpointHook``: mmengine's ``CheckpointHook`` with checkpoints that survive a kill.

mmengine 0.10's hook writes ``iter_N.pth`` in place (a kill leaves a truncated file under a
complete checkpoint's name), rewrites ``last_checkpoint`` in place, and with ``max_keep_ckpts``
deletes the oldest checkpoint before writing the new one (a kill during the write leaves
``last_checkpoint`` naming a deleted file). Here, for checkpoints on the local disk, the
checkpoint and then ``last_checkpoint`` are each written by
:func:`~vheat_mm.checkpoint.replaced_atomically` (temporary file, fsync, rename) and the oldest
checkpoint is deleted only after both: ``last_checkpoint`` always names a complete checkpoint,
which ``--resume`` picks. The tools use it in place of ``CheckpointHook``
(:func:`vheat_mm.mm.tool_config.use_atomic_checkpoints`).

Before training, the temporary files of saves whose writer is gone are removed (a killed run's
partial save); those of a live writer, or of another host, are left alone and logged.
"""
from __future__ import annotations

import logging
import os
import os.path as osp
import time
from pathlib import Path

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.runner import Runner

from ..checkpoint.atomic import replaced_atomically, temporary_files

__all__ = ['AtomicCheckpointHook']


class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` (same arguments) whose saves are atomic on the local disk.

    Other storage (``file_client_args``, a non-local ``backend_args``) and other runners
    (``FlexibleRunner``, whose DeepSpeed/FSDP checkpoints are saved by every process) are saved
    as mmengine does. Best checkpoints (``save_best``) are written as mmengine writes them.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.started = time.time()  # the run's start: older temporary files are not its own

    def _is_atomic(self, runner: Runner) -> bool:
        return (isinstance(runner, Runner) and self.file_client_args is None
                and isinstance(self.file_backend, LocalBackend))

    def before_train(self, runner: Runner) -> None:
        """mmengine's set-up, then delete the temporary files of saves whose writer is gone
        (:meth:`~vheat_mm.checkpoint.atomic.TemporaryFile.kept_because`); log the others."""
        super().before_train(runner)
        if not (self._is_atomic(runner) and is_main_process()):
            return
        for directory in dict.fromkeys((self.out_dir, runner.work_dir)):
            if not osp.isdir(directory):
                continue
            for file in temporary_files(directory):
                reason = file.kept_because(self.started)
                if reason is not None:
                    print_log(f'kept {file.path}, a temporary checkpoint file: {reason}',
                              logger='current', level=logging.WARNING)
                    continue
                try:
                    os.remove(file.path)
                except FileNotFoundError:
                    continue
                print_log(f'removed {file.path}, left by an interrupted checkpoint save',
                          logger='current', level=logging.WARNING)

    def _save_checkpoint_with_step(self, runner: Runner, step: int, meta: dict) -> None:
        if not self._is_atomic(runner):
            super()._save_checkpoint_with_step(runner, step, meta)
            return
        oldest = self._rotate(runner, step)
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        def save(name: str) -> None:
            runner.save_checkpoint(
                self.out_dir, name, save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler, meta=meta,
                by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)

        if not is_main_process():  # Runner.save_checkpoint writes on the main process only
            save(filename)
            return
        with replaced_atomically(self.last_ckpt) as tmp:
            save(osp.basename(tmp))
        with replaced_atomically(osp.join(runner.work_dir, 'last_checkpoint')) as tmp:
            Path(tmp).write_text(self.last_ckpt)
        if oldest is not None and oldest != self.last_ckpt and osp.isfile(oldest):
            os.remove(oldest)

    def _rotate(self, runner: Runner, step: int) -> str | None:
        """Record ``step`` in ``keep_ckpt_ids`` as mmengine does; return the path of the checkpoint
        that drops out (``max_keep_ckpts``), to be deleted once the new one is saved."""
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            return None
        oldest = None
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            oldest = self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(self.keep_ckpt_ids.popleft()))
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        return oldest
