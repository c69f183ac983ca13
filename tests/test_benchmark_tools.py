"""Smoke tests of the benchmark tools (tools/analysis_tools/benchmark.py, kernel_ablation.py,
dct_methods.py): each runs on the CPU at tiny sizes, and its report is read back.

The official competitor is covered where ``VHEAT_OFFICIAL_CHECKOUT`` names a checkout of github
MzeroMiko/vHeat (skipped without one).
"""
import importlib.util
import json
import math
import os
import re
import statistics
from pathlib import Path

import pytest

from helpers import MINI, python_tool
from vheat_mm.kernels.dispatch import SWITCH_NAMES

CHECKOUT = Path(os.environ.get('VHEAT_OFFICIAL_CHECKOUT', '/nonexistent'))
MINI_JSON = json.dumps(dict(MINI, depths=list(MINI['depths'])))
MINI_NAME = json.dumps(json.loads(MINI_JSON), separators=(',', ':'))  # as the cases name it
ONE_THREAD = {'OMP_NUM_THREADS': '1'}  # shared cores: more threads only slow a tiny model down
QUICK = ('--threads', '1', '--rounds', '2', '--warmup', '1', '--round-seconds', '0.01')
BENCHMARK_COLUMNS = ('case', 'model', 'speed', 'ratio', 'memory', 'calls')


def needs(*packages: str):
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    return pytest.mark.skipif(bool(missing), reason=f'needs {", ".join(missing)}')


def cells(line: str) -> list[str]:
    """The cells of a markdown table row."""
    assert line.startswith('| ') and line.endswith('|'), line
    return [cell.strip() for cell in line[1:-1].split('|')]


def benchmark(out_dir: Path, *args: str) -> tuple[dict, dict, str]:
    """Run benchmark.py; its JSON report, its markdown rows by (case, model), and stdout."""
    done = python_tool('tools/analysis_tools/benchmark.py', '--arch', MINI_JSON, *QUICK,
                       '--out-dir', out_dir, *args, env=ONE_THREAD)
    report = json.loads((out_dir / 'benchmark.json').read_text())
    lines = (out_dir / 'benchmark.md').read_text().splitlines()
    assert lines[0].startswith('Device: CPU') and lines[1] == ''
    assert lines[2:4] == ['| case | model | images/s | vheat_mm / this | peak memory (MiB) | '
                          'ATen calls (syncs) |', '|---|---|---|---|---|---|']
    rows = {}
    for line in lines[4:]:
        row = cells(line)
        assert len(row) == len(BENCHMARK_COLUMNS), line
        rows[row[0], row[1]] = dict(zip(BENCHMARK_COLUMNS, row))
    return report, rows, done.stdout


def results_by_model(report: dict, arch: str, part: str, mode: str) -> dict:
    """The JSON results of one case, by model, in the report's order."""
    return {r['model']: r for r in report['results'] if (r['case']['arch'], r['case']['part'],
                                                         r['case']['mode']) == (arch, part, mode)}


def check_measured(result: dict, row: dict, rounds: int = 2) -> None:
    """A measured model: a speed per round, their median, a peak, and the same in markdown."""
    assert result['skipped'] is None
    assert len(result['images_per_s']) == rounds and min(result['images_per_s']) > 0
    assert result['median_images_per_s'] == statistics.median(result['images_per_s'])
    assert result['peak_memory_mib'] >= 0
    assert row['speed'] == f'{result["median_images_per_s"]:.2f}'
    assert row['memory'] == f'{result["peak_memory_mib"]:.0f}'
    assert result['aten_calls'] > 0 and result['aten_syncs'] >= 0
    assert row['calls'] == f'{result["aten_calls"]} ({result["aten_syncs"]})'


def check_ratio(row: dict, vheat: dict, other: dict) -> None:
    ratio = vheat['median_images_per_s'] / other['median_images_per_s']
    assert row['ratio'] == f'{ratio:.2f}x'


@pytest.mark.parametrize('swin, no_mini_swin, no_tiny_swin', [
    pytest.param('openmmlab', 'Swin has no row for stage widths (8, 16, 32, 64): its heads are '
                 'known for first widths [96, 128]', None,
                 marks=needs('mmpretrain', 'mmdet')),
    pytest.param('timm', 'timm has no Swin with depths (1, 1, 2, 1) and stage widths (8, 16, '
                 "32, 64)", "timm's Swin needs sizes divisible by 224", marks=needs('timm')),
])
def test_benchmark_reports_an_arch_dict_without_swin_as_skipped(tmp_path, swin, no_mini_swin,
                                                                 no_tiny_swin):
    report, rows, stdout = benchmark(
        tmp_path, '--swin', swin, '--cases', 'classifier:deploy:32:1', 'backbone:eval:64x96:1',
        'classifier:train:32:2:models=vheat_mm,swin', 'classifier:eval:32:1:tiny')
    assert report['rounds'] == 2
    assert report['device'].startswith('CPU (') and report['device'].endswith('), 1 threads')
    assert f'--swin {swin}' in report['command']
    names = [(r['case']['part'], r['case']['mode'], r['model']) for r in report['results']]
    assert names == [('classifier', 'deploy', 'vheat_mm'), ('classifier', 'deploy', 'swin'),
                     ('backbone', 'eval', 'vheat_mm'), ('backbone', 'eval', 'swin'),
                     ('classifier', 'train', 'vheat_mm'), ('classifier', 'train', 'swin'),
                     ('classifier', 'eval', 'vheat_mm'), ('classifier', 'eval', 'swin')]
    assert set(rows) == {(f'{arch} {case}', model) for arch, case in [
        (MINI_NAME, 'classifier deploy 32x32 batch 1 f32'),
        (MINI_NAME, 'backbone eval 64x96 batch 1 f32'),
        (MINI_NAME, 'classifier train 32x32 batch 2 f32'),
        ('tiny', 'classifier eval 32x32 batch 1 f32')] for model in ('vheat_mm', 'swin')}
    for part, mode in [('classifier', 'deploy'), ('backbone', 'eval'), ('classifier', 'train')]:
        results = results_by_model(report, MINI_NAME, part, mode)
        case = results['vheat_mm']['case']
        name = f'{MINI_NAME} {part} {mode} {case["height"]}x{case["width"]} ' \
               f'batch {case["batch"]} f32'
        check_measured(results['vheat_mm'], rows[name, 'vheat_mm'])
        assert rows[name, 'vheat_mm']['ratio'] == ''
        assert results['swin']['skipped'] == no_mini_swin
        assert results['swin']['images_per_s'] == [] and results['swin']['median_images_per_s'] \
            is None
        assert rows[name, 'swin'] == dict(case=name, model='swin', speed=f'skipped: {no_mini_swin}',
                                          ratio='', memory='', calls='')
    tiny = results_by_model(report, 'tiny', 'classifier', 'eval')
    row = rows['tiny classifier eval 32x32 batch 1 f32', 'swin']
    if no_tiny_swin is None:
        check_measured(tiny['swin'], row)
        check_ratio(row, tiny['vheat_mm'], tiny['swin'])
    else:
        assert tiny['swin']['skipped'].startswith(no_tiny_swin)
        assert row['speed'] == f'skipped: {tiny["swin"]["skipped"]}'
    assert f'  swin: skipped ({no_mini_swin})' in stdout
    if importlib.util.find_spec('matplotlib'):
        assert (tmp_path / 'benchmark.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.mark.skipif(not CHECKOUT.is_dir(), reason='set VHEAT_OFFICIAL_CHECKOUT to a checkout of '
                                                  'github MzeroMiko/vHeat')
@needs('timm', 'einops', 'mmdet')
def test_benchmark_measures_the_official_code(tmp_path):
    """The official classifier (deploy: infer_mode) and MMDET_VHEAT backbone, which mmdet
    registers beside vheat_mm's names in the same process."""
    report, rows, _ = benchmark(tmp_path, '--official', CHECKOUT, '--swin', 'timm', '--cases',
                                'classifier:deploy:32:1', 'backbone:eval:64x96:1',
                                'backbone:deploy:64x96:1:models=official')
    for part, mode, size in [('classifier', 'deploy', '32x32'), ('backbone', 'eval', '64x96')]:
        results = results_by_model(report, MINI_NAME, part, mode)
        assert list(results) == ['vheat_mm', 'official', 'swin']
        name = f'{MINI_NAME} {part} {mode} {size} batch 1 f32'
        for model in ('vheat_mm', 'official'):
            check_measured(results[model], rows[name, model])
        check_ratio(rows[name, 'official'], results['vheat_mm'], results['official'])
        assert results['swin']['skipped'].startswith('timm has no Swin')
    deploy = results_by_model(report, MINI_NAME, 'backbone', 'deploy')
    assert list(deploy) == ['official']
    assert deploy['official']['skipped'] == ('the official downstream backbone has no deploy '
                                             'form; use eval')


def test_benchmark_refuses_a_bad_arch_dict(tmp_path):
    done = python_tool('tools/analysis_tools/benchmark.py', '--arch', '{"depths": [1], "dim": 8}',
                       '--cases', 'classifier:deploy:32:1', '--out-dir', tmp_path,
                       returncode=2, env=ONE_THREAD)
    assert ("benchmark.py: error: --arch: arch dict: unknown keys ['dim'], missing keys ['dims']"
            in done.stderr)
    assert not list(tmp_path.iterdir())


def ablation_rows(stdout: str) -> dict[str, list[str]]:
    lines = stdout.splitlines()
    start = lines.index('| variant | images/s | vs eager | error vs eager | error vs float32 |')
    assert lines[start + 1] == '|---|---|---|---|---|'
    return {row[0]: row[1:] for row in map(cells, lines[start + 2:])}


def test_kernel_ablation_table(tmp_path):
    """With the kernels unavailable on the CPU (no Triton interpreter), every variant is the
    eager path: the same output, and a row of the table each."""
    done = python_tool('tools/analysis_tools/kernel_ablation.py', '--device', 'cpu', '--arch',
                       MINI_JSON, '--size', '32', '--batch', '2', '--mode', 'eval', '--rounds',
                       '2', '--warmup', '1', '--round-seconds', '0.01',
                       env=dict(ONE_THREAD, TRITON_INTERPRET='0'))
    header = done.stdout.splitlines()[0]
    assert header.startswith(f'vHeat-{json.loads(MINI_JSON)} eval, batch 2 at 32, bf16 '
                             'autocast, CPU')
    assert header.endswith('; median of 2 rounds')
    rows = ablation_rows(done.stdout)
    assert list(rows) == ['all', *(f'-{name}' for name in SWITCH_NAMES), 'eager']
    for name, (speed, ratio, vs_eager, vs_float32) in rows.items():
        assert float(speed) > 0, name
        assert vs_eager == '0.00e+00', name
        assert 0 < float(vs_float32) < 0.1, name  # bfloat16 autocast against float32
    assert rows['eager'][1] == '1.000x'


def test_kernel_ablation_check_passes_every_kernel():
    """--check through Triton's interpreter on the CPU (where Triton is installed): a line per
    kernel, and an empty last line, the failed ones."""
    interpreted = importlib.util.find_spec('triton') is not None
    done = python_tool('tools/analysis_tools/kernel_ablation.py', '--device', 'cpu', '--arch',
                       json.dumps(dict(depths=[1, 1, 1, 1], dims=8)), '--check',
                       env=dict(ONE_THREAD, TRITON_INTERPRET='1' if interpreted else '0'))
    lines = done.stdout.splitlines()
    assert lines[-1] == ''
    assert [line.split(':')[0] for line in lines[:-1]] == list(SWITCH_NAMES)
    for line in lines[:-1]:
        assert re.fullmatch(r'\w+: forward error \S+, gradient error \S+ ok', line), line


def test_dct_methods_table():
    done = python_tool('tools/analysis_tools/dct_methods.py', '--inputs', '32:1', '40x56:2',
                       '--rounds', '2', '--threads', '1', env=ONE_THREAD)
    lines = done.stdout.splitlines()
    assert lines[:2] == ['| input | stage map (B, H, W, C) | axis | matmul ms | fft ms | '
                         'fft / matmul |', '|---|---|---|---|---|---|']
    rows = [cells(line) for line in lines[2:]]
    expected = [(f'{h}x{w} b{b}', f'({b}, {math.ceil(h / 4 / 2**s)}, {math.ceil(w / 4 / 2**s)}, '
                 f'{96 * 2**s})', axis)
                for h, w, b in [(32, 32, 1), (40, 56, 2)] for s in range(4) for axis in 'HW']
    assert [tuple(row[:3]) for row in rows] == expected
    for row in rows:
        matmul, fft, ratio = map(float, row[3:])
        assert matmul >= 0 and fft >= 0 and ratio > 0, row


@needs('mmengine', 'timm')
def test_import_cost_table():
    """One round of every case: a row each, and the toolboxes each import statement brought in
    (submodules count): vheat_mm alone imports none of them; after mmengine it imports
    mmengine's own modules alone (registering), and after every toolbox nothing."""
    done = python_tool('tools/analysis_tools/import_cost.py', '--rounds', '1')
    rows = {(row[0], row[1]): row for row in map(cells, (
        line for line in done.stdout.splitlines() if line.startswith('| import ')))}
    assert len(rows) == 11, done.stdout
    for row in rows.values():
        assert float(row[2]) > 0, row
    assert rows[('import vheat_mm', 'nothing')][5] == 'none'
    assert rows[('import vheat_mm', 'mmengine')][5] == 'mmengine'
    assert rows[('import vheat_mm', 'mmengine, mmcv, mmdet, mmseg, mmpretrain, timm')][5] == 'none'
    assert rows[('import mmengine', 'vheat_mm')][5] == 'mmengine'
    assert rows[('import timm', 'vheat_mm')][5] == 'timm'


def test_import_cost_refuses_zero_rounds():
    done = python_tool('tools/analysis_tools/import_cost.py', '--rounds', '0', returncode=2)
    assert '--rounds must be at least 1, got 0' in done.stderr
