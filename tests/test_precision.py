"""Mixed precision: the network under torch.autocast.

Errors are relative Frobenius errors |out - ref| / |ref| against the float32 model on the same
input (inputs and weights fixed by the seed of conftest.py). The figures in the comments were
measured on CPU (2 threads) with torch 2.14.1; each bound is about twice the measured figure.

What runs in float32 under autocast, and why (measured):
- decay ** k (k = ReLU(Linear(freq_embed))): always float32. With k from a bfloat16 linear it
  is 1.2e-3 off overall and up to 9% off at single high frequencies; it costs nothing (one small
  linear per block, and cached outside training).
- the DCT / IDCT matmuls: in the autocast dtype by default (the GEMMs accumulate in float32;
  the product with the float32 attenuation is float32 by promotion). Running the whole heat
  conduction in float32 (``HeatConductionOperator.float32_transforms = True``) cuts the HCO's
  own error from 5e-3..7.5e-3 to 2.3e-3 (the bfloat16 rounding of its input and output), but the
  network's error, dominated by the bfloat16 linears and convolutions, does not move beyond its
  spread (MINI logits 8.3e-3 vs 8.7e-3 with float32 transforms, vHeat-T 5.9e-3 vs 5.7e-3), and
  it slows the CPU forward pass (the float32 transform pair is the slower one).
- cached tensors (bases, decay maps, resized freq_embed, folded decay ** k): float32 buffers,
  built with autocast off.
"""
import pytest
import torch

from helpers import MINI, MINI_POST, as_tuple, rel_error
from vheat_mm.models import HeatConductionOperator, VHeat, VHeatFeatures
from vheat_mm.models.heat import dct_basis, heat_conduction, heat_decay_map

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')


def autocast_errors(model, x, device_type='cpu', dtype=torch.bfloat16):
    with torch.no_grad():
        ref = as_tuple(model(x))
        with torch.autocast(device_type, dtype=dtype):
            out = as_tuple(model(x))
    for o in out:
        assert torch.isfinite(o).all()
    return [rel_error(o, r) for o, r in zip(out, ref)]


def build(cls, arch, img_size, deploy, device='cpu'):
    model = cls(arch, img_size=img_size).to(device).eval()
    if deploy:
        model.switch_to_deploy()
    return model


def set_float32_transforms(model, value):
    for module in model.modules():
        if isinstance(module, HeatConductionOperator):
            module.float32_transforms = value


# measured (MINI at 64, batch 2), the same in the train form and the deployed form:
#   bfloat16 transforms: VHeat logits 8.3e-3; VHeatFeatures stages 5.8e-3, 7.1e-3, 8.5e-3, 8.9e-3
#   float32 transforms:  VHeat logits 8.7e-3; VHeatFeatures stages 5.8e-3, 7.1e-3, 8.5e-3, 8.5e-3
MINI_BOUND = 2e-2


@pytest.mark.parametrize('float32', [False, True], ids=['bf16_transforms', 'f32_transforms'])
@pytest.mark.parametrize('deploy', [False, True], ids=['train_form', 'deploy'])
@pytest.mark.parametrize('cls', [VHeat, VHeatFeatures])
def test_bf16_autocast_cpu_error_mini(cls, deploy, float32):
    model = build(cls, MINI, 64, deploy)
    set_float32_transforms(model, float32)
    errors = autocast_errors(model, torch.randn(2, 3, 64, 64))
    assert len(errors) == (1 if cls is VHeat else 4)
    assert max(errors) < MINI_BOUND, errors


@pytest.mark.parametrize('cls', [VHeat, VHeatFeatures])
def test_bf16_autocast_cpu_error_tiny_224(cls):
    """vHeat-T at 224, deployed, default (bfloat16) transforms. Measured: logits 5.9e-3;
    stages 6.3e-3, 7.9e-3, 1.07e-2, 1.18e-2 (the train form gives the same figures)."""
    errors = autocast_errors(build(cls, 'tiny', 224, True), torch.randn(2, 3, 224, 224))
    assert max(errors) < 2.5e-2, errors


@pytest.mark.parametrize('n,c', [(16, 8), (56, 96), (7, 768)])
def test_float32_transforms_reduce_the_hco_error(n, c):
    """heat_conduction on a bfloat16 input under autocast, against float32 on the same values.

    Measured: float32 transforms 2.3e-3 at every size (the bfloat16 rounding of input and
    output), bfloat16 transforms 5.8e-3 (16x16x8), 5.3e-3 (56x56x96), 7.5e-3 (7x7x768).
    """
    u = torch.randn(4, n, n, c)
    attenuation = heat_decay_map(n, n)[..., None] ** (2 * torch.rand(n, n, c))
    basis = dct_basis(n)
    ref = heat_conduction(u, basis, basis, attenuation)
    errors = {}
    with torch.autocast('cpu', dtype=torch.bfloat16):
        for float32 in (True, False):
            out = heat_conduction(u.bfloat16(), basis, basis, attenuation, float32=float32)
            assert out.dtype == torch.bfloat16
            errors[float32] = rel_error(out, ref)
    assert errors[True] < 4e-3, errors
    assert errors[True] < 0.6 * errors[False], errors


def test_float32_transforms_switch_and_no_effect_without_autocast():
    model = VHeat(MINI_POST, img_size=64, num_classes=4).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        set_float32_transforms(model, True)
        torch.testing.assert_close(model(x), ref, rtol=0, atol=0)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert torch.isfinite(model(x)).all()


def test_attenuation_is_float32_under_autocast():
    """k = ReLU(Linear(freq_embed)) and decay ** k are computed in float32 also in training
    under autocast. With k from a bfloat16 linear, decay ** k was measured 1.2e-3 off overall and
    up to 9% off at single high frequencies (decay ** k = exp(k log decay), log decay ~ -20)."""
    model = VHeat(MINI, img_size=64).train()
    op = model.layers[0][0].op
    ctx = model.heat_context(0, 16, 16, model.freq_embed[0])
    ref = op.attenuation(ctx)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = op.attenuation(ctx)
    assert out.dtype == torch.float32 and out.requires_grad
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize('deploy', [False, True], ids=['eval', 'deploy'])
def test_autocast_reuses_the_float32_caches(deploy):
    """Bases, decay maps, resized freq_embed and decay ** k stay float32 buffers: autocast calls
    neither rebuild nor duplicate them, and caches first built under autocast are the float32
    ones, so float32 results stay bit-for-bit the same."""
    x = torch.randn(1, 3, 96, 80)
    model = build(VHeatFeatures, MINI, 64, deploy)
    with torch.no_grad():
        ref = model(x)
    buffers = dict(model.named_buffers())
    assert buffers and all(b.dtype == torch.float32 for b in buffers.values())
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        model(x)
        model(x)
    after = dict(model.named_buffers())
    assert after.keys() == buffers.keys()
    assert all(after[name] is buf for name, buf in buffers.items())

    fresh = build(VHeatFeatures, MINI, 64, False)
    fresh.load_state_dict(model.state_dict())
    if deploy:
        fresh.switch_to_deploy()
    with torch.no_grad():
        with torch.autocast('cpu', dtype=torch.bfloat16):
            fresh(x)  # builds the caches at 96x80 under autocast
        out = fresh(x)
    fresh_buffers = dict(fresh.named_buffers())
    assert fresh_buffers.keys() == buffers.keys()
    for name, buf in buffers.items():
        assert torch.equal(fresh_buffers[name], buf), name
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize('cls', [VHeat, VHeatFeatures])
@pytest.mark.parametrize('arch', [MINI, MINI_POST], ids=['prenorm', 'postnorm'])
def test_backward_under_autocast(cls, arch):
    """Training step under bfloat16 autocast: every parameter gets a finite float32 gradient.
    Measured relative error of all gradients together against float32: 9.3e-3 to 1.3e-2."""
    model = cls(arch, img_size=64).train()
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for enabled in (False, True):
        model.zero_grad()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=enabled):
            outs = as_tuple(model(x))
            weights = torch.Generator().manual_seed(1)
            loss = sum((o.float() * torch.randn(o.shape, generator=weights)).sum() for o in outs)
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, grad in grads[1].items():
        assert grad is not None and grad.dtype == torch.float32, name
        assert torch.isfinite(grad).all() and grad.any(), name
    flat = [torch.cat([g.flatten() for g in gs.values()]) for gs in grads]
    assert rel_error(flat[1], flat[0]) < 3e-2


@CUDA
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('deploy', [False, True], ids=['train_form', 'deploy'])
@pytest.mark.parametrize('cls', [VHeat, VHeatFeatures])
def test_autocast_cuda(cls, deploy, dtype):
    """The CPU bfloat16 bound holds on CUDA too: float16 rounds 8 times finer than bfloat16."""
    model = build(cls, MINI, 64, deploy, device='cuda')
    x = torch.randn(2, 3, 64, 64, device='cuda')
    assert max(autocast_errors(model, x, 'cuda', dtype)) < MINI_BOUND
    model = build(cls, MINI, 64, False, device='cuda').train()
    with torch.autocast('cuda', dtype=dtype):
        loss = sum(o.float().square().mean() for o in as_tuple(model(x)))
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
