"""Build vHeat-T as a backbone in each installed OpenMMLab toolbox and run it on an image.

Prints, per registry name, the feature shapes and the parameter count, and the classifier's.
It first checks mmcv's compiled ops (RoIAlign and NMS, which Mask R-CNN needs): they must run on
the CPU, and where a GPU is visible mmcv must have CUDA kernels, which then run on the GPU and
agree with the CPU. It exits with status 1, saying why, when they do not.
Usage: python tools/check_install.py [--size H W]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

import vheat_mm.mm
from vheat_mm import VHeat
from vheat_mm.mm.toolbox import TOOLBOX_PROFILES, is_installed, registry


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


def run_mmcv_ops(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """mmcv's nms and roi_align on a fixed small problem, on ``device`` (results on the CPU)."""
    from mmcv.ops import nms, roi_align
    generator = torch.Generator().manual_seed(0)
    corner = torch.rand(32, 2, generator=generator) * 48
    boxes = torch.cat([corner, corner + 8 + torch.rand(32, 2, generator=generator) * 16], 1)
    scores = torch.rand(32, generator=generator)
    features = torch.rand(1, 4, 64, 64, generator=generator)
    rois = torch.cat([torch.zeros(32, 1), boxes], 1)
    kept = nms(boxes.to(device), scores.to(device), 0.5)[1]
    pooled = roi_align(features.to(device), rois.to(device), (7, 7), 1.0, 2)
    return kept.cpu(), pooled.cpu()


def check_mmcv_ops() -> str | None:
    """Print what mmcv's compiled ops support; return why they are not fit, or None."""
    try:
        import mmcv
        from mmcv.ops import get_compiling_cuda_version
    except ImportError as err:
        return f'mmcv with compiled ops is not installed ({err}); run tools/setup_env.sh'
    cuda = get_compiling_cuda_version()
    with_cuda = cuda not in ('', 'not available')
    print(f'mmcv {mmcv.__version__}: compiled ops for the CPU'
          + (f' and CUDA {cuda}' if with_cuda else ' only (no CUDA kernels)'))
    reference = run_mmcv_ops('cpu')
    if not torch.cuda.is_available():
        print('no GPU visible: the CUDA kernels are not checked')
        return None
    if not with_cuda:
        return (f'a GPU is visible ({torch.cuda.get_device_name()}) but mmcv was built without '
                f'CUDA ops: RoIAlign and NMS would fail on CUDA tensors. Rebuild it where nvcc '
                f'is on PATH (tools/setup_env.sh builds it with FORCE_CUDA=1)')
    kept, pooled = run_mmcv_ops('cuda')
    if not torch.equal(kept, reference[0]) or not torch.allclose(pooled, reference[1], atol=1e-5):
        return 'mmcv\'s nms / roi_align give other results on the GPU than on the CPU'
    print(f'mmcv CUDA ops: nms and roi_align ran on {torch.cuda.get_device_name()} and agree '
          f'with the CPU')
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, nargs=2, default=(512, 640), metavar=('H', 'W'))
    args = parser.parse_args(argv)
    problem = check_mmcv_ops()
    if problem:
        print(f'error: {problem}', file=sys.stderr)
        return 1
    image = synthetic_image(*args.size)
    registered = '; '.join(f'{name}: {", ".join(names)}'
                           for name, names in vheat_mm.mm.REGISTERED.items())
    print(f"vheat_mm {vheat_mm.__version__}: in mmengine's root registries ({registered})")
    print(f'input image {tuple(image.shape)}')

    official_tiny = dict(depths=(2, 2, 6, 2), dims=96, post_norm=False, img_size=512)
    for toolbox, profile in TOOLBOX_PROFILES.items():
        if not is_installed(toolbox):
            print(f'{toolbox}: not installed, skipped')
            continue
        builds = [('vHeat', dict(arch='tiny', img_size=512))]
        if profile.official is not None:
            builds.append((profile.official.name, official_tiny))
        for name, kwargs in builds:
            backbone = registry(toolbox).MODELS.build(dict(type=name, **kwargs)).eval()
            with torch.no_grad():
                feats = backbone(image)
            shapes = ', '.join(str(tuple(f.shape)) for f in feats)
            print(f'{toolbox:10s} {name:12s} {count(backbone)}: {shapes}')

    classifier = VHeat('tiny').eval()
    with torch.no_grad():
        logits = classifier(image)
    print(f'classifier vHeat-T       {count(classifier)}: logits {tuple(logits.shape)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
