"""The paper's pipeline in miniature, on the CPU, on generated "shapes" data.

Each step runs through the tool a user runs, with its own config in ``configs/demo/`` and its
own work directory under ``--work-dir`` (emptied before the step, so nothing of an earlier run
is taken for this one's):

1. classification pretraining of vHeat-T (``tools/train.py``, the ImageNet recipe) on 64x64
   crops of the shapes and of their background;
2. ``interpolate4downstream.py``: the classifier becomes the downstream start (freq_embed
   zero-padded from 64 to 128, as the paper's detection and segmentation configs expect);
3. Mask R-CNN from that start, trained with ``tools/dist_train.sh CONFIG 2`` (two CPU
   processes) and tested with ``tools/dist_test.sh`` (CocoMetric);
4. UperNet from the same start on the semantic masks of the same images, trained likewise and
   tested with ``tools/dist_test.sh``, without and with ``--tta``.

Then it draws the detections and the segmentation beside their ground truth and the three
trainings' losses, and prints a table of the steps (command, time, figure). The data
(``--data-root``, COCO instances, and the crops and label maps derived from them) is generated
once and reused. It exits non-zero, naming the step, when a step fails or a figure is below its
bar (:data:`BARS`). ``--quick`` runs every step for a few iterations on a few images, with no
bar: the pipeline's check in the test suite.

Usage: python tools/shapes_demo.py [--data-root data/shapes] [--work-dir work_dirs/shapes_demo]
                                   [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs/demo'
PRETRAIN = CONFIGS / 'vheat-t_shapes-cls.py'
CONFIG = CONFIGS / 'mask-rcnn_vheat-t_fpn_shapes.py'  # the detector, as the tests name it
UPERNET = CONFIGS / 'upernet_vheat-t_shapes.py'
IMAGE_SIZE = (128, 128)  # as image_size in CONFIG
CROP_SIZE = 64  # as image_size in PRETRAIN
PROCESSES = 2  # of dist_train.sh and dist_test.sh
# The bars a full run must pass: (metric, at least, what it is).
BARS = (('coco/bbox_mAP', 0.35, 'box mAP'),
        *((f'coco/{name}_precision', 0.2, f'box AP of {name}')
          for name in ('square', 'circle', 'triangle')))


class StepFailed(Exception):
    """A step's command failed or its figure is below its bar; the message names the step."""


class Step:
    """One step of the pipeline as the summary shows it: its commands (up to their options),
    the seconds they took and the figure it gave."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.commands: list[str] = []
        self.seconds = 0.0
        self.figure = ''


def _shown(arg: str, short: bool = False) -> str:
    """A command's argument as printed: a path in the repository relative to it; with
    ``short``, any other absolute path by its name."""
    if arg.startswith(f'{ROOT}{os.sep}'):
        return os.path.relpath(arg, ROOT)
    return os.path.basename(arg) if short and os.path.isabs(arg) else arg


def run(step: Step, cmd: list[str | Path]) -> None:
    """Run ``cmd`` in the repository root (its output shown as it comes) as part of ``step``;
    the summary keeps it up to its ``--cfg-options``."""
    cmd = [str(c) for c in cmd]
    shown = ' '.join(map(_shown, cmd))
    cut = cmd.index('--cfg-options') if '--cfg-options' in cmd else len(cmd)
    step.commands.append(' '.join(_shown(c, short=True) for c in cmd[:cut])
                         + (' ...' if cut < len(cmd) else ''))
    print(f'\n[{step.name}] $ {shown}', flush=True)
    start = time.time()
    done = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    step.seconds += time.time() - start
    if done.returncode:
        raise StepFailed(f'step "{step.name}" failed: `{shown}` exited with {done.returncode}')


def fresh(work_dir: Path) -> Path:
    """``work_dir``, emptied: a step never reads what an earlier run left."""
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    return work_dir


def data_options(data_root: Path) -> list[str]:
    """--cfg-options pointing the detection config at ``data_root`` (its COCO dataset)."""
    root = f'{data_root}/'
    ann = f'{root}annotations/instances_val.json'
    return [f'train_dataloader.dataset.data_root={root}',
            f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}', f'val_evaluator.ann_file={ann}',
            f'test_evaluator.ann_file={ann}']


def derived_options(root: Path) -> list[str]:
    """--cfg-options pointing the classification or segmentation config at ``root``."""
    return [f'{split}_dataloader.dataset.data_root={root}/' for split in ('train', 'val', 'test')]


def read_scalars(run_dir: Path) -> list[dict]:
    """The records mmengine logged to ``run_dir/vis_data/scalars.json`` (one JSON object a line);
    ``run_dir`` is one run's (timestamp) directory in the work directory."""
    path = run_dir / 'vis_data' / 'scalars.json'
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_records(work_dir: Path) -> list[dict]:
    """The records of the one training run in ``work_dir``."""
    runs = sorted(path.parents[1] for path in work_dir.glob('*/vis_data/scalars.json'))
    if len(runs) != 1:
        raise StepFailed(f'{work_dir} should hold one run\'s logs, found {len(runs)}')
    return read_scalars(runs[0])


def read_test_metrics(test_dir: Path) -> dict:
    """The metrics tools/test.py logged to ``test_dir/<timestamp>/<timestamp>.json`` (last run)."""
    (path,) = sorted(test_dir.glob('*/*.json'))[-1:]
    return json.loads(path.read_text())


def last_checkpoint(work_dir: Path) -> Path:
    return Path((work_dir / 'last_checkpoint').read_text().strip())


# ----------------------------------------------------------------------------- data
def image_counts(data_root: Path) -> tuple[int, int] | None:
    """The train and val images of the COCO dataset at ``data_root``; None where it has none."""
    try:
        return tuple(len(json.loads((data_root / f'annotations/instances_{split}.json')
                                    .read_text())['images']) for split in ('train', 'val'))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def make_data(data_root: Path, num_train: int, num_val: int) -> None:
    """Generate the COCO dataset and the crops and label maps derived from it, where absent.

    A dataset of other image counts than asked for (an earlier run's) is generated again, with
    a line saying so; one of those counts is reused, with a line saying so."""
    import synthetic_shapes  # beside this file

    counts = image_counts(data_root)
    if counts == (num_train, num_val):
        print(f'reusing the {num_train} + {num_val} shapes images in {data_root} and the data '
              f'derived from them')
    elif counts is not None:
        print(f'{data_root} holds {counts[0]} + {counts[1]} shapes images, not the {num_train} + '
              f'{num_val} asked for: generating them again')
        for name in ('train', 'val', 'annotations', 'classification', 'segmentation'):
            shutil.rmtree(data_root / name, ignore_errors=True)
    if not (data_root / 'annotations/instances_val.json').exists():
        synthetic_shapes.make_shapes_coco(data_root, num_train=num_train, num_val=num_val,
                                          size=IMAGE_SIZE)
        print(f'generated {num_train} + {num_val} shapes images in {data_root}')
    if not (data_root / 'classification/meta/val.txt').exists():
        synthetic_shapes.make_crops_from_coco(data_root, data_root / 'classification',
                                              size=CROP_SIZE)
        print(f'cut crops of the shapes and their background into {data_root}/classification')
    if not (data_root / 'segmentation/annotations/validation').exists():
        synthetic_shapes.make_semantic_from_coco(data_root, data_root / 'segmentation')
        print(f'wrote label maps of the images into {data_root}/segmentation')


# ----------------------------------------------------------------------------- steps
def pretrain(step: Step, data_root: Path, work_dir: Path, quick: list[str]) -> Path:
    """Step 1; returns the checkpoint that scored the best top-1, raw or EMA."""
    python = sys.executable
    run(step, [python, 'tools/train.py', PRETRAIN, '--work-dir', work_dir, '--cfg-options',
               *derived_options(data_root / 'classification'), *quick])
    records = train_records(work_dir)
    best = {}
    for key, prefix in (('accuracy/top1', 'best_accuracy_top1'),
                        ('ema/accuracy/top1', 'best_ema_accuracy_top1')):
        scores = [r[key] for r in records if key in r]
        files = sorted(work_dir.glob(f'{prefix}_*.pth'))
        if scores and files:
            best[key] = (max(scores), files[-1])
    if not best:
        raise StepFailed(f'step "{step.name}": no validated checkpoint in {work_dir}')
    key, (top1, checkpoint) = max(best.items(), key=lambda item: item[1][0])
    raw, ema = (best.get(k, (float('nan'),))[0] for k in ('accuracy/top1', 'ema/accuracy/top1'))
    step.figure = f'top-1 {raw:.1f}% (raw), {ema:.1f}% (EMA); {checkpoint.name} goes on'
    return checkpoint


def interpolate(step: Step, checkpoint: Path, work_dir: Path) -> Path:
    """Step 2; returns the downstream start."""
    target = work_dir / f'vheat-t_shapes-{IMAGE_SIZE[0]}.pth'
    run(step, [sys.executable, 'interpolate4downstream.py', '--pt_pth', checkpoint,
               '--pt_size', CROP_SIZE, '--tg_pth', target, '--tg_size', IMAGE_SIZE[0]])
    step.figure = f'freq_embed {CROP_SIZE} -> {IMAGE_SIZE[0]} (zero-padded): {target.name}'
    return target


def mask_rcnn(step: Step, data_root: Path, start: Path, work_dir: Path,
              quick: list[str]) -> dict:
    """Step 3; returns the test metrics."""
    options = [*data_options(data_root.resolve()), f'model.backbone.init_cfg.checkpoint={start}',
               *quick]
    run(step, ['bash', 'tools/dist_train.sh', CONFIG, PROCESSES, '--work-dir', work_dir,
               '--cfg-options', *options])
    run(step, ['bash', 'tools/dist_test.sh', CONFIG, last_checkpoint(work_dir), PROCESSES,
               '--work-dir', work_dir / 'test', '--cfg-options', *options])
    metrics = read_test_metrics(work_dir / 'test')
    classes = ', '.join(f'{name} {metrics[f"coco/{name}_precision"]:.3f}'
                        for name in ('square', 'circle', 'triangle'))
    step.figure = (f'box mAP {metrics["coco/bbox_mAP"]:.3f} ({classes}), '
                   f'mask mAP {metrics["coco/segm_mAP"]:.3f}')
    return metrics


def upernet(step: Step, data_root: Path, start: Path, work_dir: Path, quick: list[str]) -> dict:
    """Step 4; returns the test metrics, single-scale and with TTA."""
    options = [*derived_options((data_root / 'segmentation').resolve()),
               f'model.backbone.init_cfg.checkpoint={start}', *quick]
    run(step, ['bash', 'tools/dist_train.sh', UPERNET, PROCESSES, '--work-dir', work_dir,
               '--cfg-options', *options])
    checkpoint = last_checkpoint(work_dir)
    metrics = {}
    for name, extra in (('single-scale', []), ('TTA', ['--tta'])):
        test_dir = work_dir / f'test_{"tta" if extra else "single"}'
        run(step, ['bash', 'tools/dist_test.sh', UPERNET, checkpoint, PROCESSES,
                   '--work-dir', test_dir, *extra, '--cfg-options', *options])
        metrics[name] = read_test_metrics(test_dir)
    step.figure = ', '.join(f'mIoU {m["mIoU"]:.1f} ({name})' for name, m in metrics.items())
    return metrics


# ----------------------------------------------------------------------------- pictures
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
        model = init_detector(str(CONFIG), None, device='cpu',
                              cfg_options={'model.backbone.init_cfg': None})
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


def save_segmentation(checkpoint: Path, data_root: Path, out_path: Path,
                      num_images: int = 4) -> None:
    """Validation images, each row the image, its ground truth and UperNet's prediction, in the
    config's palette."""
    from mmseg.apis import inference_model, init_model

    from vheat_mm.mm.toolbox import built_without_weights, load_inference_weights

    with built_without_weights(str(checkpoint)):
        model = init_model(str(UPERNET), None, device='cpu',
                           cfg_options={'model.backbone.init_cfg': None})
    load_inference_weights(model, str(checkpoint))
    palette = np.array(model.cfg.metainfo['palette'], np.uint8)[:, ::-1]  # BGR
    folder = data_root / 'segmentation'
    rows = []
    for path in sorted((folder / 'images/validation').glob('*.jpg'))[:num_images]:
        image = cv2.imread(str(path))
        truth = cv2.imread(str(folder / 'annotations/validation' / f'{path.stem}.png'), 0)
        predicted = inference_model(model, image).pred_sem_seg.data[0].numpy()
        truth_colors = np.where((truth > 0)[..., None], palette[(truth.astype(int) - 1) % 4], 0)
        rows.append(np.hstack([image, truth_colors.astype(np.uint8), palette[predicted]]))
    grid = cv2.resize(np.vstack(rows), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(out_path), grid)


def save_losses(trainings: dict[str, list[dict]], out_path: Path) -> None:
    """One panel per training: its total loss against the iteration."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(trainings), figsize=(4.5 * len(trainings), 3.4))
    for ax, (name, records) in zip(np.atleast_1d(axes), trainings.items()):
        points = [(r.get('iter', r['step']), r['loss']) for r in records if 'loss' in r]
        ax.plot(*zip(*points), marker='.' if len(points) < 30 else None)
        ax.set_title(name)
        ax.set_xlabel('iteration')
        ax.set_ylabel('loss')
        ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out_path, dpi=110)
    plt.close(figure)


# ----------------------------------------------------------------------------- main
QUICK_OPTIONS = {  # a few iterations of each step, each logged
    'pretrain': ['train_cfg.max_epochs=1', 'train_dataloader.batch_size=8',
                 'val_dataloader.batch_size=8', 'default_hooks.logger.interval=1'],
    'mask_rcnn': ['train_cfg.max_iters=2', 'default_hooks.checkpoint.interval=2',
                  'default_hooks.logger.interval=1'],
    'upernet': ['train_cfg.max_iters=2', 'default_hooks.checkpoint.interval=2',
                'default_hooks.logger.interval=1'],
}


def print_summary(steps: list[Step], pictures: list[Path], minutes: float) -> None:
    print('\n=== the paper\'s pipeline in miniature: vHeat-T on generated shapes (CPU) ===')
    print('| step | command | time | figure |')
    print('|---|---|---|---|')
    for step in steps:
        commands = '<br>'.join(f'`{command}`' for command in step.commands) or '(in-process)'
        print(f'| {step.name} | {commands} | {step.seconds / 60:.1f} min | {step.figure} |')
    for picture in pictures:
        print(f'picture: {picture}')
    print(f'total time {minutes:.1f} min (data generation included, set-up excluded)')


def check_bars(metrics: dict) -> list[str]:
    """The bars of :data:`BARS` that ``metrics`` (Mask R-CNN's) fall below."""
    return [f'{what} {metrics.get(key, float("nan")):.3f} is below {least}'
            for key, least, what in BARS if not metrics.get(key, -1.0) >= least]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', type=Path, default=ROOT / 'data/shapes')
    parser.add_argument('--work-dir', type=Path, default=ROOT / 'work_dirs/shapes_demo')
    parser.add_argument('--num-train', type=int, default=1500)
    parser.add_argument('--num-val', type=int, default=50)
    parser.add_argument('--quick', action='store_true',
                        help='a few iterations of each step, no bar (the test suite\'s check)')
    args = parser.parse_args(argv)
    start = time.time()
    data_root, work_dir = args.data_root.resolve(), args.work_dir.resolve()
    quick = QUICK_OPTIONS if args.quick else {}
    steps = [Step('1 pretrain (tools/train.py)'), Step('2 interpolate4downstream.py'),
             Step('3 Mask R-CNN (dist_train.sh, dist_test.sh)'),
             Step('4 UperNet (dist_train.sh, dist_test.sh, --tta)'), Step('5 pictures')]
    try:
        make_data(data_root, args.num_train, args.num_val)
        best = pretrain(steps[0], data_root, fresh(work_dir / '1_pretrain'),
                        quick.get('pretrain', []))
        start_weights = interpolate(steps[1], best, fresh(work_dir / '2_interpolate'))
        detection = mask_rcnn(steps[2], data_root, start_weights, fresh(work_dir / '3_mask_rcnn'),
                              quick.get('mask_rcnn', []))
        upernet(steps[3], data_root, start_weights, fresh(work_dir / '4_upernet'),
                quick.get('upernet', []))
        pictures = [work_dir / 'detections.png', work_dir / 'segmentation.png',
                    work_dir / 'losses.png']
        started = time.time()
        save_predictions(last_checkpoint(work_dir / '3_mask_rcnn'), data_root, pictures[0])
        save_segmentation(last_checkpoint(work_dir / '4_upernet'), data_root, pictures[1])
        save_losses({'1 pretraining (classifier)': train_records(work_dir / '1_pretrain'),
                     '3 Mask R-CNN': train_records(work_dir / '3_mask_rcnn'),
                     '4 UperNet': train_records(work_dir / '4_upernet')}, pictures[2])
        steps[4].seconds = time.time() - started
        steps[4].figure = 'detections and segmentation beside the ground truth, losses'
    except (StepFailed, subprocess.SubprocessError, OSError, KeyError, ValueError) as err:
        failed = next((s.name for s in steps if s.commands and not s.figure), 'data')
        message = str(err) if isinstance(err, StepFailed) else \
            f'step "{failed}" failed: {type(err).__name__}: {err}'
        print(f'\nshapes_demo.py: error: {message}', file=sys.stderr)
        return 1
    print_summary(steps, pictures, (time.time() - start) / 60)
    if args.quick:
        return 0
    below = check_bars(detection)
    if below:
        print(f'shapes_demo.py: error: step "{steps[2].name}": {"; ".join(below)}',
              file=sys.stderr)
        return 1
    print('every bar passed')
    return 0


if __name__ == '__main__':
    sys.exit(main())
