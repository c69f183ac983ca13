"""tools/setup_env.sh's plan, as far as a machine without a GPU can check it.

``VHEAT_MM_SETUP_PLAN=1`` prints the venv, torch and torchvision, the mmcv wheel cache folder,
the build flags and the source patch, and changes nothing; ``VHEAT_MM_TORCH`` picks the torch.
A fake ``nvidia-smi`` (and ``nvcc``) on PATH stands in for a GPU node; the architecture list
comes from TORCH_CUDA_ARCH_LIST, as on a node where it is set.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from helpers import ROOT

TORCH = torch.__version__.split('+')[0]


def plan(tmp_path: Path, *, gpu: bool, nvcc: bool, arch: str | None = None,
         torch_version: str | None = None) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir(exist_ok=True)
    fakes = {'nvidia-smi': 'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"' if gpu else None,
             'nvcc': 'echo "Cuda compilation tools"' if nvcc else None}
    for name, body in fakes.items():
        if body:
            (bin_dir / name).write_text(f'#!/bin/sh\n{body}\n')
            (bin_dir / name).chmod(0o755)
    env = dict(os.environ, VHEAT_MM_SETUP_PLAN='1', VHEAT_MM_CACHE=str(tmp_path / 'cache'),
               PATH=f'{bin_dir}:/usr/bin:/bin')
    env.pop('TORCH_CUDA_ARCH_LIST', None)
    env.pop('VHEAT_MM_TORCH', None)
    if arch:
        env['TORCH_CUDA_ARCH_LIST'] = arch
    if torch_version:
        env['VHEAT_MM_TORCH'] = torch_version
    return subprocess.run(['bash', str(ROOT / 'tools/setup_env.sh')], env=env,
                          capture_output=True, text=True, timeout=120)


# a GPU node's plan reads torch's CUDA version from the venv
needs_the_venv = pytest.mark.skipif(not (ROOT / '.venv/bin/python').exists(),
                                    reason='needs the .venv made by tools/setup_env.sh')


def test_without_a_gpu_mmcv_gets_cpu_ops(tmp_path):
    done = plan(tmp_path, gpu=False, nvcc=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f'venv: {ROOT}/.venv',
        'torch 2.14.1, torchvision 0.29.1',
        f'mmcv wheel cache: {tmp_path}/cache/mmcv-2.1.0-torch-2.14.1-cpu',
        'mmcv build: MMCV_WITH_OPS=1 (CPU ops)',
        'mmcv source: -std=c++17 patched to -std=c++20 (torch >= 2.10 headers)']


def test_torch_2_1_gets_its_own_venv_torchvision_and_wheel_and_no_patch(tmp_path):
    """Planned without its venv: on a node without a GPU the plan reads nothing from it."""
    done = plan(tmp_path, gpu=False, nvcc=False, torch_version='2.1.2')
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f'venv: {ROOT}/.venv-torch2.1.2',
        'torch 2.1.2, torchvision 0.16.2',
        f'mmcv wheel cache: {tmp_path}/cache/mmcv-2.1.0-torch-2.1.2-cpu',
        'mmcv build: MMCV_WITH_OPS=1 (CPU ops)',
        'mmcv source: as released (-std=c++17)']


def test_a_torch_without_a_known_torchvision_is_refused_in_one_line(tmp_path):
    done = plan(tmp_path, gpu=False, nvcc=False, torch_version='2.0.1')
    assert done.returncode == 2
    assert done.stdout == ''
    assert done.stderr.splitlines() == [
        '[setup] VHEAT_MM_TORCH=2.0.1: choose 2.14.1 or 2.1.2 (the torch versions this set-up '
        'pairs with a torchvision)']


@needs_the_venv
def test_with_a_gpu_mmcv_gets_cuda_ops_for_its_arch(tmp_path):
    cuda = torch.version.cuda
    if cuda is None:
        pytest.skip('a CPU build of torch cannot build CUDA ops')
    done = plan(tmp_path, gpu=True, nvcc=True, arch='9.0')
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2:4] == [
        f'mmcv wheel cache: {tmp_path}/cache/mmcv-2.1.0-torch-{TORCH}-cu{cuda}-sm9.0',
        f'mmcv build: MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 (CUDA {cuda})']
    two = plan(tmp_path, gpu=True, nvcc=True, arch='8.0 9.0')
    assert f'-cu{cuda}-sm8.0_9.0' in two.stdout  # another arch list, another cached wheel


@needs_the_venv
def test_a_gpu_without_nvcc_stops_with_what_is_missing(tmp_path):
    done = plan(tmp_path, gpu=True, nvcc=False, arch='9.0')
    assert done.returncode == 3
    assert 'nvidia-smi lists a GPU but nvcc, the CUDA compiler, is not on PATH' in done.stderr
    assert done.stdout == ''


def test_a_disk_too_small_for_torch_stops_the_set_up_before_pip_in_one_line(tmp_path):
    """A fake ``df`` reports 1 GB free: the set-up (of a copy of the repository, in a new venv)
    names the space torch needs and the venv's, and installs no torch."""
    repo = tmp_path / 'repo'
    (repo / 'tools').mkdir(parents=True)
    for name in ('tools/setup_env.sh', 'pyproject.toml'):
        (repo / name).write_bytes((ROOT / name).read_bytes())
    (repo / 'requirements').mkdir()
    for requirements in (ROOT / 'requirements').glob('*.txt'):
        (repo / 'requirements' / requirements.name).write_bytes(requirements.read_bytes())
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'df').write_text('#!/bin/sh\necho " Avail"\necho "   1"\n')
    (bin_dir / 'df').chmod(0o755)
    env = dict(os.environ, VHEAT_MM_CACHE=str(tmp_path / 'cache'),
               PATH=f'{bin_dir}:{os.environ["PATH"]}')
    env.pop('VHEAT_MM_TORCH', None)
    done = subprocess.run(['bash', str(repo / 'tools/setup_env.sh')], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f'[setup] torch 2.14.1 and its CUDA libraries need about 7 GB in {repo}/.venv; its file '
        f'system has 1 GB free: free some space and run this again')
    assert not list((repo / '.venv/lib').glob('python*/site-packages/torch'))
