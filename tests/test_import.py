"""Importing the plain model costs little and changes nothing: no toolbox, no timm, no hook.

Each check runs in a fresh interpreter, where nothing has been imported yet.
"""
import json
import subprocess
import sys
import textwrap

import pytest

from helpers import ROOT

TOOLBOXES = ('mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmpretrain', 'timm')


def run_fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter with the repository first on sys.path; it prints one
    JSON object, returned here."""
    done = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('module', ['vheat_mm.models', 'vheat_mm.kernels', 'vheat_mm.checkpoint',
                                    'vheat_mm'])
def test_the_plain_model_imports_torch_alone_and_changes_no_global_state(module):
    found = run_fresh(f'''
        import json, logging, sys
        hook, meta_path = sys.excepthook, list(sys.meta_path)
        import torch
        import {module}
        from vheat_mm.models import VHeat
        VHeat('tiny')(torch.randn(1, 3, 224, 224))
        print(json.dumps(dict(
            toolboxes=sorted(m for m in sys.modules if m.split('.')[0] in {TOOLBOXES!r}),
            excepthook=sys.excepthook is hook, meta_path=sys.meta_path == meta_path,
            handlers=len(logging.getLogger('vheat_mm').handlers))))
    ''')
    assert found == dict(toolboxes=[], excepthook=True, meta_path=True, handlers=0)


def test_importing_the_model_costs_a_fraction_of_importing_torch():
    found = run_fresh('''
        import json, time
        start = time.perf_counter()
        import torch
        middle = time.perf_counter()
        import vheat_mm.models
        print(json.dumps(dict(torch=middle - start, vheat_mm=time.perf_counter() - middle)))
    ''')
    assert found['vheat_mm'] < 0.5 * found['torch'], found


def test_with_mmengine_imported_vheat_mm_registers_as_a_config_imports_it():
    """What ``custom_imports=dict(imports=['vheat_mm'])`` does: mmengine is imported first."""
    pytest.importorskip('mmdet')
    found = run_fresh('''
        import json, sys
        hook = sys.excepthook
        import mmengine
        import vheat_mm
        from mmdet.registry import MODELS
        from mmengine.runner.checkpoint import CheckpointLoader
        print(json.dumps(dict(registered=list(vheat_mm.REGISTERED_INTO),
                              names=[n for n in ('vHeat', 'MMDET_VHEAT') if n in MODELS],
                              loader=CheckpointLoader._schemes[''].__module__,
                              excepthook=sys.excepthook is hook)))
    ''')
    assert found['registered'] == ['mmpretrain', 'mmdet', 'mmseg']
    assert found['names'] == ['vHeat', 'MMDET_VHEAT']
    assert found['loader'].startswith('vheat_mm.')
    assert found['excepthook']
