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

The demo's pipeline derives its classification and segmentation data from its COCO dataset, so
that the three tasks see the same images: :func:`make_crops_from_coco` (the ImageNet layout:
a crop around each shape, and crops of background) and :func:`make_semantic_from_coco` (the
ADE20K layout: the same images and their label maps).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

__all__ = ['CROP_CLASSES', 'SEGMENT_CLASSES', 'SHAPE_CLASSES', 'draw_scene',
           'make_crops_from_coco', 'make_semantic_from_coco', 'make_shapes_ade20k',
           'make_shapes_coco', 'make_shapes_imagenet']

SHAPE_CLASSES = ('square', 'circle', 'triangle')
# the classes of the derived datasets: the shapes, then the background
CROP_CLASSES = SEGMENT_CLASSES = (*SHAPE_CLASSES, 'background')


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


def _coco_split(coco_root: Path, split: str) -> tuple[list[dict], dict[int, list[dict]]]:
    """The images of ``split`` of :func:`make_shapes_coco`'s dataset, and their annotations."""
    coco = json.loads((coco_root / 'annotations' / f'instances_{split}.json').read_text())
    by_image: dict[int, list[dict]] = {image['id']: [] for image in coco['images']}
    for annotation in coco['annotations']:
        by_image[annotation['image_id']].append(annotation)
    return coco['images'], by_image


def _label_map(image: dict, annotations: list[dict], background: int) -> np.ndarray:
    """An image's label map: each shape's category id (1..3) on ``background``."""
    label = np.full((image['height'], image['width']), background, np.uint8)
    for annotation in annotations:
        polygon = np.asarray(annotation['segmentation'][0]).reshape(-1, 2)
        cv2.fillPoly(label, [np.round(polygon).astype(np.int32)], annotation['category_id'])
    return label


def make_crops_from_coco(coco_root: str | Path, root: str | Path, *, size: int = 64,
                         seed: int = 0) -> Path:
    """Write a classification dataset in the ImageNet layout (``{split}/{class}/*.png`` and
    ``meta/{split}.txt``) of :data:`CROP_CLASSES` under ``root``, from the images of
    :func:`make_shapes_coco`'s dataset at ``coco_root``: a square crop around each shape (1.2 to
    1.6 times its box, its centre moved by up to a tenth of it), and one crop of background per
    image, resized to ``size``; returns ``root``."""
    coco_root, root = Path(coco_root), Path(root)
    rng = np.random.default_rng(seed)
    background = len(SHAPE_CLASSES)
    (root / 'meta').mkdir(parents=True, exist_ok=True)
    for split in ('train', 'val'):
        for name in CROP_CLASSES:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        lines = []
        images, by_image = _coco_split(coco_root, split)
        for image in images:
            img = cv2.imread(str(coco_root / split / image['file_name']))
            height, width = img.shape[:2]
            padded = cv2.copyMakeBorder(img, height, height, width, width, cv2.BORDER_REFLECT)
            crops = []
            for annotation in by_image[image['id']]:
                x, y, w, h = annotation['bbox']
                side = max(w, h) * float(rng.uniform(1.2, 1.6))
                cx = x + w / 2 + float(rng.uniform(-0.1, 0.1)) * side
                cy = y + h / 2 + float(rng.uniform(-0.1, 0.1)) * side
                crops.append((annotation['category_id'] - 1, cx, cy, side))
            label = _label_map(image, by_image[image['id']], 0)
            for _attempt in range(20):  # a square of background that no shape reaches
                side = float(rng.uniform(16, min(height, width) / 2))
                cx = float(rng.uniform(side / 2, width - side / 2))
                cy = float(rng.uniform(side / 2, height - side / 2))
                x0, y0 = int(cx - side / 2), int(cy - side / 2)
                if not label[y0:y0 + int(side) + 1, x0:x0 + int(side) + 1].any():
                    crops.append((background, cx, cy, side))
                    break
            for index, (class_index, cx, cy, side) in enumerate(crops):
                x0, y0 = int(round(cx - side / 2)) + width, int(round(cy - side / 2)) + height
                crop = padded[y0:y0 + int(round(side)), x0:x0 + int(round(side))]
                crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
                name = f'{CROP_CLASSES[class_index]}/{Path(image["file_name"]).stem}_{index}.png'
                cv2.imwrite(str(root / split / name), crop)
                lines.append(f'{name} {class_index}')
        (root / 'meta' / f'{split}.txt').write_text('\n'.join(lines) + '\n')
    return root


def make_semantic_from_coco(coco_root: str | Path, root: str | Path) -> Path:
    """Write a semantic-segmentation dataset in the ADE20K layout under ``root`` from the images
    of :func:`make_shapes_coco`'s dataset at ``coco_root`` (``train`` -> ``training``, ``val`` ->
    ``validation``; the images as JPEG, as ADE20K's). Label maps follow ADE20K's convention
    (``reduce_zero_label=True``): the shapes are 1..3 and the background 4, so that the model
    sees :data:`SEGMENT_CLASSES`; returns ``root``."""
    coco_root, root = Path(coco_root), Path(root)
    for split, folder in (('train', 'training'), ('val', 'validation')):
        (root / 'images' / folder).mkdir(parents=True, exist_ok=True)
        (root / 'annotations' / folder).mkdir(parents=True, exist_ok=True)
        images, by_image = _coco_split(coco_root, split)
        for image in images:
            stem = Path(image['file_name']).stem
            img = cv2.imread(str(coco_root / split / image['file_name']))
            cv2.imwrite(str(root / 'images' / folder / f'{stem}.jpg'), img,
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(str(root / 'annotations' / folder / f'{stem}.png'),
                        _label_map(image, by_image[image['id']], len(SHAPE_CLASSES) + 1))
    return root
