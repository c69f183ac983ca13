"""Training that survives interruption: ``tools/train.py`` killed with SIGKILL, then ``--resume``.

A tiny deterministic vHeat classifier (fixed seed, no drop path, no random augmentation, no
Mixup/CutMix, no workers) trains for 6 iterations on the generated ImageNet-layout shapes, with a
checkpoint every 2 and ``max_keep_ckpts=1``. ``tests/interrupt_hooks.py`` kills it at a chosen
point: inside the forward pass of an iteration, or half-way through writing a checkpoint. The
resumed run must start from the last complete checkpoint and end with the weights of an
uninterrupted run. The tools must also refuse, in one line, a checkpoint holding a pickled
payload, without running it.
"""
from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
import torch

from helpers import (CONFIGS, python_tool, remove_checkpoints, synthetic_shapes, tiny_classifier,
                     write_config, write_crafted_checkpoint)
from vheat_mm.checkpoint import CheckpointError, read_checkpoint

pytestmark = pytest.mark.e2e

TESTS = Path(__file__).resolve().parent
CHILD_ENV = dict(PYTHONPATH=str(TESTS))  # the child imports interrupt_hooks (custom_imports)
KILLED = -signal.SIGKILL

CLASSIFIER = tiny_classifier(['vheat_mm', 'interrupt_hooks'], '''\
train_dataloader = dict(
    batch_size=2, num_workers=0,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=pipeline))
val_dataloader = dict(
    batch_size=2, num_workers=0,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1,))
test_evaluator = val_evaluator
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=6, val_begin=1000,
                 val_interval=1000)  # 12 images, 6 batches: one pass, no validation
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=6)]
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(by_epoch=False, interval=2, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
custom_hooks = [dict(type='EMAHook', momentum=0.1, priority='ABOVE_NORMAL'), *{kill_hooks}]
randomness = dict(seed=0, deterministic=True)
''')


@pytest.fixture(scope='module')
def classifier(tmp_path_factory):
    """The data, a config writer (with kill hooks) and the uninterrupted run's last checkpoint."""
    shapes = synthetic_shapes()
    tmp = tmp_path_factory.mktemp('interruption')
    data = shapes.make_shapes_imagenet(tmp / 'imagenet', num_train=4, num_val=1, size=(32, 32))

    def config(name: str, kill_hooks: tuple[dict, ...] = ()) -> Path:
        return write_config(tmp / f'{name}.py', CLASSIFIER.format(
            base=CONFIGS / 'classification/vheat-t_16xb128_in1k.py', data=data,
            classes=shapes.SHAPE_CLASSES, kill_hooks=list(kill_hooks)))

    reference = tmp / 'uninterrupted'
    done = train(config('plain'), reference)
    assert 'CheckpointHook -> AtomicCheckpointHook' in done.stdout
    assert sorted(p.name for p in reference.glob('*.pth')) == ['iter_6.pth']
    yield dict(tmp=tmp, config=config, reference=read_checkpoint(reference / 'iter_6.pth'))
    remove_checkpoints(tmp)


def train(config: Path, work_dir: Path, *args: str, returncode: int = 0):
    return python_tool('tools/train.py', config, '--work-dir', work_dir, *args,
                       env=CHILD_ENV, returncode=returncode)


def last_checkpoint(work_dir: Path) -> Path:
    return Path((work_dir / 'last_checkpoint').read_text())


def assert_every_checkpoint_is_complete(work_dir: Path) -> None:
    """``last_checkpoint`` names a checkpoint; every ``*.pth`` reads (none is truncated)."""
    assert last_checkpoint(work_dir).is_file()
    for path in work_dir.glob('*.pth'):
        read_checkpoint(path)


def resume_and_finish(classifier: dict, work_dir: Path, *, start: int) -> str:
    """Resume the plain config from ``iter_{start}.pth``, the last complete checkpoint; the run
    must finish the schedule with the uninterrupted run's weights. Returns its stdout."""
    done = train(classifier['config']('plain'), work_dir, '--resume')
    assert (f'Auto resumed from the latest checkpoint {work_dir / f"iter_{start}.pth"}.'
            in done.stdout)
    assert f'resumed epoch: 0, iter: {start}' in done.stdout
    iterations = re.findall(r'Iter\(train\) \[(\d+)/6\]', done.stdout)
    assert iterations == [str(i) for i in range(start + 1, 7)], iterations
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['iter_6.pth']  # max_keep_ckpts=1
    assert last_checkpoint(work_dir) == work_dir / 'iter_6.pth'
    assert_same_weights(read_checkpoint(work_dir / 'iter_6.pth'), classifier['reference'])
    return done.stdout


def assert_same_weights(checkpoint: dict, reference: dict) -> None:
    """Equal tensors in ``state_dict`` (EMA weights) and ``ema_state_dict`` (trained weights)."""
    for entry in ('state_dict', 'ema_state_dict'):
        assert checkpoint[entry].keys() == reference[entry].keys()
        different = [k for k, v in checkpoint[entry].items()
                     if not torch.equal(v, reference[entry][k])]
        assert not different, f'{entry}: {different}'


def test_killed_during_an_iteration_resumes_with_the_same_weights(classifier):
    work_dir = classifier['tmp'] / 'killed_in_iteration'
    config = classifier['config']('kill_in_iteration',
                                  (dict(type='KillDuringIteration', iteration=5),))
    done = train(config, work_dir, returncode=KILLED)
    assert re.findall(r'Iter\(train\) \[(\d+)/6\]', done.stdout)[-1] == '4'
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['iter_4.pth']
    assert last_checkpoint(work_dir) == work_dir / 'iter_4.pth'
    assert_every_checkpoint_is_complete(work_dir)

    resume_and_finish(classifier, work_dir, start=4)


def test_killed_while_saving_resumes_from_the_last_complete_checkpoint(classifier):
    work_dir = classifier['tmp'] / 'killed_while_saving'
    config = classifier['config']('kill_while_saving',
                                  (dict(type='KillDuringSave', iteration=4),))
    train(config, work_dir, returncode=KILLED)
    # iter_2.pth is kept until iter_4.pth is complete; half of iter_4 is in a temporary file
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['iter_2.pth']
    assert last_checkpoint(work_dir) == work_dir / 'iter_2.pth'
    assert_every_checkpoint_is_complete(work_dir)
    (partial,) = work_dir.glob('.iter_4.pth.*.tmp')
    with pytest.raises(CheckpointError, match='truncated'):
        read_checkpoint(partial)

    stdout = resume_and_finish(classifier, work_dir, start=2)
    assert f'removed {partial}, left by an interrupted checkpoint save' in stdout
    assert not partial.exists()


@pytest.mark.parametrize('tool', ['test', 'resume'])
def test_tools_refuse_a_checkpoint_with_a_pickled_payload(classifier, tool):
    tmp = classifier['tmp'] / f'payload_{tool}'
    tmp.mkdir()
    crafted = tmp / 'crafted.pth'
    marker = write_crafted_checkpoint(crafted, classifier['reference'])
    config = classifier['config']('plain')
    # with torch's own default turned off: the tools must ask for weights_only themselves
    env = dict(CHILD_ENV, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1')
    if tool == 'test':
        done = python_tool('tools/test.py', config, crafted, '--work-dir', tmp / 'work',
                           env=env, returncode=1)
    else:
        done = python_tool('tools/train.py', config, '--work-dir', tmp / 'work', '--resume',
                           crafted, env=env, returncode=1)
    script = 'test.py' if tool == 'test' else 'train.py'
    (error,) = [line for line in done.stderr.splitlines() if line.startswith(f'{script}: error:')]
    assert error.startswith(f'{script}: error: refusing to load {crafted}:'), error
    assert 'could run code' in error, error
    assert 'Traceback' not in done.stderr
    assert not marker.exists()
