"""vheat_mm installs into an environment that already has the stack, as a wheel and editable.

A fresh virtual environment is layered on the project's ``.venv`` (a ``.pth`` file naming its
site-packages: torch and the toolboxes, but not vheat_mm, whose editable finder is not
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

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
USE = '''
import vheat_mm, torch
from mmdet.registry import MODELS
from mmengine.registry import DefaultScope
print(vheat_mm.__file__)
with DefaultScope.overwrite_default_scope('mmdet'):
    model = MODELS.build(dict(type='vHeat', arch='tiny', img_size=64))
print([tuple(f.shape) for f in model(torch.randn(1, 3, 64, 64))])
'''


def run(*args, cwd: Path) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f'{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}'
    return done.stdout


def layered_env(path: Path) -> Path:
    """A venv whose site-packages also sees this interpreter's (the stack)."""
    run(sys.executable, '-m', 'venv', '--without-pip', path, cwd=path.parent)
    python = path / 'bin' / 'python'
    site = run(python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])',
               cwd=path.parent).strip()
    Path(site, '_stack.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    return python


def test_wheel_installs_and_works_outside_the_repository(tmp_path):
    dist = tmp_path / 'dist'
    run(sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-w', dist,
        ROOT, cwd=tmp_path)
    (wheel,) = dist.glob('vheat_mm-*.whl')
    names = zipfile.ZipFile(wheel).namelist()
    assert 'vheat_mm/kernels/norm.py' in names and 'vheat_mm/models/vheat.py' in names
    assert any(n.endswith('licenses/LICENSE') for n in names)
    python = layered_env(tmp_path / 'env')
    run(python, '-m', 'pip', 'install', '--no-deps', '--no-index', wheel, cwd=tmp_path)
    out = run(python, '-c', USE, cwd=tmp_path).splitlines()
    assert out[0].startswith(str(tmp_path / 'env')), out
    assert out[1] == '[(1, 96, 16, 16), (1, 192, 8, 8), (1, 384, 4, 4), (1, 768, 2, 2)]'


def test_editable_install_uses_the_checkout(tmp_path):
    python = layered_env(tmp_path / 'env')
    run(python, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation', '--no-index',
        '-e', ROOT, cwd=tmp_path)
    out = run(python, '-c', USE, cwd=tmp_path).splitlines()
    assert out[0] == str(ROOT / 'vheat_mm' / '__init__.py')
