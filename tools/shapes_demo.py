"""The main job: Mask R-CNN with vHeat-T trained from scratch on generated "shapes" data.

Generates the COCO-format dataset (if absent), trains with ``tools/train.py`` on the CPU, tests
with ``tools/test.py`` (mmdet's CocoMetric, box and mask mAP) and saves a picture of
predictions beside the ground truth. Prints how the losses fell and the mAPs.

Usage: python tools/shapes_demo.py [--data-root data/shapes] [--work-dir work_dirs/shapes_demo]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / 'configs/demo/mask-rcnn_vheat-t_fpn_shapes.py'
IMAGE_SIZE = (128, 128)  # as image_size in CONFIG


def run(cmd: list[str]) -> None:
    print('$', ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def data_options(data_root: Path) -> list[str]:
    """--cfg-options pointing the demo config at ``data_root``."""
    root = f'{data_root}/'
    ann = f'{root}annotations/instances_val.json'
    return [f'train_dataloader.dataset.data_root={root}',
            f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}', f'val_evaluator.ann_file={ann}',
            f'test_evaluator.ann_file={ann}']


def read_scalars(run_dir: Path) -> list[dict]:
    """The records mmengine logged to ``run_dir/vis_data/scalars.json`` (one JSON object a line);
    ``run_dir`` is one run's (timestamp) directory in the work directory."""
    path = run_dir / 'vis_data' / 'scalars.json'
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_test_metrics(test_dir: Path) -> dict:
    """The metrics tools/test.py logged to ``test_dir/<timestamp>/<timestamp>.json`` (last run)."""
    paths = sorted(test_dir.glob('*/*.json'))
    if not paths:
        raise FileNotFoundError(f'no test metrics under {test_dir}')
    return json.loads(paths[-1].read_text().splitlines()[-1])


def save_predictions(checkpoint: Path, data_root: Path, out_path: Path, num_images: int = 4,
                     score_thr: float = 0.3) -> None:
    """Validation images drawn by mmdet's ``DetLocalVisualizer``: each row the ground truth
    (left) and the predictions above ``score_thr`` (right)."""
    import torch
    from mmdet.apis import inference_detector, init_detector
    from mmdet.visualization import DetLocalVisualizer
    from mmengine.structures import InstanceData
    from pycocotools.coco import COCO

    from vheat_mm.mm.toolbox import built_without_weights, load_inference_weights

    with built_without_weights(str(checkpoint)):  # read by VHeatRunner's reader instead
        model = init_detector(str(CONFIG), None, device='cpu')
    model.dataset_meta = load_inference_weights(model, str(checkpoint))
    visualizer = DetLocalVisualizer(name=f'shapes_demo_{out_path.stem}')
    visualizer.dataset_meta = model.dataset_meta
    coco = COCO(str(data_root / 'annotations/instances_val.json'))
    rows = []
    for image_id in coco.getImgIds()[:num_images]:
        info = coco.loadImgs(image_id)[0]
        image = cv2.imread(str(data_root / 'val' / info['file_name']))
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        sample = inference_detector(model, image.copy())
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                                  a['bbox'][1] + a['bbox'][3]] for a in anns]).reshape(-1, 4),
            labels=torch.tensor([a['category_id'] - 1 for a in anns], dtype=torch.long),
            masks=torch.from_numpy(np.stack([coco.annToMask(a) for a in anns]).astype(bool))
            if anns else torch.zeros(0, *image.shape[:2], dtype=torch.bool))
        visualizer.add_datasample(info['file_name'], image[..., ::-1].copy(), sample,
                                  draw_gt=True, draw_pred=True, show=False,
                                  pred_score_thr=score_thr)
        rows.append(visualizer.get_image())
    grid = cv2.resize(np.vstack(rows), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(out_path), grid[..., ::-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', type=Path, default=ROOT / 'data/shapes')
    parser.add_argument('--work-dir', type=Path, default=ROOT / 'work_dirs/shapes_demo')
    parser.add_argument('--num-train', type=int, default=400)
    parser.add_argument('--num-val', type=int, default=50)
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='more overrides for the demo config, passed to train.py and test.py')
    args = parser.parse_args()
    start = time.time()

    from synthetic_shapes import make_shapes_coco  # beside this file
    if not (args.data_root / 'annotations/instances_val.json').exists():
        make_shapes_coco(args.data_root, num_train=args.num_train, num_val=args.num_val,
                         size=IMAGE_SIZE)
        print(f'generated {args.num_train} + {args.num_val} shapes images in {args.data_root}')

    python = sys.executable
    options = data_options(args.data_root.resolve()) + args.cfg_options
    run([python, 'tools/train.py', str(CONFIG), '--work-dir', str(args.work_dir),
         '--cfg-options', *options])
    checkpoint = Path((args.work_dir / 'last_checkpoint').read_text().strip())
    test_dir = args.work_dir / 'test'
    run([python, 'tools/test.py', str(CONFIG), str(checkpoint), '--work-dir', str(test_dir),
         '--cfg-options', *options])

    runs = sorted(path.parents[1] for path in args.work_dir.glob('*/vis_data/scalars.json'))
    losses = [r for run_dir in runs for r in read_scalars(run_dir) if 'loss' in r]
    metrics = read_test_metrics(test_dir)
    picture = args.work_dir / 'predictions.png'
    save_predictions(checkpoint, args.data_root, picture)

    first, last = losses[0], losses[-1]
    print('\n=== vHeat-T Mask R-CNN on generated shapes (CPU) ===')
    for key in ('loss', 'loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'):
        print(f'{key:13s} {first[key]:.3f} (iter {first["step"]}) -> {last[key]:.3f} '
              f'(iter {last["step"]})')
    print(f'box mAP  {metrics["coco/bbox_mAP"]:.3f}   (AP50 {metrics["coco/bbox_mAP_50"]:.3f})')
    print(f'mask mAP {metrics["coco/segm_mAP"]:.3f}   (AP50 {metrics["coco/segm_mAP_50"]:.3f})')
    print(f'predictions beside ground truth: {picture}')
    print(f'total time {(time.time() - start) / 60:.1f} min')
    learned = last['loss'] < first['loss'] and metrics['coco/bbox_mAP'] > 0.05
    print('learning shown' if learned else 'NO LEARNING SHOWN')
    return 0 if learned else 1


if __name__ == '__main__':
    sys.exit(main())
