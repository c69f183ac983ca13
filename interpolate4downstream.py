"""Enlarge the freq_embed of a vHeat classification checkpoint for a downstream resolution.

The official command line::

    python interpolate4downstream.py --pt_pth vHeat_tiny.pth --pt_size 224 \\
        --tg_pth vHeat_tiny_512.pth --tg_size 512 [--mode pad|bicubic]

By default (``--mode pad``) each freq_embed is zero-padded at the bottom and right, exactly as the
official tool does; ``--mode bicubic`` resizes it as the backbone does when loading. Entries
``model``, ``model_ema`` (official) and ``state_dict`` (mmengine, keys with or without
``backbone.``) are converted, everything else is kept. The conversion itself is
:func:`vheat_mm.checkpoint.convert_freq_embeds`.
"""
from __future__ import annotations

import argparse
import os
import sys

from vheat_mm.checkpoint import (CONVERSION_MODES, CheckpointError, check_downstream_sizes,
                                 convert_freq_embeds, find_freq_embeds, read_checkpoint,
                                 write_checkpoint)
from vheat_mm.checkpoint.messages import shown_path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Interpolate a pretrained vHeat checkpoint for downstream tasks.')
    parser.add_argument('--pt_pth', required=True, help='path to the pretrained checkpoint')
    parser.add_argument('--pt_size', type=int, default=224,
                        help='image size the checkpoint was trained at (default 224)')
    parser.add_argument('--tg_pth', required=True, help='path to save the converted checkpoint')
    parser.add_argument('--tg_size', type=int, default=512,
                        help='downstream image size (default 512)')
    parser.add_argument('--mode', choices=CONVERSION_MODES, default='pad',
                        help='pad: zero-pad bottom/right as the official tool (default); '
                             'bicubic: resize as the backbone does at load time')
    return parser.parse_args(argv)


def same_file(first: str, second: str) -> bool:
    """Whether two paths name one file (after resolving links, or the same inode)."""
    if os.path.realpath(first) == os.path.realpath(second):
        return True
    return os.path.exists(second) and os.path.exists(first) and os.path.samefile(first, second)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        check_downstream_sizes(args.pt_size, args.tg_size)
        if same_file(args.pt_pth, args.tg_pth):
            raise ValueError(f'--tg_pth {args.tg_pth} is the input checkpoint itself; refusing '
                             f'to write over it, choose another path')
        checkpoint = read_checkpoint(args.pt_pth)
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        sys.exit(f'interpolate4downstream.py: error: {err}')
    try:
        converted = convert_freq_embeds(checkpoint, pt_size=args.pt_size, tg_size=args.tg_size,
                                        mode=args.mode)
    except (CheckpointError, ValueError) as err:  # named after the file it comes from
        sys.exit(f'interpolate4downstream.py: error: {shown_path(args.pt_pth)}: {err}')
    for entry, key, stage in find_freq_embeds(checkpoint):
        print(f'Layer {stage} ({entry}: {key}):')
        print('Shape before interpolation:', checkpoint[entry][key].shape)
        print(f'Shape after interpolation ({args.mode}):', converted[entry][key].shape)
    try:
        write_checkpoint(converted, args.tg_pth)
    except OSError as err:
        sys.exit(f'interpolate4downstream.py: error: cannot write {args.tg_pth}: {err}')
    print(f'Finished! Saved to {args.tg_pth}.')


if __name__ == '__main__':
    main()
