"""vheat_mm.compat: the facts about torch versions, asked the same way on every torch (2.1 on).

The suite's torch 2.1 part (``make test-torch21``) runs this file too, so each answer is
checked on the oldest torch and on the newest.
"""
import subprocess
import sys
import types
import warnings

import pytest
import torch

from helpers import MINI, ROOT
from vheat_mm import compat
from vheat_mm.kernels import Route, dispatch, kernel_switches, route
from vheat_mm.models import VHeat


def test_release_of_version_strings():
    assert compat._release('2.1.2+cu121') == (2, 1)
    assert compat._release('2.14.0a0+git1234') == (2, 14)
    with pytest.raises(ValueError, match="'nightly'"):
        compat._release('nightly')
    assert compat.TORCH >= compat.MIN_TORCH


@pytest.mark.parametrize('feature', sorted(compat.FEATURES))
def test_a_feature_is_refused_in_one_line_naming_its_torch(feature, monkeypatch):
    needed = compat.FEATURES[feature]
    monkeypatch.setattr(compat, 'TORCH', (needed.torch[0], needed.torch[1] - 1))
    assert not compat.has(feature)
    with pytest.raises(RuntimeError) as err:
        compat.require(feature)
    message = str(err.value)
    assert '\n' not in message
    assert message.startswith(f'{needed.what} needs torch >= {needed.torch[0]}.{needed.torch[1]}')
    assert message.endswith(f'this is torch {torch.__version__}')
    monkeypatch.setattr(compat, 'TORCH', needed.torch)
    assert compat.has(feature)
    compat.require(feature)


def test_autocast_enabled_per_device_type():
    assert not compat.autocast_enabled('cpu')
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert compat.autocast_enabled('cpu')
        assert not compat.autocast_enabled('cuda')
    with torch.autocast('cpu', enabled=False):
        assert not compat.autocast_enabled('cpu')


def test_is_compiling_inside_torch_compile_only():
    from torch._dynamo.testing import CompileCounter
    torch._dynamo.reset()

    def step(x):
        return x + 1 if compat.is_compiling() else x - 1
    x = torch.zeros(2)
    assert not compat.is_compiling()
    assert torch.equal(step(x), x - 1)
    assert torch.equal(torch.compile(step, backend=CompileCounter(), fullgraph=True)(x), x + 1)
    torch._dynamo.reset()


def test_load_state_dict_pre_hook_sees_the_module_and_prefix():
    seen = []
    outer = torch.nn.Sequential(torch.nn.Linear(2, 2))
    compat.register_load_state_dict_pre_hook(
        outer[0], lambda module, state_dict, prefix, *rest: seen.append((module, prefix)))
    outer.load_state_dict(outer.state_dict())
    assert seen == [(outer[0], '0.')]


def test_without_the_kernels_every_route_is_eager_and_a_cuda_call_warns_once(monkeypatch):
    """On a torch older than the kernels' (compat.FEATURES), route() takes the reference, and
    the first call that would have run a kernel on a GPU says so in one line."""
    needed = compat.FEATURES['kernels'].torch
    monkeypatch.setattr(compat, 'TORCH', (needed[0], needed[1] - 1))
    monkeypatch.setattr(dispatch, '_warned_old_torch', False)
    monkeypatch.setattr(dispatch, 'HAVE_TRITON', True)
    monkeypatch.setattr(dispatch, 'INTERPRET', True)
    x = torch.randn(2, 4, 4, 16, dtype=torch.bfloat16)
    with kernel_switches(cpu_interpreter=True), warnings.catch_warnings():
        warnings.simplefilter('error')  # a CPU tensor never warns
        for name in dispatch.KERNELS:
            assert route(name, x) is Route.EAGER
    cuda_like = types.SimpleNamespace(is_cuda=True)
    with pytest.warns(UserWarning) as caught:
        assert not dispatch._kernels_on_this_torch(cuda_like)
        assert not dispatch._kernels_on_this_torch(cuda_like)
    assert len(caught) == 1
    line = str(caught[0].message)
    assert '\n' not in line and line.startswith(compat.needs_message('kernels'))


def test_model_imports_and_runs_without_the_kernels(monkeypatch):
    """The model in bfloat16 gives the same logits whether the kernels are switched off or
    missing from this torch."""
    model = VHeat(MINI, img_size=64).eval().to(torch.bfloat16)
    x = torch.randn(1, 3, 64, 64, dtype=torch.bfloat16)
    with torch.no_grad(), kernel_switches(norm=False, linear_gelu=False, dwconv=False,
                                          attenuate=False):
        switched_off = model(x)
    needed = compat.FEATURES['kernels'].torch
    monkeypatch.setattr(compat, 'TORCH', (needed[0], needed[1] - 1))
    with torch.no_grad(), kernel_switches(cpu_interpreter=True):
        assert torch.equal(model(x), switched_off)


def test_an_older_torch_is_refused_at_import_in_one_line():
    code = ("import torch; torch.__version__ = '2.0.1'\n"
            "try:\n    import vheat_mm\nexcept ImportError as err:\n    print(err)")
    done = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == 'vheat_mm needs torch >= 2.1; this is torch 2.0.1\n'
