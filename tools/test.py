"""Test (and evaluate) with mmdet, mmseg or mmpretrain (the config's ``default_scope`` picks it).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE] [--show-dir DIR]
        [--tta] [--strict] [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]

``--out``: mmdet and mmpretrain dump predictions to a .pkl file, mmseg writes them to a
directory. ``--show-dir``: painted predictions. ``--tta``: test-time augmentation with the
config's ``tta_model`` / ``tta_pipeline`` (mmdet and mmpretrain have defaults, mmseg has none).
"""
from __future__ import annotations

import argparse
import sys

import vheat_mm.mm  # noqa: F401  registers vHeat, mmengine reads checkpoints safely
from vheat_mm.checkpoint import CheckpointError, strict_loading
from vheat_mm.mm import cpu_launch, tool_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a model with mmdet, mmseg or mmpretrain')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='mmdet / mmpretrain: .pkl file for the predictions; '
                                      'mmseg: directory for the predicted maps')
    parser.add_argument('--show-dir', help='directory for painted predictions')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation')
    return tool_config.parse_tool_args(parser)


def main() -> None:
    args = parse_args()
    try:
        cfg, toolbox = tool_config.load_tool_config(args)
        if args.show_dir:
            tool_config.enable_visualization(cfg, toolbox=toolbox, show_dir=args.show_dir)
        if args.tta:
            tool_config.enable_tta(cfg, toolbox=toolbox)
        if args.out is not None:
            tool_config.set_test_output(cfg, toolbox=toolbox, out=args.out)
    except tool_config.ToolConfigError as err:
        sys.exit(f'test.py: error: {err}')
    cfg.load_from = args.checkpoint
    tool_config.set_dataloader_defaults(cfg, toolbox=toolbox, fields=('test_dataloader',),
                                        persistent_workers=False)
    cpu_launch.prepare_cpu_launch(cfg)  # without CUDA: made to run on the CPU, logged
    runner = tool_config.build_runner(cfg, toolbox=toolbox)
    if args.out is not None:
        tool_config.attach_dump_metric(runner, toolbox=toolbox, out=args.out)
    try:
        with strict_loading(args.strict):
            runner.test()
    except CheckpointError as err:  # e.g. an unsafe or truncated checkpoint
        sys.exit(f'test.py: error: {err}')


if __name__ == '__main__':
    main()
    cpu_launch.close_distributed()  # after main() released the runner
