"""vheat_mm installs into an environment that already has the stack, as a wheel and editable,
and works there as an OpenMMLab codebase: ``mim search/train/test/download vheat_mm``.

A fresh virtual environment is layered on the project's ``.venv`` (a ``.pth`` file naming its
site-packages: torch, the toolboxes and openmim, but not vheat_mm, whose editable finder is not
processed that way); vheat_mm is installed into it with pip and used from a directory outside
the repository.
"""
from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from helpers import ROOT, CountingServer, synthetic_shapes

pytestmark = pytest.mark.e2e
USE = '''
import vheat_mm.mm, torch
from mmdet.registry import MODELS
from mmengine.registry import DefaultScope
print(vheat_mm.__file__)
with DefaultScope.overwrite_default_scope('mmdet'):
    model = MODELS.build(dict(type='vHeat', arch='tiny', img_size=64))
print([tuple(f.shape) for f in model(torch.randn(1, 3, 64, 64))])
'''
DEMO_CONFIG = 'mask-rcnn_vheat-t_fpn_shapes.py'
NO_WORKERS = ('train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
              'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False')


def run(*args, cwd: Path) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f'{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}'
    return done.stdout


def site_packages(python: Path) -> Path:
    return Path(run(python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])',
                    cwd=python.parent).strip())


def layered_env(path: Path) -> Path:
    """A venv whose site-packages also sees this interpreter's (the stack)."""
    run(sys.executable, '-m', 'venv', '--without-pip', path, cwd=path.parent)
    python = path / 'bin' / 'python'
    (site_packages(python) / '_stack.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    return python


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp('dist')
    run(sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-w', dist,
        ROOT, cwd=dist)
    (path,) = dist.glob('vheat_mm-*.whl')
    return path


@pytest.fixture(scope='module')
def installed(tmp_path_factory, wheel) -> Path:
    """The python of a layered environment with the wheel installed."""
    tmp = tmp_path_factory.mktemp('installed')
    python = layered_env(tmp / 'env')
    run(python, '-m', 'pip', 'install', '--no-deps', '--no-index', wheel, cwd=tmp)
    return python


def mim(python: Path, *args, cwd: Path) -> str:
    return run(python, '-m', 'mim', *args, cwd=cwd)


def test_wheel_installs_and_works_outside_the_repository(wheel, installed, tmp_path):
    names = zipfile.ZipFile(wheel).namelist()
    assert 'vheat_mm/kernels/norm.py' in names and 'vheat_mm/models/vheat.py' in names
    assert any(n.endswith('licenses/LICENSE') for n in names)
    out = run(installed, '-c', USE, cwd=tmp_path).splitlines()
    assert out[0].startswith(str(installed.parents[1])), out
    assert out[1] == '[(1, 96, 16, 16), (1, 192, 8, 8), (1, 384, 4, 4), (1, 768, 2, 2)]'


def test_wheel_ships_configs_tools_and_model_index_as_files(wheel):
    """What ``vheat_mm/.mim`` links to in the repository, the wheel holds as files."""
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.relative_to(ROOT).as_posix() for d in ('configs', 'tools')
               for p in (ROOT / d).rglob('*') if p.suffix in ('.py', '.sh', '.yml')
               and '__pycache__' not in p.parts}
    assert shipped and {f'vheat_mm/.mim/{name}' for name in shipped} <= names
    assert 'vheat_mm/.mim/model-index.yml' in names
    assert not [n for n in names if '__pycache__' in n or n.endswith('.pyc')]


def test_editable_install_uses_the_checkout(tmp_path):
    python = layered_env(tmp_path / 'env')
    run(python, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation', '--no-index',
        '-e', ROOT, cwd=tmp_path)
    out = run(python, '-c', USE, cwd=tmp_path).splitlines()
    assert out[0] == str(ROOT / 'vheat_mm' / '__init__.py')


def test_mim_search_lists_the_models_with_the_papers_figures(installed, tmp_path):
    out = mim(installed, 'search', 'vheat_mm', cwd=tmp_path)
    for name, figure in (('vheat-t_16xb128_in1k', 'imagenet-1k/top_1_accuracy   82.2'),
                         ('mask-rcnn_vheat-s_fpn_ms-crop-3x_coco', 'coco/box_ap       48.8'),
                         ('upernet_vheat-b_8xb2-160k_ade20k-512x512', 'ade20k/miou       49.6')):
        entry = out.split(f'config id: {name}\n')[1].split('-' * 20)[0]
        assert ' '.join(figure.split()) in ' '.join(entry.split()), entry
        assert 'flops' in entry and 'parameters' in entry


def test_mim_train_and_test_the_demo_detector_on_cpu(installed, tmp_path):
    """``mim train``/``mim test`` find the config by name in the installed package and run its
    tools/train.py and tools/test.py (on the CPU: ``--gpus 0``)."""
    synthetic_shapes().make_shapes_coco(tmp_path / 'data/shapes', num_train=8, num_val=4,
                                        size=(128, 128))
    package = site_packages(installed) / 'vheat_mm' / '.mim'

    out = mim(installed, 'train', 'vheat_mm', DEMO_CONFIG, '--gpus', '0', '--work-dir', 'work',
              '--cfg-options', 'train_cfg.max_iters=2', 'default_hooks.checkpoint.interval=2',
              'model.backbone.init_cfg=None',  # the demo's own pretraining is not run here
              'default_hooks.logger.interval=1',
              *NO_WORKERS[:2], cwd=tmp_path)
    assert f'will use {package}/configs/demo/{DEMO_CONFIG}' in out
    assert f'Training command is {installed} {package}/tools/train.py' in out
    assert 'Iter(train) [2/2]' in out and 'Training finished successfully' in out
    checkpoint = tmp_path / 'work' / 'iter_2.pth'
    assert checkpoint.is_file()

    out = mim(installed, 'test', 'vheat_mm', DEMO_CONFIG, '--checkpoint', checkpoint,
              '--gpus', '0', '--work-dir', 'test', '--cfg-options', *NO_WORKERS[2:], cwd=tmp_path)
    assert f'Testing command is {installed} {package}/tools/test.py' in out
    assert f'Load checkpoint from {checkpoint}' in out
    assert 'coco/segm_mAP' in out and 'Testing finished successfully' in out


def test_mim_download_fetches_the_weights_and_dumps_the_config(installed, tmp_path):
    """Against a local server: the installed metafile's release URL is pointed at it."""
    metafile = site_packages(installed) / 'vheat_mm/.mim/configs/classification/metafile.yml'
    release = 'https://github.com/MzeroMiko/vHeat/releases/download/vheatcls/'
    original = metafile.read_text()
    assert f'Weights: {release}vHeat_tiny.pth' in original
    www = tmp_path / 'www'
    www.mkdir()
    torch.save({'model': {'weight': torch.arange(10.0)}}, www / 'vHeat_tiny.pth')
    with CountingServer(www) as server:
        metafile.write_text(original.replace(release, server.url('')))
        try:
            mim(installed, 'download', 'vheat_mm', '--config', 'vheat-t_16xb128_in1k',
                '--dest', tmp_path / 'dest', cwd=tmp_path)
        finally:
            metafile.write_text(original)
        assert server.counts['/vHeat_tiny.pth'] == 1
    assert (tmp_path / 'dest' / 'vHeat_tiny.pth').read_bytes() == \
        (www / 'vHeat_tiny.pth').read_bytes()
    cfg = Config.fromfile(str(tmp_path / 'dest' / 'vheat-t_16xb128_in1k.py'))
    assert cfg.model.backbone.type == 'vHeat' and cfg.model.backbone.arch == 'tiny'
