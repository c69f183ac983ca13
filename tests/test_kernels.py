"""The Triton kernels against their eager references.

On a machine without CUDA they run through Triton's interpreter (``TRITON_INTERPRET=1``, set by
conftest.py before Triton is imported); on a GPU they run compiled. Inputs are random with odd
sizes (channel counts that are not powers of two, row counts that are not multiples of a block)
so that masking mistakes show. Float32 checks are tight (same arithmetic, other order); half
types are checked against the float32 reference within their rounding.
"""
from __future__ import annotations

import importlib
import inspect

import pytest
import torch
import torch.nn.functional as F

from helpers import MINI, MINI_POST, as_tuple, rel_error
from vheat_mm import compat
from vheat_mm.kernels import (Route, dispatch, kernel_switches, layer_norm, layer_norm_silu,
                              linear_gelu, residual_layer_norm, route)
from vheat_mm.kernels import attenuate, dwconv, fused_linear, norm
from vheat_mm.models import VHeat, VHeatFeatures

CUDA = torch.cuda.is_available()
DEVICE = 'cuda' if CUDA else 'cpu'
pytestmark = [
    pytest.mark.skipif(not compat.has('kernels'), reason=compat.needs_message('kernels')),
    pytest.mark.skipif(not dispatch.HAVE_TRITON or not (CUDA or dispatch.INTERPRET),
                       reason='needs Triton, and CUDA or TRITON_INTERPRET=1')]
HALF = [torch.bfloat16, torch.float16]


@pytest.fixture(autouse=True)
def _kernels_on_this_device():
    with kernel_switches(cpu_interpreter=True):
        yield


def randn(*shape, dtype=torch.float32):
    return torch.randn(*shape, device=DEVICE, dtype=dtype)


def half_bound(dtype):
    """Relative error of a half-type result against float32: a few units of its rounding."""
    return 1e-2 if dtype == torch.bfloat16 else 2e-3


@pytest.mark.parametrize('channels', [8, 24, 96, 200])
def test_layer_norm_kernels_float32(channels):
    x, z, r = (randn(3, 5, 7, channels) for _ in range(3))
    w, b, gamma = randn(channels), randn(channels), randn(channels)
    ref = F.layer_norm(x, (channels,), w, b, 1e-6)
    y, (mean, rstd) = norm._norm_forward(x, None, w, b, 1e-6, stats=True)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mean, x.mean(-1).flatten())
    torch.testing.assert_close(rstd, torch.rsqrt(x.var(-1, unbiased=False) + 1e-6).flatten())
    torch.testing.assert_close(norm._norm_forward(x, z, w, b, 1e-6)[0], ref * F.silu(z),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm._norm_forward(x, None, w, b, 1e-6, residual=r)[0], r + ref,
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        norm._norm_forward(x, None, w, b, 1e-6, residual=r, gamma=gamma)[0], r + gamma * ref,
        rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('gated', [False, True], ids=['ln', 'ln_silu'])
@pytest.mark.parametrize('channels', [24, 96])
def test_layer_norm_backward_float32(gated, channels):
    """The Triton backward (dx, dz, dweight, dbias) against autograd of the reference."""
    x = randn(4, 9, channels, dtype=torch.float32).requires_grad_()
    z = randn(4, 9, channels).requires_grad_()
    w = randn(channels).requires_grad_()
    b = randn(channels).requires_grad_()
    grad = randn(4, 9, channels)
    inputs = [x, w, b] + ([z] if gated else [])
    out = norm._LayerNormFunction.apply(x, z if gated else None, w, b, 1e-5)
    ref = F.layer_norm(x, (channels,), w, b, 1e-5)
    if gated:
        ref = ref * F.silu(z)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(torch.autograd.grad(out, inputs, grad),
                         torch.autograd.grad(ref, inputs, grad)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('dtype', HALF)
def test_norm_dispatch_half_types(dtype):
    """Through the dispatching functions: kernels chosen, result in the input's dtype, within
    the half type's rounding of the float32 reference; gradients flow in training."""
    x, z, r = (randn(2, 6, 10, 40, dtype=dtype) for _ in range(3))
    w, b, gamma = randn(40), randn(40), randn(40)
    assert route('layer_norm', x) is Route.INFERENCE
    xf, zf, rf = x.float(), z.float(), r.float()
    ref = F.layer_norm(xf, (40,), w, b, 1e-6)
    cases = [(layer_norm(x, w, b, 1e-6), ref),
             (layer_norm_silu(x, z, w, b, 1e-6), ref * F.silu(zf)),
             (residual_layer_norm(r, x, w, b, 1e-6, gamma), rf + gamma * ref)]
    for out, want in cases:
        assert out.dtype == dtype
        assert rel_error(out, want) < half_bound(dtype)
    xg = x.clone().requires_grad_()
    wg = w.clone().requires_grad_()
    layer_norm_silu(xg, z, wg, b, 1e-6).float().square().sum().backward()
    assert xg.grad.dtype == dtype and wg.grad.dtype == torch.float32
    assert torch.isfinite(xg.grad).all() and torch.isfinite(wg.grad).all()


def test_residual_layer_norm_inplace_reuses_the_input():
    r, y = randn(3, 4, 5, 24, dtype=torch.bfloat16), randn(3, 4, 5, 24, dtype=torch.bfloat16)
    w, b = randn(24), randn(24)
    want = residual_layer_norm(r, y.clone(), w, b, 1e-5)
    out = residual_layer_norm(r, y, w, b, 1e-5, inplace=True)
    assert out.data_ptr() == y.data_ptr()
    torch.testing.assert_close(out, want, rtol=0, atol=0)


@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('k,n', [(8, 32), (24, 96), (40, 72)])
def test_linear_gelu_float32(k, n, bias):
    x = randn(3, 7, 5, k)
    w = randn(n, k) / k ** 0.5
    b = randn(n) if bias else None
    out = fused_linear._linear_gelu_triton(x, w, b)
    tol = 5e-3 if CUDA else 1e-4  # on a GPU, Triton's float32 dot rounds its inputs to TF32
    torch.testing.assert_close(out, F.gelu(F.linear(x, w, b)), rtol=tol, atol=tol)


@pytest.mark.parametrize('dtype', HALF)
def test_linear_gelu_dispatch_half_types(dtype):
    x = randn(2, 9, 11, 24, dtype=dtype)
    w = randn(96, 24, 1, 1) / 24 ** 0.5  # the MLP's (out, in, 1, 1) weight, float32
    b = randn(96)
    assert route('linear_gelu', x) is Route.INFERENCE
    with torch.no_grad():
        out = linear_gelu(x, w, b)
    assert out.dtype == dtype and out.shape == (2, 9, 11, 96)
    assert rel_error(out, F.gelu(F.linear(x.float(), w.flatten(1), b))) < half_bound(dtype)


@pytest.mark.parametrize('size', [(1, 1), (1, 9), (7, 1), (5, 19)])
@pytest.mark.parametrize('channels', [8, 24, 136])
def test_depthwise_conv3x3_float32(size, channels):
    x = randn(2, *size, channels)
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, groups=channels).to(DEVICE)
    conv = conv.to(memory_format=torch.channels_last)  # as in the model
    out = dwconv._depthwise_conv3x3_triton(x, conv.weight, conv.bias)
    want = conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('dtype', HALF)
def test_depthwise_conv3x3_dispatch_half_types(dtype):
    x = randn(2, 6, 13, 40, dtype=dtype)
    w, b = randn(40, 1, 3, 3), randn(40)
    with torch.no_grad():
        out = dwconv.depthwise_conv3x3(x, w.to(dtype), b.to(dtype))
    want = F.conv2d(x.float().permute(0, 3, 1, 2), w, b, padding=1, groups=40)
    assert out.dtype == dtype
    assert rel_error(out, want.permute(0, 2, 3, 1)) < half_bound(dtype)


def test_float32_and_disabled_switches_take_the_eager_path():
    x = randn(2, 4, 4, 16)
    assert route('layer_norm', x) is Route.EAGER
    with kernel_switches(norm=False):
        assert route('layer_norm', x.bfloat16()) is Route.EAGER
    assert route('layer_norm', x.bfloat16()) is Route.INFERENCE
    with pytest.raises(TypeError, match='unknown kernel switch'):
        with kernel_switches(nrom=False):
            pass


@pytest.mark.parametrize('cls,arch,deploy', [
    (VHeatFeatures, MINI, False), (VHeatFeatures, MINI_POST, True), (VHeat, MINI_POST, False)],
    ids=['features-prenorm-eval', 'features-postnorm-deploy', 'classifier-postnorm-eval'])
def test_model_with_kernels_matches_eager_bf16(cls, arch, deploy):
    """The whole network in bfloat16: every kernel on against every kernel off."""
    model = cls(arch, img_size=64).to(DEVICE).eval()
    if deploy:
        model.switch_to_deploy()
    model = model.to(torch.bfloat16)
    x = randn(2, 3, 64, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        fast = as_tuple(model(x))
        with kernel_switches(norm=False, linear_gelu=False, dwconv=False):
            eager = as_tuple(model(x))
    for a, b in zip(fast, eager):
        assert a.dtype == torch.bfloat16
        assert rel_error(a, b) < 3e-2


def test_training_step_with_kernels_matches_eager_bf16():
    """Gradients through the norm and attenuation kernels (the others serve inference only),
    in bfloat16."""
    grads = []
    for enabled in (True, False):
        torch.manual_seed(0)
        model = VHeat(MINI_POST, img_size=64, num_classes=5).to(DEVICE).to(torch.bfloat16)
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)).to(
            DEVICE, torch.bfloat16)
        with kernel_switches(norm=enabled, attenuate=enabled):
            model(x).float().square().sum().backward()
        grads.append(torch.cat([p.grad.float().flatten() for p in model.parameters()]))
    assert torch.isfinite(grads[0]).all()
    assert rel_error(grads[0], grads[1]) < 5e-2


def test_compiled_model_keeps_the_inference_kernels():
    """While torch.compile traces, the inference kernels enter the graph as custom operators
    (one graph, no break) and compute what they compute in eager mode."""
    from torch._dynamo.testing import CompileCounterWithBackend
    torch._dynamo.reset()
    model = VHeat(MINI_POST, img_size=64).to(DEVICE).eval()
    model.switch_to_deploy()
    model = model.to(torch.bfloat16)
    x = randn(2, 3, 64, 64, dtype=torch.bfloat16)
    counter = CompileCounterWithBackend('aot_eager')
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=False)
    with torch.no_grad():
        eager = model(x)
        out = compiled(x)
    assert counter.frame_count == 1
    ops = {str(node.target) for graph in counter.graphs for node in graph.graph.nodes
           if node.op == 'call_function'}
    assert {'vheat_mm.norm_inference.default', 'vheat_mm.linear_gelu.default',
            'vheat_mm.depthwise_conv3x3.default'} <= ops, sorted(ops)
    assert rel_error(out, eager) < 1e-2
    torch._dynamo.reset()


@pytest.mark.parametrize('shape', [(3, 5, 7, 24), (2, 1, 1, 40), (4, 9, 13, 136)])
def test_attenuate_with_grad_float32(shape):
    """spectrum * attenuation and both gradients (the attenuation's summed over the batch)."""
    spectrum = randn(*shape).requires_grad_()
    attenuation = torch.rand(shape[1:], device=DEVICE).requires_grad_()
    grad = randn(*shape)
    out = attenuate._AttenuateFunction.apply(spectrum, attenuation)
    ref = spectrum * attenuation
    torch.testing.assert_close(out, ref)
    for got, want in zip(torch.autograd.grad(out, [spectrum, attenuation], grad),
                         torch.autograd.grad(ref, [spectrum, attenuation], grad)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('dtype', HALF)
def test_attenuate_dispatch_half_types(dtype):
    from vheat_mm.models.heat import attenuate as attenuate_spectrum
    spectrum = randn(2, 6, 10, 24, dtype=dtype).requires_grad_()
    attenuation = torch.rand(6, 10, 24, device=DEVICE).requires_grad_()
    assert route('attenuate_with_grad', spectrum, attenuation) is Route.AUTOGRAD
    out = attenuate_spectrum(spectrum, attenuation)
    assert out.dtype == dtype
    assert rel_error(out, spectrum.float() * attenuation) < half_bound(dtype)
    out.float().sum().backward()
    assert spectrum.grad.dtype == dtype and attenuation.grad.dtype == torch.float32
    torch.testing.assert_close(attenuation.grad, spectrum.float().sum(0), rtol=1e-3, atol=1e-3)


# --- every kernel down every route -------------------------------------------------------------

def _kernel_arguments(name: str) -> tuple:
    """Arguments of a call of kernel ``name`` as the model makes it under bfloat16 autocast:
    bfloat16 activations, float32 parameters (the float32 attenuation for attenuate)."""
    act = dict(dtype=torch.bfloat16)
    if name == 'layer_norm':
        return randn(2, 5, 7, 40, **act), randn(40), randn(40), 1e-6
    if name == 'layer_norm_silu':
        return randn(2, 5, 7, 40, **act), randn(2, 5, 7, 40, **act), randn(40), randn(40), 1e-6
    if name == 'residual_layer_norm':
        return (randn(2, 5, 7, 40, **act), randn(2, 5, 7, 40, **act), randn(40), randn(40), 1e-6,
                randn(40))
    if name == 'linear_gelu':
        return randn(2, 5, 7, 24, **act), randn(96, 24) / 24 ** 0.5, randn(96)
    if name == 'depthwise_conv3x3':
        return randn(2, 6, 13, 40, **act), randn(40, 1, 3, 3), randn(40)
    if name == 'attenuate_with_grad':
        return randn(2, 6, 10, 24, **act), torch.rand(6, 10, 24, device=DEVICE)
    raise AssertionError(f'kernel {name} has no arguments in this test: add them')


def _run_recording_route(name: str, args: tuple, monkeypatch, grad: bool):
    """Call kernel ``name`` under bfloat16 autocast; returns its output, the gradients of its
    tensor arguments (with ``grad``) and the route it took."""
    from vheat_mm import kernels
    function = getattr(kernels, name)
    module = importlib.import_module(function.__module__)
    taken = []

    def recording_route(*a, **kw):
        taken.append(dispatch.route(*a, **kw))
        return taken[-1]
    monkeypatch.setattr(module, 'route', recording_route)
    args = tuple(a.detach().clone().requires_grad_(grad) if isinstance(a, torch.Tensor) else a
                 for a in args)
    with torch.autocast(DEVICE, dtype=torch.bfloat16), torch.set_grad_enabled(grad):
        out = function(*args)
    grads = ()
    if grad:
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        grads = torch.autograd.grad(out.float().square().sum(), tensors)
    monkeypatch.undo()
    assert len(taken) == 1, f'{name} asked route() {len(taken)} times'
    return out, grads, taken[0]


@pytest.mark.parametrize('name', sorted(dispatch.KERNELS))
def test_each_kernel_agrees_on_its_eager_inference_and_autograd_routes(name, monkeypatch):
    """Every kernel of dispatch.KERNELS, called as the model calls it, takes the route that
    dispatch.route decides (the eager reference with its switch off, the inference kernel
    without gradients, the autograd kernels or the reference with them), and the routes agree
    on the output and the gradients."""
    switch, backward = dispatch.KERNELS[name]
    args = _kernel_arguments(name)
    with kernel_switches(**{switch: False}):
        eager, eager_grads, path = _run_recording_route(name, args, monkeypatch, grad=True)
        assert path is Route.EAGER
        eager_no_grad, _, path = _run_recording_route(name, args, monkeypatch, grad=False)
        assert path is Route.EAGER
    inference, _, path = _run_recording_route(name, args, monkeypatch, grad=False)
    assert path is Route.INFERENCE
    trained, grads, path = _run_recording_route(name, args, monkeypatch, grad=True)
    assert path is (Route.AUTOGRAD if backward else Route.EAGER)
    for out in (eager_no_grad, inference, trained):
        assert out.dtype == eager.dtype and out.shape == eager.shape
        assert rel_error(out, eager) < half_bound(torch.bfloat16)
    for got, want in zip(grads, eager_grads):
        assert got.dtype == want.dtype
        assert rel_error(got, want) < 2 * half_bound(torch.bfloat16)


def test_kernels_lists_every_public_kernel_function():
    """dispatch.KERNELS names exactly the public functions of vheat_mm.kernels that run a
    kernel (those defined outside dispatch)."""
    from vheat_mm import kernels
    public = {name for name in kernels.__all__ if inspect.isfunction(getattr(kernels, name))
              and getattr(kernels, name).__module__ != dispatch.__name__}
    assert public == set(dispatch.KERNELS)
    assert {k.switch for k in dispatch.KERNELS.values()} == set(dispatch.SWITCH_NAMES)
