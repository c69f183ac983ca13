"""Train with mmdet, mmseg or mmpretrain (the config's ``default_scope`` picks the toolbox).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr]
        [--strict] [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]

Several processes: ``tools/dist_train.sh CONFIG N`` (torchrun) or ``tools/slurm_train.sh``. Runs
on CPU too (gloo, BN for SyncBN): see :mod:`vheat_mm.mm.cpu_launch`.

One run per work_dir: a run refuses to start where another live run holds the work_dir's lock
file (``train.lock``), unless ``--resume`` is given (see :mod:`vheat_mm.mm.work_dir_lock`).
"""
from __future__ import annotations

import argparse
import sys

import vheat_mm.mm  # noqa: F401  registers vHeat, mmengine reads checkpoints safely
from vheat_mm.checkpoint import CheckpointError, strict_loading
from vheat_mm.mm import cpu_launch, tool_config
from vheat_mm.mm.work_dir_lock import WorkDirInUse


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model with mmdet, mmseg or mmpretrain')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint; without a value, from the latest '
                             'checkpoint in the work directory (also where another run holds '
                             'its lock: the lock is taken over, with a warning)')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (AmpOptimWrapper, dynamic loss scale); '
                             'without CUDA, float32 with a warning')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the actual batch size')
    return tool_config.parse_tool_args(parser)


def main() -> None:
    args = parse_args()
    try:
        cfg, toolbox = tool_config.load_tool_config(args)
        if args.amp:
            tool_config.enable_amp(cfg)
        if args.auto_scale_lr:
            tool_config.enable_auto_scale_lr(cfg)
        if args.resume == 'auto':
            tool_config.check_last_checkpoint(cfg.work_dir)
        lock = tool_config.lock_work_dir(cfg, resume=args.resume is not None)
    except (tool_config.ToolConfigError, WorkDirInUse) as err:
        sys.exit(f'train.py: error: {err}')
    with lock:  # released however the run ends (SIGTERM included)
        tool_config.set_resume(cfg, resume=args.resume)
        tool_config.use_atomic_checkpoints(cfg)
        tool_config.set_dataloader_defaults(
            cfg, toolbox=toolbox,
            fields=('train_dataloader', 'val_dataloader', 'test_dataloader'),
            persistent_workers=True)
        cpu_launch.prepare_cpu_launch(cfg)  # without CUDA: made to run on the CPU, logged
        runner = tool_config.build_runner(cfg, toolbox=toolbox)
        try:
            with strict_loading(args.strict):
                runner.train()
        except CheckpointError as err:  # e.g. an unsafe or truncated checkpoint to resume from
            sys.exit(f'train.py: error: {err}')


if __name__ == '__main__':
    main()
    cpu_launch.close_distributed()  # after main() released the runner
