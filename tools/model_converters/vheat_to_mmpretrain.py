"""Convert an official vHeat classification checkpoint for mmpretrain's ImageClassifier.

Usage: python tools/model_converters/vheat_to_mmpretrain.py SRC DST [--entry model_ema|model]

Reads SRC with weights_only=True (a path or http(s) URL; also a file the official training code
wrote, with its yacs config), takes its ``model_ema`` entry where present (the weights the
official release reports top-1 for) and otherwise ``model``, or the entry given by --entry,
maps ``classifier.0`` / ``classifier.3`` to ``backbone.outnorm3`` / ``head.fc`` and every
other key under ``backbone.``, and writes ``{'state_dict': ..., 'meta': ...}`` to DST atomically. The result loads into configs/classification/vheat-*_16xb128_in1k.py.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Mapping

from vheat_mm.checkpoint import (LAYOUTS, CheckpointError, is_url, official_to_mmpretrain,
                                 read_checkpoint, write_checkpoint)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=os.path.basename(__file__),
                                     description=__doc__.splitlines()[0])
    parser.add_argument('src', help='official checkpoint (path or URL)')
    parser.add_argument('dst', help='where to write the mmpretrain checkpoint')
    parser.add_argument('--entry', choices=LAYOUTS['official'].entries,
                        help="the state dict to convert (default: 'model_ema' where present, "
                             "else 'model')")
    args = parser.parse_args(argv)
    if not is_url(args.src) and os.path.exists(args.src) and os.path.exists(args.dst) \
            and os.path.samefile(args.src, args.dst):
        parser.error('dst is the same file as src; choose another path')
    try:
        checkpoint = read_checkpoint(args.src)
        entries = LAYOUTS['official'].entries
        present = [e for e in entries if isinstance(checkpoint.get(e), Mapping)]
        entry = args.entry or (present or [None])[0]
        if entry not in present:
            raise CheckpointError(
                f'{args.src} has no {args.entry or " or ".join(map(repr, entries))} entry, so it '
                f"is not an official vHeat checkpoint (expected {{'model': state_dict, ...}}, "
                f"and 'model_ema' with EMA); top-level keys found: "
                f'{sorted(map(str, checkpoint))}')
        state_dict = official_to_mmpretrain(checkpoint[entry])
        write_checkpoint(dict(state_dict=state_dict, meta=dict(converted_from=args.src,
                                                               entry=entry)), args.dst)
    except (CheckpointError, OSError) as err:
        print(f'{parser.prog}: error: {err}', file=sys.stderr)
        return 1
    print(f'wrote {len(state_dict)} tensors ({entry}) to {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
