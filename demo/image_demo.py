"""Run a vheat_mm config on an image through its toolbox's own inferencer and save the picture.

    python demo/image_demo.py IMAGE CONFIG [--weights CKPT] [--out-dir DIR] [--device cpu|cuda]

The config's ``default_scope`` picks the inferencer (its toolbox profile's ``infer_image``):
mmdet's ``DetInferencer`` (boxes and masks), mmseg's ``MMSegInferencer`` (a segmentation
overlay) or mmpretrain's ``ImageClassificationInferencer`` (the top classes written on the
image). Each draws with its toolbox's visualizer; the picture goes to ``DIR/vis/``, and the
result is printed. IMAGE is a file, or ``skimage:NAME`` for one of the photographs
scikit-image bundles (``astronaut``, ``chelsea``, ``coffee``, ``rocket``, ...). Without
``--weights`` the model is randomly initialised (nothing is downloaded): the picture then
shows the pipeline, not a prediction.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from mmengine.config import Config
from mmengine.registry import DefaultScope

import vheat_mm.mm  # noqa: F401  (registers vHeat; the configs import vheat_mm too)
from vheat_mm.checkpoint import CheckpointError
from vheat_mm.mm.toolbox import TOOLBOX_PROFILES, TOOLBOXES


def resolve_image(image: str, work_dir: Path) -> str:
    """A file path for IMAGE; ``skimage:NAME`` is written out as a PNG first."""
    if not image.startswith('skimage:'):
        if not Path(image).is_file():
            raise SystemExit(f'error: no image file {image}')
        return image
    import numpy as np
    import skimage.data
    import skimage.io
    name = image.split(':', 1)[1]
    if not hasattr(skimage.data, name):
        raise SystemExit(f'error: scikit-image bundles no photograph {name!r}')
    pixels = np.asarray(getattr(skimage.data, name)())
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    path = work_dir / f'{name}.png'
    skimage.io.imsave(path, pixels[..., :3], check_contrast=False)
    return str(path)


def infer(image: str, config: str, *, weights: str | None, out_dir: str, device: str) -> dict:
    """Run the toolbox's inferencer; returns its result (the picture is in ``out_dir/vis``)."""
    scope = Config.fromfile(config).get('default_scope')
    if scope in TOOLBOX_PROFILES:
        # built in the config's scope whatever scope is current (mmpretrain's inferencer builds
        # its transforms in the current one)
        with DefaultScope.overwrite_default_scope(scope):
            return TOOLBOX_PROFILES[scope].infer_image(config, image, weights=weights,
                                                       out_dir=out_dir, device=device)
    raise SystemExit(f'error: {config} has default_scope={scope!r}; image_demo serves '
                     f'{", ".join(TOOLBOXES)}')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('image', help='an image file, or skimage:NAME')
    parser.add_argument('config')
    parser.add_argument('--weights', help='a checkpoint (default: random initialisation)')
    parser.add_argument('--out-dir', default='outputs')
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        image = resolve_image(args.image, Path(tmp))
        try:
            result = infer(image, args.config, weights=args.weights, out_dir=args.out_dir,
                           device=args.device)
        except CheckpointError as err:  # an unsafe, damaged or badly fitting --weights
            sys.exit(f'image_demo.py: error: {err}')
    keys = sorted(result) if isinstance(result, dict) else type(result).__name__
    print(f'{args.config} on {args.image}: result with {keys}; picture in {args.out_dir}/vis')
    return 0


if __name__ == '__main__':
    sys.exit(main())
