"""Importing the plain model costs little and changes nothing: no toolbox, no timm, no hook.

Each check runs in a fresh interpreter, where nothing has been imported yet.
"""
import pytest

from helpers import run_fresh

TOOLBOXES = ('mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmpretrain', 'timm')


@pytest.mark.parametrize('module', ['vheat_mm.models', 'vheat_mm.kernels', 'vheat_mm.checkpoint',
                                    'vheat_mm'])
def test_the_plain_model_imports_torch_alone_and_changes_no_global_state(module):
    """Nothing but torch is imported and nothing is installed, except one finder on
    sys.meta_path while mmengine or timm are installed but not imported (vheat_mm.plugin): it
    leaves once they are, sys.meta_path then as it was."""
    found = run_fresh(f'''
        import importlib.util, json, logging, sys
        hook, meta_path = sys.excepthook, list(sys.meta_path)
        import torch
        import {module}
        from vheat_mm.models import VHeat
        VHeat('tiny')(torch.randn(1, 3, 224, 224))
        added = [f for f in sys.meta_path if f not in meta_path]
        hosts = [h for h in ('mmengine', 'timm') if importlib.util.find_spec(h) is not None]
        state = dict(
            toolboxes=sorted(m for m in sys.modules if m.split('.')[0] in {TOOLBOXES!r}),
            excepthook=sys.excepthook is hook, handlers=len(logging.getLogger('vheat_mm').handlers),
            added=[type(f).__module__ for f in added],
            waits_for=list(vheat_mm.plugin.pending_hosts()) == hosts)
        for host in hosts:
            __import__(host)
        state['meta_path_after_hosts'] = sys.meta_path == meta_path
        print(json.dumps(state))
    ''')
    assert found == dict(toolboxes=[], excepthook=True, handlers=0, added=['vheat_mm.plugin'],
                         waits_for=True, meta_path_after_hosts=True)


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


def test_with_mmengine_imported_vheat_mm_registers_and_replaces_nothing():
    """What ``custom_imports=dict(imports=['vheat_mm'])`` does: mmengine is imported first.
    vHeat is in mmengine's root registries; mmengine's functions, its checkpoint loaders and
    torch's weights_only allowlist are as they were."""
    pytest.importorskip('mmdet')
    found = run_fresh('''
        import json, sys
        import torch
        hook = sys.excepthook
        import mmengine.runner.checkpoint as checkpoint
        from mmengine.runner.checkpoint import CheckpointLoader
        functions = {name: getattr(checkpoint, name) for name in dir(checkpoint)
                     if callable(getattr(checkpoint, name))}
        schemes = dict(CheckpointLoader._schemes)
        get_loader = CheckpointLoader.__dict__['_get_checkpoint_loader']
        import vheat_mm
        from mmdet.registry import MODELS
        from mmengine.registry import RUNNERS
        print(json.dumps(dict(
            registered=vheat_mm.mm.REGISTERED['model'],
            names=[n for n in ('vHeat', 'MMDET_VHEAT') if n in MODELS],
            runner='VHeatRunner' in RUNNERS,
            functions=all(getattr(checkpoint, k) is v for k, v in functions.items()),
            schemes=CheckpointLoader._schemes == schemes,
            get_loader=CheckpointLoader.__dict__['_get_checkpoint_loader'] is get_loader,
            # what torch's own modules add to the list when imported is torch's
            allowlist=[str(g) for g in getattr(torch.serialization, 'get_safe_globals', list)()
                       if str(getattr(g[0] if isinstance(g, tuple) else g, '__module__', '')
                              ).split('.')[0] in ('vheat_mm', 'mmengine', 'numpy', 'yacs')],
            excepthook=sys.excepthook is hook)))
    ''')
    assert found == dict(registered=['vHeat', 'MMDET_VHEAT', 'MMSEG_VHEAT'],
                         names=['vHeat', 'MMDET_VHEAT'], runner=True, functions=True,
                         schemes=True, get_loader=True, allowlist=[], excepthook=True)
