"""ONNX: the deployed classifier and backbone export with torch.onnx.export (the torch.export
based exporter, the default since torch 2.9; it needs onnxscript) and onnxruntime reproduces
the eager outputs.

Measured max abs differences against eager (float32, CPUExecutionProvider): MINI logits 2.5e-7,
MINI features 2.1e-6 (values up to 3); vHeat-T logits 6e-7, vHeat-T features 1e-5 (values up to
4.6). Tolerance: rtol 1e-4, atol 5e-5.
"""
import onnx
import onnxruntime as ort
import pytest
import torch

from helpers import MINI, MINI_POST
from vheat_mm import compat
from vheat_mm.models import VHeat, VHeatFeatures

pytestmark = pytest.mark.skipif(not compat.has('onnx_export'),
                                reason=compat.needs_message('onnx_export'))
TOL = dict(rtol=1e-4, atol=5e-5)


def deployed(cls, arch, img_size):
    model = cls(arch, img_size=img_size).eval()
    model.switch_to_deploy()
    return model


def export_and_run(model, x, path):
    program = torch.onnx.export(model, (x,), dynamo=True, input_names=['images'])
    program.save(str(path))
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    outs = session.run(None, {'images': x.numpy()})
    with torch.no_grad():
        ref = model(x)
    ref = (ref,) if isinstance(ref, torch.Tensor) else ref
    assert len(outs) == len(ref)
    for out, expected in zip(outs, ref):
        assert out.shape == tuple(expected.shape)
        torch.testing.assert_close(torch.from_numpy(out), expected, **TOL)
    return onnx.load(str(path))


@pytest.mark.parametrize('arch', [MINI, MINI_POST], ids=['prenorm', 'postnorm'])
def test_classifier_onnx_mini(arch, tmp_path):
    model = export_and_run(deployed(VHeat, arch, 64), torch.randn(2, 3, 64, 64),
                           tmp_path / 'vheat.onnx')
    # decay ** k is folded into constants: no Pow, no conductivity linear in the graph
    assert 'Pow' not in {node.op_type for node in model.graph.node}


def test_backbone_onnx_mini_four_outputs(tmp_path):
    model = export_and_run(deployed(VHeatFeatures, MINI, 64), torch.randn(2, 3, 64, 64),
                           tmp_path / 'features.onnx')
    assert len(model.graph.output) == 4


def test_onnx_at_another_size(tmp_path):
    """An input size not folded yet: freq_embed resizing and decay ** k are traced as
    operations (the model keeps no tensor from the trace), which the exporter's optimizer folds."""
    model = deployed(VHeat, MINI, 64)
    buffers = dict(model.named_buffers())
    x = torch.randn(1, 3, 96, 80)
    program = torch.onnx.export(model, (x,), dynamo=True, input_names=['images'])
    assert dict(model.named_buffers()).keys() == buffers.keys()
    program.save(str(tmp_path / 'cold.onnx'))
    # traced as operations on the weights, then folded into constants by the exporter
    assert 'Pow' not in {node.op_type for node in onnx.load(str(tmp_path / 'cold.onnx')).graph.node}
    session = ort.InferenceSession(str(tmp_path / 'cold.onnx'),
                                   providers=['CPUExecutionProvider'])
    out = session.run(None, {'images': x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model(x), **TOL)
    # after an eager forward at that size the folded tensors are exported as constants
    export_and_run(model, x, tmp_path / 'warm.onnx')


@pytest.mark.parametrize('cls', [VHeat, VHeatFeatures])
def test_tiny_224_onnx(cls, tmp_path):
    export_and_run(deployed(cls, 'tiny', 224), torch.randn(1, 3, 224, 224),
                   tmp_path / 'tiny.onnx')
