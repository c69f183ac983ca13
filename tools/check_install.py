"""Build vHeat-T as a backbone in each installed OpenMMLab toolbox and run it on an image.

Prints, per registry name, the feature shapes and the parameter count, and the classifier's.
Usage: python tools/check_install.py [--size H W]
"""
from __future__ import annotations

import argparse
import importlib

import numpy as np
import torch

import vheat_mm
from vheat_mm import VHeat


def synthetic_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A (1, 3, H, W) image of a few filled discs and boxes on a textured background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    img = 0.3 + 0.1 * np.sin(xx[None] / 7.0 + np.arange(3)[:, None, None]) * np.cos(yy / 11.0)
    for _ in range(4):
        color = rng.uniform(0.2, 1.0, size=(3, 1))
        cy, cx = rng.integers(0, height), rng.integers(0, width)
        r = rng.integers(min(height, width) // 10, min(height, width) // 4)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2 if rng.random() < 0.5 else \
            (abs(yy - cy) < r) & (abs(xx - cx) < r)
        img[:, mask] = color
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    img = (img - mean[:, None, None]) / std[:, None, None]
    return torch.from_numpy(img).float()[None]


def count(model: torch.nn.Module) -> str:
    return f'{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, nargs=2, default=(512, 640), metavar=('H', 'W'))
    args = parser.parse_args()
    image = synthetic_image(*args.size)
    print(f'vheat_mm {vheat_mm.__version__}: registered into {", ".join(vheat_mm.REGISTERED_INTO)}')
    print(f'input image {tuple(image.shape)}')

    official_tiny = dict(depths=(2, 2, 6, 2), dims=96, post_norm=False, img_size=512)
    builds = [('mmpretrain', 'vHeat', {}), ('mmdet', 'vHeat', {}), ('mmseg', 'vHeat', {}),
              ('mmdet', 'MMDET_VHEAT', official_tiny), ('mmseg', 'MMSEG_VHEAT', official_tiny)]
    for toolbox, name, kwargs in builds:
        if toolbox not in vheat_mm.REGISTERED_INTO:
            print(f'{toolbox}: not installed, skipped')
            continue
        registry = importlib.import_module(f'{toolbox}.registry').MODELS
        cfg = dict(type=name, **(kwargs or dict(arch='tiny', img_size=512)))
        backbone = registry.build(cfg).eval()
        with torch.no_grad():
            feats = backbone(image)
        shapes = ', '.join(str(tuple(f.shape)) for f in feats)
        print(f'{toolbox:10s} {name:12s} {count(backbone)}: {shapes}')

    classifier = VHeat('tiny').eval()
    with torch.no_grad():
        logits = classifier(image)
    print(f'classifier vHeat-T       {count(classifier)}: logits {tuple(logits.shape)}')


if __name__ == '__main__':
    main()
