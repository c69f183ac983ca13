"""The in-place rule of vheat_mm.models.layers: every branch returns a fresh tensor, updating
in place gives the values of the out-of-place computation, and a branch that returns its input
(or a view of it) is caught by may_overwrite instead of overwriting the residual stream.

Also: every module holding parameters runs its own forward, so forward hooks on it fire.
"""
import pytest
import torch
from torch import nn

from helpers import MINI, MINI_POST
from vheat_mm.models import HeatConductionOperator, VHeat, VHeatFeatures
from vheat_mm.models.layers import (DepthwiseConv3x3, GatedLayerNorm, LayerNorm, Mlp,
                                    PointwiseConv, PointwiseLinear)
from vheat_mm.policy import may_overwrite
from vheat_mm.models.blocks import HeatBlock

MINI_SCALED = dict(MINI, layer_scale=0.5)  # pre-norm with layer scale
ARCHS = {'pre_norm': MINI, 'pre_norm_scaled': MINI_SCALED, 'post_norm': MINI_POST}
# Modules whose outputs the next step may overwrite (the in-place rule's branches).
BRANCHES = (LayerNorm, PointwiseLinear, PointwiseConv, DepthwiseConv3x3, HeatConductionOperator,
            Mlp, HeatBlock)


def tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in tensors(v)]
    return []


def storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def build(arch, cls=VHeat):
    model = cls(arch, img_size=64)
    with torch.no_grad():  # branches of the residual's order, so that an error shows
        for p in model.parameters():
            p.normal_(std=0.5)
    return model.eval()


@pytest.mark.parametrize('arch', list(ARCHS))
def test_every_branch_returns_a_fresh_tensor(arch):
    """No branch output shares storage with the branch's inputs, a parameter or a buffer."""
    model = build(ARCHS[arch])
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))  # fills the caches: the second forward reads them
    held = {storage(t) for t in (*model.parameters(), *model.buffers())}
    checked, stale = [], []

    def check(module, args, output):
        inputs = {storage(t) for t in tensors(args)}
        for out in tensors(output):
            checked.append(type(module).__name__)
            if storage(out) in inputs | held:
                stale.append(type(module).__name__)

    for module in model.modules():
        if isinstance(module, BRANCHES):
            module.register_forward_hook(check)
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert {'SplitPointwiseLinear', 'PointwiseLinear', 'PointwiseConv', 'GatedLayerNorm',
            'HeatConductionOperator', 'Mlp', 'HeatBlock'} <= set(checked)
    assert not stale, f'branches returned tensors they did not make: {stale}'


@pytest.mark.parametrize('cls', [VHeat, VHeatFeatures])
@pytest.mark.parametrize('arch', list(ARCHS))
def test_inplace_forward_equals_the_out_of_place_one(arch, cls):
    """no_grad (in place where the rule allows) == autograd recording (never in place),
    bit for bit, in evaluation and in training with drop_path."""
    model = build(ARCHS[arch], cls)
    x = torch.randn(2, 3, 64, 96)
    for training in (False, True):
        model.train(training)
        model.layers[2][0].drop_path = 0.5 if training else 0.0
        torch.manual_seed(1)
        with torch.no_grad():
            inplace = tensors(model(x))
        torch.manual_seed(1)
        reference = tensors(model(x))
        assert all(r.requires_grad for r in reference)
        for out, ref in zip(inplace, reference):
            torch.testing.assert_close(out, ref, rtol=0, atol=0)


def returns_input(t):
    return t


def returns_view(t):
    return t.view(t.shape)


@pytest.mark.parametrize('branch', [returns_input, returns_view], ids=['input', 'view'])
def test_a_branch_that_returns_its_input_is_not_overwritten(branch):
    """A pre-norm block whose norm and MLP hand x through: y is x (or a view of it). Writing
    gamma * y + x into y would give 2 gamma x; may_overwrite sends it out of place: x + gamma x."""
    model = build(MINI_SCALED)
    for block in model.blocks():
        block.norm2 = nn.Identity()
        block.mlp.forward = branch
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out, model(x), rtol=0, atol=0)


def test_gate_that_is_the_normed_input_is_not_overwritten():
    """LN(u) * SiLU(z) with z = u: SiLU in z's storage would change u before LN reads it."""
    norm = GatedLayerNorm(8)
    u = torch.randn(2, 4, 4, 8)
    expected = nn.functional.layer_norm(u, (8,), norm.weight, norm.bias) * nn.functional.silu(u)
    with torch.no_grad():
        torch.testing.assert_close(norm(u, u), expected)
        torch.testing.assert_close(norm(u, u[..., :]), expected)


def test_may_overwrite_states_the_rule():
    x = torch.randn(2, 3)
    w = torch.randn(3, requires_grad=True)
    with torch.no_grad():
        assert may_overwrite(x.clone(), x, w)
        assert may_overwrite(None, x, w)  # a tensor the step makes itself
        assert not may_overwrite(x, x)
        assert not may_overwrite(x.view(3, 2), x)
        assert not may_overwrite(x[1], x)
    assert not may_overwrite(x.clone(), x, w)  # autograd records the step
    assert may_overwrite(x.clone(), x)  # autograd enabled, but nothing to record


@pytest.mark.parametrize('arch', list(ARCHS))
@pytest.mark.parametrize('deploy', [False, True], ids=['eval', 'deploy'])
def test_every_module_with_parameters_runs_its_forward(arch, deploy):
    """Forward hooks fire on every module that holds parameters (the HCO's linear and
    out_linear, a post-norm block's norms included), and see the shapes they compute."""
    model = build(ARCHS[arch])
    if deploy:
        model.switch_to_deploy()
        model.clear_caches()  # decay ** k is computed (by to_k) in the next forward
    owners = {name: m for name, m in model.named_modules()
              if next(m.parameters(recurse=False), None) is not None
              and not isinstance(m, nn.ParameterList)}
    fired = {}

    def record(name):
        def hook(module, args, output):
            fired.setdefault(name, tensors(output))
        return hook

    for name, module in owners.items():
        module.register_forward_hook(record(name))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert sorted(fired) == sorted(owners)
    linear, out_linear = fired['layers.0.0.op.linear'], fired['layers.0.0.op.out_linear']
    assert [t.shape for t in linear] == [(1, 16, 16, 8)] * 2  # u and z
    assert [t.shape for t in out_linear] == [(1, 16, 16, 8)]


def stored_by_hooks(model, x, grad: bool, global_hook: bool) -> dict:
    """What forward hooks on every module (or one global hook) store of their outputs, as is."""
    stored, handles = {}, []

    def hook(module, args, output):
        stored.setdefault(id(module), []).extend(tensors(output))

    if global_hook:
        handles.append(torch.nn.modules.module.register_module_forward_hook(hook))
    else:
        handles += [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.set_grad_enabled(grad):
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return {k: [t.detach().clone() for t in v] for k, v in stored.items()}


@pytest.mark.parametrize('global_hook', [False, True], ids=['module_hooks', 'global_hook'])
@pytest.mark.parametrize('arch', list(ARCHS))
def test_what_forward_hooks_store_under_no_grad_keeps_its_value(arch, global_hook):
    """Feature extraction with hooks under no_grad (ERF, CAM, feature tools) sees the values
    that the same hooks see while autograd records, where nothing runs in place."""
    model = build(ARCHS[arch], VHeatFeatures)
    x = torch.randn(1, 3, 64, 64)
    reference = stored_by_hooks(model, x, grad=True, global_hook=global_hook)
    stored = stored_by_hooks(model, x, grad=False, global_hook=global_hook)
    assert stored.keys() == reference.keys()
    changed = [k for k in stored if any(not torch.equal(a, b)
                                        for a, b in zip(stored[k], reference[k]))]
    assert not changed, f'{len(changed)} of {len(stored)} modules\' outputs were overwritten'


def test_without_hooks_the_forward_still_runs_in_place():
    """The rule's point: a no_grad forward with no hook updates in place (fewer allocations)."""
    model = build(MINI, VHeatFeatures)
    calls = []
    original = torch.Tensor.mul_

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    torch.Tensor.mul_ = counting
    try:
        with torch.no_grad():
            model(torch.randn(1, 3, 64, 64))
    finally:
        torch.Tensor.mul_ = original
    assert calls, 'the attenuation was not applied in place'
