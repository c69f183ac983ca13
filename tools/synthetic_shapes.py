"""Small synthetic datasets in the layouts the toolboxes read, for the demo and the tests.

A module beside the tools (it needs OpenCV, which the plain-PyTorch package does not):
``tools/shapes_demo.py`` imports it from its own folder, and the tests load it by its path.

"Shapes" images (after the well-known Mask R-CNN shapes example): squares, circles and
triangles of random colours and sizes on textured backgrounds, non-overlapping, so each instance
mask is the whole shape and its polygon is exact. Written as

* :func:`make_shapes_coco`: COCO instance segmentation (``annotations/instances_{split}.json``
  with polygons, ``{split}/*.png``), for mmdet's CocoDataset and CocoMetric;
* :func:`make_shapes_ade20k`: the ADE20K folder layout (``images/{training,validation}/*.jpg``,
  ``annotations/.../*.png``, label 0 = ignore, shapes 1..3, background 4) for mmseg;
* :func:`make_shapes_imagenet`: an ImageNet-style folder per class with ``meta/{split}.txt``,
  one shape per image, for mmpretrain.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

__all__ = ['SHAPE_CLASSES', 'make_shapes_coco', 'make_shapes_ade20k', 'make_shapes_imagenet',
           'draw_scene']

SHAPE_CLASSES = ('square', 'circle', 'triangle')


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured background: a colour gradient, stripes and smooth noise (uint8, HxWx3)."""
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    base = rng.uniform(40, 200, size=3)
    tilt = rng.uniform(-0.3, 0.3, size=(2, 3))
    img = base + yy[..., None] * tilt[0] + xx[..., None] * tilt[1]
    angle, period = rng.uniform(0, math.pi), rng.uniform(6, 20)
    stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
    img += stripes[..., None] * rng.uniform(5, 25, size=3)
    noise = cv2.resize(rng.normal(0, 20, size=(height // 8 + 1, width // 8 + 1, 3)).astype(
        np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _polygon(kind: str, cx: float, cy: float, size: float, angle: float) -> np.ndarray:
    """Vertices (N, 2) of a shape of circumradius ``size`` centred at (cx, cy)."""
    if kind == 'circle':
        t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
    else:
        n = 4 if kind == 'square' else 3
        t = angle + np.arange(n) * 2 * math.pi / n
    return np.stack([cx + size * np.cos(t), cy + size * np.sin(t)], axis=1)


def draw_scene(rng: np.random.Generator, height: int, width: int, max_shapes: int = 4,
               min_size: int = 12, max_size: int = 40) -> tuple[np.ndarray, list[dict]]:
    """An image (H, W, 3, uint8, BGR) and its instances: dicts with label, polygon, mask."""
    img = _background(rng, height, width)
    max_size = min(max_size, min(height, width) // 2 - 1)  # a shape must fit in the image
    min_size = min(min_size, max_size)
    instances: list[dict] = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        for _attempt in range(20):
            size = float(rng.uniform(min_size, max_size))
            cx = float(rng.uniform(size, width - size))
            cy = float(rng.uniform(size, height - size))
            if all(math.hypot(cx - o['center'][0], cy - o['center'][1]) > size + o['size'] + 2
                   for o in instances):
                break
        else:
            continue
        label = int(rng.integers(len(SHAPE_CLASSES)))
        poly = _polygon(SHAPE_CLASSES[label], cx, cy, size, float(rng.uniform(0, math.pi)))
        mask = np.zeros((height, width), np.uint8)
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
        color = rng.integers(0, 256, size=3)
        while np.abs(color.astype(float) - img[mask > 0].mean(0)).sum() < 150:
            color = rng.integers(0, 256, size=3)  # keep shapes visible on the background
        img[mask > 0] = color
        instances.append(dict(label=label, polygon=poly, mask=mask, center=(cx, cy), size=size))
    return img, instances


def make_shapes_coco(root: str | Path, *, num_train: int = 200, num_val: int = 50,
                     size: tuple[int, int] = (256, 256), seed: int = 0) -> Path:
    """Write a COCO instance-segmentation shapes dataset under ``root``; returns ``root``.

    Splits ``train`` and ``val``: images in ``root/{split}/``, annotations in
    ``root/annotations/instances_{split}.json`` (polygons, bbox, area; 3 categories).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(SHAPE_CLASSES)]
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    for split, count in (('train', num_train), ('val', num_val)):
        (root / split).mkdir(exist_ok=True)
        images, annotations = [], []
        for image_id in range(1, count + 1):
            img, instances = draw_scene(rng, *size)
            name = f'{split}_{image_id:05d}.png'
            cv2.imwrite(str(root / split / name), img)
            images.append(dict(id=image_id, file_name=name, height=size[0], width=size[1]))
            for inst in instances:
                x0, y0 = inst['polygon'].min(0)
                x1, y1 = inst['polygon'].max(0)
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=image_id,
                    category_id=inst['label'] + 1, iscrowd=0,
                    bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    area=float(inst['mask'].sum()),
                    segmentation=[inst['polygon'].round(2).reshape(-1).tolist()]))
        coco = dict(images=images, annotations=annotations, categories=categories)
        (root / 'annotations' / f'instances_{split}.json').write_text(json.dumps(coco))
    return root


def make_shapes_ade20k(root: str | Path, *, num_train: int = 8, num_val: int = 4,
                       size: tuple[int, int] = (128, 128), seed: int = 0) -> Path:
    """Write a semantic-segmentation shapes dataset in the ADE20K folder layout.

    Label maps follow ADE20K's convention (``reduce_zero_label=True``): 0 is ignored, shape
    classes are 1..3 and the background is 4, so the model sees 4 classes.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (('training', num_train), ('validation', num_val)):
        (root / 'images' / split).mkdir(parents=True, exist_ok=True)
        (root / 'annotations' / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img, instances = draw_scene(rng, *size)
            label = np.full(size, len(SHAPE_CLASSES) + 1, np.uint8)
            for inst in instances:
                label[inst['mask'] > 0] = inst['label'] + 1
            name = f'ADE_{split}_{i:08d}'
            cv2.imwrite(str(root / 'images' / split / f'{name}.jpg'), img)
            cv2.imwrite(str(root / 'annotations' / split / f'{name}.png'), label)
    return root


def make_shapes_imagenet(root: str | Path, *, num_train: int = 8, num_val: int = 4,
                         size: tuple[int, int] = (64, 64), seed: int = 0) -> Path:
    """Write a classification dataset in the ImageNet layout: ``{split}/{class}/*.png`` and
    ``meta/{split}.txt`` ('class/file label' per line), one shape per image, per class."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / 'meta').mkdir(parents=True, exist_ok=True)
    for split, per_class in (('train', num_train), ('val', num_val)):
        lines = []
        for label, name in enumerate(SHAPE_CLASSES):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = _background(rng, *size)
                poly = _polygon(name, size[1] / 2, size[0] / 2, min(size) * 0.35,
                                float(rng.uniform(0, math.pi)))
                cv2.fillPoly(img, [np.round(poly).astype(np.int32)],
                             tuple(int(c) for c in rng.integers(0, 256, size=3)))
                cv2.imwrite(str(root / split / name / f'{i:05d}.png'), img)
                lines.append(f'{name}/{i:05d}.png {label}')
        (root / 'meta' / f'{split}.txt').write_text('\n'.join(lines) + '\n')
    return root
