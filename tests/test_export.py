"""Graph capture of the plain models: FX symbolic tracing (``torch.fx.symbolic_trace``,
torchvision's ``create_feature_extractor``), ``torch.export`` at a fixed size and with dynamic
H and W, and TorchScript, which is refused with a pointer to torch.export.
"""
import pytest
import torch
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from helpers import MINI, MINI_POST, as_tuple
from vheat_mm import compat
from vheat_mm.models import HeatConductionOperator, VHeat, VHeatFeatures
from vheat_mm.models.layers import call_module

ARCHS = pytest.mark.parametrize('arch', [MINI, MINI_POST], ids=['prenorm', 'postnorm'])
MODELS = pytest.mark.parametrize('cls', [VHeat, VHeatFeatures])


def assert_same(out, ref, **tol):
    out, ref = as_tuple(out), as_tuple(ref)
    assert len(out) == len(ref)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, **tol)


@MODELS
@ARCHS
def test_symbolic_trace_matches_eager_in_eval_and_training(cls, arch):
    model = cls(arch, img_size=64).eval()
    graph = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert_same(graph(x), model(x), rtol=0, atol=0)
    model.train()
    graph = torch.fx.symbolic_trace(model)
    sum(o.sum() for o in as_tuple(graph(x))).backward()
    traced = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    sum(o.sum() for o in as_tuple(model(x))).backward()
    assert traced.keys() == {name for name, p in model.named_parameters() if p.grad is not None}
    for name, p in model.named_parameters():
        torch.testing.assert_close(traced[name], p.grad, msg=name)


def test_the_hco_and_the_kernel_dispatch_are_one_node_each():
    model = VHeat(MINI, img_size=64)
    graph = torch.fx.symbolic_trace(model).graph
    hco = [node for node in graph.nodes if node.target is call_module]
    assert len(hco) == len(model.blocks())
    assert all(isinstance(model.get_submodule(node.args[0].target), HeatConductionOperator)
               for node in hco)
    norms = [node for node in graph.nodes if getattr(node.target, '__name__', '') == 'layer_norm']
    assert len(norms) == 2 + 2 * len(model.blocks()) + 3 + 1  # stem, blocks, downsamples, head


def test_feature_extractor_returns_the_values_of_eager_hooks():
    """Traced steps never overwrite a node's value: the HCO's output, which eager code would
    overwrite with the residual sum where no hook watches, comes back as a hook sees it."""
    model = VHeat(MINI, img_size=64).eval()
    extractor = create_feature_extractor(model, return_nodes={
        'layers.1.0.op.call_module': 'hco', 'layers.1.0.add_1': 'block', 'classifier.3': 'logits'})
    seen = {}
    model.layers[1][0].op.register_forward_hook(lambda m, i, out: seen.update(hco=out.clone()))
    model.layers[1][0].register_forward_hook(lambda m, i, out: seen.update(block=out.clone()))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = extractor(x)
        seen['logits'] = model(x)
    assert features.keys() == seen.keys()
    for name, value in seen.items():
        torch.testing.assert_close(features[name], value, rtol=0, atol=0, msg=name)


def test_readme_feature_extractor_line_on_vheat_tiny():
    model = VHeat('tiny', img_size=64).eval()
    assert {'layers.2.5.add_1', 'classifier.3'} <= set(get_graph_node_names(model)[1])
    extractor = create_feature_extractor(
        model, return_nodes={'layers.2.5.add_1': 'stage2', 'classifier.3': 'logits'})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = extractor(x)
        torch.testing.assert_close(features['stage2'], model.forward_stages(x)[2], rtol=0, atol=0)
        torch.testing.assert_close(features['logits'], model(x), rtol=0, atol=0)


def exportable(cls, deploy):
    model = cls(MINI, img_size=64).eval()
    if deploy:
        model.switch_to_deploy()
    return model


@MODELS
@pytest.mark.parametrize('deploy', [False, True], ids=['eval', 'deploy'])
def test_torch_export_at_a_fixed_size(cls, deploy):
    model = exportable(cls, deploy)
    buffers = dict(model.named_buffers()).keys()
    x = torch.randn(2, 3, 64, 96)
    fixed = torch.export.export(model, (x,)).module()
    assert dict(model.named_buffers()).keys() == buffers  # exporting stored nothing
    with torch.no_grad():
        assert_same(fixed(x), model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not compat.has('dynamic_export'), reason=compat.needs_message('dynamic_export'))
@MODELS
@pytest.mark.parametrize('deploy', [False, True], ids=['eval', 'deploy'])
def test_torch_export_with_dynamic_h_and_w(cls, deploy):
    from torch.export import Dim
    model = exportable(cls, deploy)
    buffers = dict(model.named_buffers()).keys()
    x = torch.randn(2, 3, 64, 96)
    sizes = dict(x={2: 32 * Dim('h', min=2, max=16), 3: 32 * Dim('w', min=2, max=16)})
    dynamic = torch.export.export(model, (x,), dynamic_shapes=sizes).module()
    assert dict(model.named_buffers()).keys() == buffers  # exporting stored nothing
    with torch.no_grad():
        for h, w in [(64, 96), (64, 64), (160, 96), (128, 224)]:
            y = torch.randn(2, 3, h, w)
            assert_same(dynamic(y), model(y), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('trace', [False, True], ids=['model', 'fx_graph'])
def test_torchscript_is_refused_with_a_pointer_to_torch_export(trace):
    model = VHeat(MINI, img_size=64)
    with pytest.raises(RuntimeError, match=r'TorchScript .*torch\.export\.export'):
        torch.jit.script(torch.fx.symbolic_trace(model) if trace else model)
