"""torch.compile: one graph per input size, no recompilation at a size already seen.

The caches of derived tensors (``TensorCache``) are read-only while compiling: the deployed
model uses its folded tensors as they are, and a size whose tensors are not cached yet gets
them computed in the graph (see ``TensorCache`` and ``switch_to_deploy``).
"""
import re

import pytest
import torch
from torch._dynamo.testing import CompileCounter, CompileCounterWithBackend

from helpers import (CONFIGS, MINI, MINI_POST, python_tool, synthetic_shapes, tiny_classifier,
                     write_config)
from vheat_mm.models import VHeat, VHeatFeatures


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def deployed(cls, arch=MINI, img_size=64, **kwargs):
    model = cls(arch, img_size=img_size, **kwargs).eval()
    model.switch_to_deploy()
    return model


def assert_outputs_close(out, ref, **tol):
    out = (out,) if isinstance(out, torch.Tensor) else out
    ref = (ref,) if isinstance(ref, torch.Tensor) else ref
    assert len(out) == len(ref)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize('cls', [VHeat, VHeatFeatures])
def test_deploy_model_compiles_once_per_size(cls):
    model = deployed(cls)
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, dynamic=False, fullgraph=True)
    x = torch.randn(2, 3, 64, 64)
    other = torch.randn(2, 3, 96, 80)  # not folded by switch_to_deploy: computed in the graph
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for _ in range(3):
            out = compiled(x)
        assert counter.frame_count == 1  # fullgraph: one graph, no graph break
        assert_outputs_close(out, model(x), rtol=1e-5, atol=1e-6)
        for _ in range(3):
            out = compiled(other)
        assert counter.frame_count == 2
        for _ in range(2):
            compiled(x)
            compiled(other)
        assert counter.frame_count == 2
    assert dict(model.named_buffers()).keys() == buffers.keys()  # compiling stored nothing
    with torch.no_grad():
        assert_outputs_close(out, model(other), rtol=1e-5, atol=1e-6)


def test_size_warmed_in_eager_uses_the_folded_tensors():
    """After one eager forward at a size, the compiled graph reads the folded decay ** k of
    that size (graph inputs) instead of computing it: fewer operations in the graph."""
    counts = {}
    x = torch.randn(1, 3, 96, 80)
    for warm in (False, True):
        torch._dynamo.reset()
        model = deployed(VHeat)
        if warm:
            with torch.no_grad():
                model(x)
        counter = CompileCounter()
        compiled = torch.compile(model, backend=counter, dynamic=False, fullgraph=True)
        with torch.no_grad():
            for _ in range(2):
                out = compiled(x)
            assert_outputs_close(out, model(x), rtol=1e-5, atol=1e-6)
        assert counter.frame_count == 1
        counts[warm] = counter.op_count
    assert counts[True] < counts[False]


def test_compiled_eval_form_follows_weight_changes():
    """Outside the deploy form the compiled graph computes decay ** k itself, so it never uses
    a cache tagged with older weights."""
    model = VHeatFeatures(MINI_POST, img_size=64).eval()
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, dynamic=False, fullgraph=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        compiled(x)
        for stage in model.layers:
            for block in stage.blocks:
                block.op.to_k[0].bias.add_(0.5)
        out = compiled(x)
        assert_outputs_close(out, model(x), rtol=1e-5, atol=1e-6)
    assert counter.frame_count == 1


@pytest.mark.slow  # C++ compilation: about 40 s with a cold inductor cache, 10 s warm
@pytest.mark.parametrize('cls', [VHeat, VHeatFeatures])
def test_inductor_matches_eager(cls):
    """Default backend (inductor, C++ on CPU). Measured max abs error: logits 9e-8 (values up
    to 0.2), features 1.5e-6 (values up to 3)."""
    model = deployed(cls, num_classes=10) if cls is VHeat else deployed(cls)
    counter = CompileCounterWithBackend('inductor')
    compiled = torch.compile(model, backend=counter, dynamic=False, fullgraph=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        for _ in range(3):
            out = compiled(x)
    assert counter.frame_count == 1
    assert_outputs_close(out, ref, rtol=1e-4, atol=1e-5)


def test_switch_to_deploy_again_after_new_weights():
    """Compiled code trusts the folded tensors; switch_to_deploy() refolds them after the weights
    change, and the compiled model follows (at most one more compilation per size)."""
    model = deployed(VHeatFeatures, MINI_POST)
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, dynamic=False, fullgraph=True)
    x, other = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        model(other)  # fold 96x80 in eager
        compiled(x)
        compiled(other)
        fresh = VHeatFeatures(MINI_POST, img_size=64)
        model.load_state_dict(fresh.state_dict())
        model.switch_to_deploy()
        fresh.eval()
        for inp in (x, other, x, other):
            assert_outputs_close(compiled(inp), fresh(inp), rtol=1e-5, atol=1e-6)
    assert counter.frame_count <= 4


@pytest.mark.parametrize('cls', [VHeat, VHeatFeatures])
def test_a_training_step_compiles_as_one_graph(cls):
    """The forward of a training step (a gradient to every weight) is one graph
    (fullgraph: no graph break), and its backward gives the eager gradients."""
    torch.manual_seed(0)
    model = cls(MINI, img_size=64).train()
    counter = CompileCounterWithBackend('aot_eager')
    compiled = torch.compile(model, backend=counter, dynamic=False, fullgraph=True)
    x = torch.randn(2, 3, 64, 64)

    def gradients(run) -> dict:
        model.zero_grad(set_to_none=True)
        out = run(x)
        sum(o.square().mean() for o in ((out,) if isinstance(out, torch.Tensor) else out)
            ).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    for _ in range(2):
        got = gradients(compiled)
    assert counter.frame_count == 1
    expected = gradients(model)
    assert got.keys() == expected.keys() and all(g is not None for g in got.values())
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-5, msg=name)


MMENGINE_CLASSIFIER = tiny_classifier(['vheat_mm'], '''\
train_dataloader = dict(batch_size=2, num_workers=0,
                        dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=pipeline))
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=3)
param_scheduler = []
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1000))
custom_hooks = []
log_processor = dict(by_epoch=False)
randomness = dict(seed=0, deterministic=True)
''')


@pytest.mark.e2e
def test_mmengines_compile_key_compiles_the_training_step(tmp_path):
    """``compile=dict(backend=...)`` in a config (mmengine compiles the model's ``train_step``,
    the optimizer's step included): tools/train.py trains the project's classification config,
    whose recipe has a ``paramwise_cfg``, with it and to the same losses as without it."""
    shapes = synthetic_shapes()
    data = shapes.make_shapes_imagenet(tmp_path / 'imagenet', num_train=2, num_val=1,
                                       size=(32, 32))
    config = write_config(tmp_path / 'cls.py', MMENGINE_CLASSIFIER.format(
        base=CONFIGS / 'classification/vheat-t_16xb128_in1k.py', data=data,
        classes=shapes.SHAPE_CLASSES))
    losses = {}
    for name, options in (('eager', ()),
                          ('compiled', ('--cfg-options', 'compile.backend=aot_eager'))):
        done = python_tool('tools/train.py', config, '--work-dir', tmp_path / name, *options)
        losses[name] = re.findall(r'Iter\(train\) \[\d/3\].*?  loss: ([0-9.]+)', done.stdout)
    assert len(losses['eager']) == 3
    assert losses['compiled'] == losses['eager']
