"""End to end: the real command-line tools, in subprocesses, on tiny generated data, on the CPU.

``tools/train.py`` and ``tools/test.py`` for the three toolboxes (Mask R-CNN with CocoMetric and
``--resume``, UperNet with and without ``--tta``, an mmpretrain classifier),
``tools/dist_train.sh`` with two processes, and ``interpolate4downstream.py`` feeding the
backbone's ``init_cfg``. Each config is a child of a shipped config (inherited by absolute path)
that only makes it tiny: a few iterations on a few small images, no pretrained download. Mask
R-CNN's is the demo's (``configs/demo``), pointed at its data as ``tools/shapes_demo.py`` does.
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from mmengine.config import Config

from helpers import (CONFIGS, DAMAGED_FILES, ROOT, free_port, load_script, python_tool,
                     remove_checkpoints, run_tool, synthetic_shapes, write_config,
                     write_damaged_checkpoint)

pytestmark = pytest.mark.e2e


@functools.cache
def shapes_demo() -> ModuleType:
    """``tools/shapes_demo.py`` (its data options, reader of mmengine's scalars and image size),
    loaded when a test first needs it."""
    return load_script(ROOT / 'tools/shapes_demo.py')


@pytest.fixture(scope='module')
def shapes() -> ModuleType:
    return synthetic_shapes()


# ----------------------------------------------------------------------------- helpers
def run_dirs(work_dir: Path) -> list[Path]:
    """The per-run (timestamp) directories mmengine made in ``work_dir``, oldest first."""
    return sorted(p for p in work_dir.iterdir() if p.is_dir() and re.fullmatch(r'\d{8}_\d{6}',
                                                                                  p.name))


def read_scalars(run_dir: Path) -> list[dict]:
    """The records of ``run_dir/vis_data/scalars.json``, read as tools/shapes_demo.py reads them."""
    path = run_dir / 'vis_data' / 'scalars.json'
    assert path.is_file(), f'no {path}; {run_dir} holds {sorted(os.listdir(run_dir))}'
    return shapes_demo().read_scalars(run_dir)


def train_records(run_dir: Path) -> list[dict]:
    return [r for r in read_scalars(run_dir) if 'loss' in r]


def assert_finite_losses(records: list[dict], *, steps: list[int], keys: tuple[str, ...]) -> None:
    """One training record per step in ``steps``, each with ``keys``; every loss finite."""
    assert [r['step'] for r in records] == steps, records
    for record in records:
        losses = {k: v for k, v in record.items() if k.rsplit('.', 1)[-1].startswith('loss')}
        assert set(keys) <= set(losses), record
        assert all(math.isfinite(v) for v in losses.values()), record


def read_test_metrics(work_dir: Path) -> dict:
    """The metrics ``tools/test.py`` wrote to ``work_dir/<timestamp>/<timestamp>.json``."""
    runs = run_dirs(work_dir)
    assert len(runs) == 1, runs
    path = runs[0] / f'{runs[0].name}.json'
    assert path.is_file(), f'no {path}; {runs[0]} holds {sorted(os.listdir(runs[0]))}'
    return json.loads(path.read_text())


def dumped_config(work_dir: Path, config: Path) -> Config:
    """The config the runner dumped to its work dir (after the tools' changes)."""
    return Config.fromfile(str(work_dir / config.name), import_custom_modules=False)


# ----------------------------------------------------------------------------- Mask R-CNN
MASK_RCNN = '''\
_base_ = '{base}'
# fewer proposals and RoIs than the demo: the mask head's cost is per RoI
model = dict(
    train_cfg=dict(rpn_proposal=dict(nms_pre=200, max_per_img=100)),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100), rcnn=dict(max_per_img=10)))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False)
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False)
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_begin=1000, val_interval=1000)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2, max_keep_ckpts=-1))
'''
MASK_RCNN_LOSSES = ('loss', 'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask')


@pytest.fixture(scope='module')
def mask_rcnn(tmp_path_factory, shapes):
    """Shapes data in COCO format at the demo's size, the demo config made tiny, trained for 2
    iterations. ``options`` points the config at the data (``--cfg-options``, as the demo)."""
    tmp = tmp_path_factory.mktemp('mask_rcnn')
    data = shapes.make_shapes_coco(tmp / 'shapes', num_train=8, num_val=4,
                                   size=shapes_demo().IMAGE_SIZE)
    config = write_config(tmp / 'mask-rcnn_tiny_shapes.py', MASK_RCNN.format(
        base=CONFIGS / 'demo/mask-rcnn_vheat-t_fpn_shapes.py'))
    # from scratch: the demo's pretrained start is made by its own first two steps
    options = shapes_demo().data_options(data) + ['model.backbone.init_cfg=None']
    work_dir = tmp / 'train'
    python_tool('tools/train.py', config, '--work-dir', work_dir, '--cfg-options', *options)
    (run,) = run_dirs(work_dir)
    # read now: the resume test adds to this work dir
    yield dict(config=config, options=options, work_dir=work_dir, tmp=tmp,
               records=train_records(run),
               last_checkpoint=(work_dir / 'last_checkpoint').read_text().strip())
    remove_checkpoints(tmp)


def test_mask_rcnn_trains_and_tests_with_coco_metric(mask_rcnn):
    assert_finite_losses(mask_rcnn['records'], steps=[1, 2], keys=MASK_RCNN_LOSSES)
    checkpoint = mask_rcnn['work_dir'] / 'iter_2.pth'
    assert checkpoint.is_file() and Path(mask_rcnn['last_checkpoint']) == checkpoint

    test_dir = mask_rcnn['tmp'] / 'test'
    done = python_tool('tools/test.py', mask_rcnn['config'], checkpoint, '--work-dir', test_dir,
                       '--cfg-options', *mask_rcnn['options'])
    assert f'Load checkpoint from {checkpoint}' in done.stdout
    metrics = read_test_metrics(test_dir)
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50'):
        assert 0.0 <= metrics[key] <= 1.0, metrics
    assert 'coco/segm_mAP' in done.stdout and 'Iter(test) [2/2]' in done.stdout


@pytest.mark.parametrize('kind', ['truncated', 'empty'])
def test_mmdet_own_test_py_refuses_a_damaged_checkpoint_in_one_line(mask_rcnn, kind, tmp_path):
    """mmdet's own tools/test.py with a vheat config (custom_imports imports vheat_mm): the
    checkpoint is read by vheat_mm's safe reader and refused; the traceback (vheat_mm installs
    no excepthook) ends with the one line naming the file."""
    import mmdet
    path = tmp_path / f'{kind}.pth'
    write_damaged_checkpoint(path, kind, {'state_dict': {'weight': torch.randn(4096)}})
    done = run_tool(sys.executable, Path(mmdet.__file__).parent / '.mim/tools/test.py',
                    mask_rcnn['config'], path, '--work-dir', tmp_path / 'test',
                    '--cfg-options', *mask_rcnn['options'], returncode=1)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f'vheat_mm.checkpoint.errors.CheckpointError: cannot read checkpoint '
                           f'{path}: ')
    assert last.endswith(DAMAGED_FILES[kind])


def test_resume_continues_from_the_saved_iteration(mask_rcnn):
    work_dir = mask_rcnn['work_dir']
    before = run_dirs(work_dir)
    done = python_tool('tools/train.py', mask_rcnn['config'], '--work-dir', work_dir, '--resume',
                       '--cfg-options', *mask_rcnn['options'], 'train_cfg.max_iters=4')
    assert f'Auto resumed from the latest checkpoint {work_dir / "iter_2.pth"}' in done.stdout
    assert 'resumed epoch: 0, iter: 2' in done.stdout
    iterations = re.findall(r'Iter\(train\) \[\s*(\d+)/(\d+)\]', done.stdout)
    assert iterations == [('3', '4'), ('4', '4')], iterations
    (run,) = [d for d in run_dirs(work_dir) if d not in before]
    assert_finite_losses(train_records(run), steps=[3, 4], keys=MASK_RCNN_LOSSES)
    assert (work_dir / 'iter_4.pth').is_file()
    assert Path((work_dir / 'last_checkpoint').read_text().strip()) == work_dir / 'iter_4.pth'


# ----------------------------------------------------------------------------- UperNet
# mmseg's ADE20KDataset maps the classes of ``metainfo`` to ADE20K's own (a label_map from its
# 150 names): after reduce_zero_label the shapes data has labels 0..3 (3 shapes, background),
# which stay 0..3 with ADE20K's first four names.
UPERNET = '''\
_base_ = '{base}'
data_root = '{data}'
crop_size = (64, 64)
metainfo = dict(classes={classes})
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=64, drop_path_rate=0.0, init_cfg=None),
    decode_head=dict(num_classes=4),
    auxiliary_head=dict(num_classes=4),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(43, 43)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in (0.5, 1.0)],
        [dict(type='RandomFlip', prob=0.0, direction='horizontal'),
         dict(type='RandomFlip', prob=1.0, direction='horizontal')],
        [dict(type='LoadAnnotations')],
        [dict(type='PackSegInputs')],
    ]),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_begin=1000, val_interval=1000)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(by_epoch=False, interval=2))
'''


@pytest.fixture(scope='module')
def upernet(tmp_path_factory, shapes):
    """Shapes data in the ADE20K layout, the tiny UperNet config, trained for 2 iterations."""
    from mmseg.datasets import ADE20KDataset

    tmp = tmp_path_factory.mktemp('upernet')
    data = shapes.make_shapes_ade20k(tmp / 'ade', num_train=4, num_val=2, size=(64, 64))
    config = write_config(tmp / 'upernet_tiny_shapes.py', UPERNET.format(
        base=CONFIGS / 'upernet/upernet_vheat-t_8xb2-160k_ade20k-512x512.py', data=data,
        classes=ADE20KDataset.METAINFO['classes'][:4]))
    work_dir = tmp / 'train'
    python_tool('tools/train.py', config, '--work-dir', work_dir)
    (run,) = run_dirs(work_dir)
    assert_finite_losses(train_records(run), steps=[1, 2],
                         keys=('loss', 'decode.loss_ce', 'aux.loss_ce'))
    checkpoint = work_dir / 'iter_2.pth'
    assert checkpoint.is_file()
    yield dict(config=config, checkpoint=checkpoint, tmp=tmp)
    remove_checkpoints(tmp)


@pytest.mark.parametrize('tta', [False, True], ids=['plain', 'tta'])
def test_upernet_trains_and_tests_with_and_without_tta(upernet, tta):
    test_dir = upernet['tmp'] / f'test_{"tta" if tta else "plain"}'
    python_tool('tools/test.py', upernet['config'], upernet['checkpoint'], '--work-dir', test_dir,
                *(['--tta'] if tta else []))
    metrics = read_test_metrics(test_dir)
    assert 0.0 <= metrics['mIoU'] <= 100.0 and 0.0 <= metrics['aAcc'] <= 100.0, metrics
    used = dumped_config(test_dir, upernet['config'])  # what the runner was built from
    pipeline = used.test_dataloader.dataset.pipeline
    if tta:
        assert used.model.type == 'SegTTAModel' and used.model.module.type == 'EncoderDecoder'
        assert pipeline[-1].type == 'TestTimeAug'
        assert [t.scale_factor for t in pipeline[-1].transforms[0]] == [0.5, 1.0]
    else:
        assert used.model.type == 'EncoderDecoder' and used.model.test_cfg.mode == 'slide'
        assert [t.type for t in pipeline] == ['LoadImageFromFile', 'Resize', 'LoadAnnotations',
                                              'PackSegInputs']


# ----------------------------------------------------------------------------- classifier
CLASSIFIER = '''\
_base_ = '{base}'
data_root = '{data}'
metainfo = dict(classes={classes})
data_preprocessor = dict(num_classes=3)
model = dict(backbone=dict(img_size=64, drop_path_rate=0.0), head=dict(num_classes=3))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=64, edge='short'),
    dict(type='CenterCrop', crop_size=64),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=4, num_workers=0,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1,))  # top-5 of 3 classes is not defined
test_evaluator = val_evaluator
train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
                        convert_to_iter_based=True)]
default_hooks = dict(logger=dict(interval=1))
'''


@pytest.fixture(scope='module')
def classifier(tmp_path_factory, shapes):
    """Shapes data in the ImageNet layout (4 + 2 images per class), the tiny classifier config."""
    tmp = tmp_path_factory.mktemp('classifier')
    data = shapes.make_shapes_imagenet(tmp / 'imagenet', num_train=4, num_val=2, size=(64, 64))
    config = write_config(tmp / 'vheat-t_tiny_shapes.py', CLASSIFIER.format(
        base=CONFIGS / 'classification/vheat-t_16xb128_in1k.py', data=data,
        classes=shapes.SHAPE_CLASSES))
    yield dict(config=config, tmp=tmp)
    remove_checkpoints(tmp)


def test_classifier_trains_and_tests_with_accuracy(classifier):
    work_dir = classifier['tmp'] / 'train'
    python_tool('tools/train.py', classifier['config'], '--work-dir', work_dir)
    (run,) = run_dirs(work_dir)
    records = read_scalars(run)
    assert_finite_losses([r for r in records if 'loss' in r], steps=[1, 2, 3],  # 12 images / 4
                         keys=('loss',))
    assert [r['accuracy/top1'] for r in records if 'accuracy/top1' in r]  # validated after epoch 1
    checkpoint = work_dir / 'epoch_1.pth'
    assert checkpoint.is_file()

    test_dir = classifier['tmp'] / 'test'
    done = python_tool('tools/test.py', classifier['config'], checkpoint, '--work-dir', test_dir)
    metrics = read_test_metrics(test_dir)
    assert 0.0 <= metrics['accuracy/top1'] <= 100.0, metrics
    assert 'accuracy/top5' not in metrics and 'accuracy/top1' in done.stdout


def test_classifier_falls_back_to_float32_and_keeps_the_best_raw_and_ema(classifier):
    """The paper config's AmpOptimWrapper trains in float32 on the CPU, with a warning; every
    epoch scores the raw weights and the EMA, and the best checkpoint of each holds the weights
    that scored (in ``state_dict``, what tools/test.py evaluates)."""
    work_dir = classifier['tmp'] / 'best'
    done = python_tool('tools/train.py', classifier['config'], '--work-dir', work_dir, '--amp',
                       '--cfg-options', 'train_cfg.max_epochs=2')
    from vheat_mm.checkpoint import read_checkpoint

    assert ('no CUDA, config changed to run on CPU: optim_wrapper: AmpOptimWrapper -> '
            'OptimWrapper (float32' in done.stdout + done.stderr)
    (run,) = run_dirs(work_dir)
    scored = [r for r in read_scalars(run) if 'accuracy/top1' in r]
    assert len(scored) == 2 and all('ema/accuracy/top1' in r for r in scored), scored
    raw_best = sorted(work_dir.glob('best_accuracy_top1_epoch_*.pth'))
    ema_best = sorted(work_dir.glob('best_ema_accuracy_top1_epoch_*.pth'))
    assert len(raw_best) == 1 and len(ema_best) == 1, sorted(p.name for p in work_dir.iterdir())
    for best, raw in ((raw_best[0], True), (ema_best[0], False)):
        epoch = best.stem.rsplit('_', 1)[-1]
        saved = read_checkpoint(best)
        # epoch_N.pth as EMAHook writes it: state_dict the EMA, ema_state_dict the raw weights
        epoch_ckpt = read_checkpoint(work_dir / f'epoch_{epoch}.pth')
        key = 'backbone.layers.0.0.op.linear.weight'
        want = (epoch_ckpt['ema_state_dict'][f'module.{key}'] if raw
                else epoch_ckpt['state_dict'][key])
        assert torch.equal(saved['state_dict'][key], want), best.name
        assert not torch.equal(epoch_ckpt['state_dict'][key],
                               epoch_ckpt['ema_state_dict'][f'module.{key}'])


def test_dist_train_runs_two_cpu_processes(classifier):
    work_dir = classifier['tmp'] / 'dist'
    done = run_tool('bash', ROOT / 'tools/dist_train.sh', classifier['config'], '2',
                    '--work-dir', work_dir, env=dict(PORT=str(free_port())))
    log = done.stdout + done.stderr
    assert 'Distributed launcher: pytorch' in log and 'Distributed training: True' in log
    assert 'GPU number: 2' in log  # mmengine's name for the world size
    assert 'env_cfg.dist_cfg.backend: nccl -> gloo' in log
    (run,) = run_dirs(work_dir)
    records = read_scalars(run)
    # each process trains on its half of the 12 images: 2 iterations of 4 (not 3 as alone)
    assert_finite_losses([r for r in records if 'loss' in r], steps=[1, 2], keys=('loss',))
    assert [r['accuracy/top1'] for r in records if 'accuracy/top1' in r]
    assert (work_dir / 'epoch_1.pth').is_file()
    assert Path((work_dir / 'last_checkpoint').read_text().strip()) == work_dir / 'epoch_1.pth'


# ----------------------------------------------------------------------------- interpolate
@pytest.fixture
def checkpoint_dir(tmp_path):
    yield tmp_path
    remove_checkpoints(tmp_path)


def test_interpolated_checkpoint_initialises_the_mask_rcnn_backbone(checkpoint_dir):
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope

    from vheat_mm.models import VHeat

    # an official-layout vHeat-T classifier at 224, its values moved away from any init
    official = {k: v + torch.randn_like(v)
                for k, v in VHeat('tiny', num_classes=1000).state_dict().items()}
    pretrained = checkpoint_dir / 'vHeat_tiny.pth'
    converted_path = checkpoint_dir / 'vHeat_tiny_512.pth'
    torch.save({'model': official}, pretrained)
    done = python_tool('interpolate4downstream.py', '--pt_pth', pretrained, '--pt_size', '224',
                       '--tg_pth', converted_path, '--tg_size', '512')
    assert f'Finished! Saved to {converted_path}.' in done.stdout
    converted = torch.load(converted_path, map_location='cpu', weights_only=True)['model']
    assert set(converted) == set(official)
    for stage, size in enumerate((128, 64, 32, 16)):
        before, after = official[f'freq_embed.{stage}'], converted[f'freq_embed.{stage}']
        n = before.shape[0]
        assert after.shape == (size, size, before.shape[2])
        assert torch.equal(after[:n, :n], before)  # zero-padded at the bottom and right
        assert not after[n:].any() and not after[:, n:].any()

    cfg = Config.fromfile(str(CONFIGS / 'mask_rcnn/mask-rcnn_vheat-t_fpn_1x_coco.py'))
    cfg.model.backbone.init_cfg.checkpoint = str(converted_path)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    state = model.backbone.state_dict()
    loaded = sorted(k for k in state if k in converted)
    mismatched = [k for k in loaded if not torch.equal(state[k], converted[k])]
    assert not mismatched, f'not the checkpoint\'s values: {mismatched}'
    assert sorted(set(state) - set(loaded)) == sorted(
        f'outnorm{i}.{p}' for i in range(4) for p in ('weight', 'bias'))
    assert sorted(set(converted) - set(loaded)) == [
        'classifier.0.bias', 'classifier.0.weight', 'classifier.3.bias', 'classifier.3.weight']


# ----------------------------------------------------------------------------- the demo
def test_the_demo_pipeline_runs_every_step_with_its_tool(tmp_path):
    """``tools/shapes_demo.py --quick``: the paper's pipeline (pretraining, interpolation,
    Mask R-CNN and UperNet through dist_train.sh and dist_test.sh) a few iterations a step, its
    summary and pictures."""
    data, work = tmp_path / 'data', tmp_path / 'work'
    args = ('tools/shapes_demo.py', '--quick', '--num-train', '16', '--num-val', '4',
            '--data-root', data, '--work-dir', work)
    done = python_tool(*args, timeout=1800)
    rows = [line for line in done.stdout.splitlines() if re.match(r'\| \d ', line)]
    assert [row.split(' | ')[0] for row in rows] == [
        '| 1 pretrain (tools/train.py)', '| 2 interpolate4downstream.py',
        '| 3 Mask R-CNN (dist_train.sh, dist_test.sh)',
        '| 4 UperNet (dist_train.sh, dist_test.sh, --tta)', '| 5 pictures']
    assert '`bash tools/dist_train.sh configs/demo/mask-rcnn_vheat-t_fpn_shapes.py 2 --work-dir ' \
        '3_mask_rcnn ...`' in rows[2] and '--tta' in rows[3] and 'box mAP' in rows[2]
    assert re.search(r'mIoU [\d.]+ \(single-scale\), mIoU [\d.]+ \(TTA\)', rows[3])
    for picture in ('detections.png', 'segmentation.png', 'losses.png'):
        assert (work / picture).stat().st_size > 1000, picture
    # the downstream steps started from the interpolated classifier
    interpolated = work / '2_interpolate/vheat-t_shapes-128.pth'
    assert interpolated.is_file()
    assert f'Load checkpoint from {interpolated}' not in done.stdout  # init_cfg, not load_from


def test_the_demo_names_the_step_that_fails_and_starts_each_step_afresh(tmp_path, shapes):
    """A step that fails is named; the data of an earlier run is reused as it is, and a step's
    work directory is emptied before the step runs."""
    data, work = tmp_path / 'data', tmp_path / 'work'
    shapes.make_shapes_coco(data, num_train=8, num_val=2, size=shapes_demo().IMAGE_SIZE)
    shapes.make_crops_from_coco(data, data / 'classification')
    shapes.make_semantic_from_coco(data, data / 'segmentation')
    shutil.rmtree(data / 'classification' / 'train')  # the pretraining cannot read its images
    stale = work / '1_pretrain' / 'best_accuracy_top1_epoch_9.pth'
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b'from an earlier run')
    images = sorted(p.name for p in (data / 'train').iterdir())
    done = python_tool('tools/shapes_demo.py', '--quick', '--num-train', '8', '--num-val', '2',
                       '--data-root', data, '--work-dir', work, returncode=1, timeout=600)
    assert done.stderr.strip().splitlines()[-1].startswith(
        'shapes_demo.py: error: step "1 pretrain (tools/train.py)" failed: ')
    assert not stale.exists()  # never taken for this run's checkpoint
    assert sorted(p.name for p in (data / 'train').iterdir()) == images
    assert not (data / 'classification' / 'train').exists()  # the data was not made again
    assert f'reusing the 8 + 2 shapes images in {data}' in done.stdout


def test_the_demo_generates_its_data_again_for_other_image_counts(tmp_path, monkeypatch, capsys):
    """An earlier run's data of other image counts is not taken for this run's, nor silently."""
    monkeypatch.syspath_prepend(str(ROOT / 'tools'))  # shapes_demo imports synthetic_shapes
    demo = shapes_demo()
    demo.make_data(tmp_path, 4, 2)
    assert demo.image_counts(tmp_path) == (4, 2)
    demo.make_data(tmp_path, 4, 2)
    assert f'reusing the 4 + 2 shapes images in {tmp_path}' in capsys.readouterr().out
    demo.make_data(tmp_path, 6, 2)
    assert f'{tmp_path} holds 4 + 2 shapes images, not the 6 + 2 asked for: generating them ' \
        'again' in capsys.readouterr().out
    assert demo.image_counts(tmp_path) == (6, 2)
    crops = {p.name.split('_')[1] for p in (tmp_path / 'classification/train').rglob('*.png')}
    assert crops == {f'{i:05d}' for i in range(1, 7)}  # the crops derive from the new images
