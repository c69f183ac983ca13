"""No step of vHeat makes the host wait for the device, and few calls cross the dispatcher.

Counted on the CPU with tools/analysis_tools/benchmarking/dispatch_counts.py (the benchmark
reports the same counts): a call of ``equal``, ``item``, ``_local_scalar_dense``,
``is_nonzero`` or ``nonzero`` would be a device-to-host synchronisation on a GPU, and would
keep the step out of a CUDA graph.
"""
import pytest
import torch

from helpers import ROOT, load_script
from vheat_mm import compat
from vheat_mm.kernels import dispatch, kernel_switches
from vheat_mm.models import VHeat

counts = load_script(ROOT / 'tools/analysis_tools/benchmarking/dispatch_counts.py')


def _model(form: str) -> VHeat:
    torch.manual_seed(0)
    model = VHeat('tiny', img_size=64, num_classes=10)
    if form == 'train':
        return model.train()
    if form == 'deploy':
        model.switch_to_deploy()
    return model.eval()


def _step(model: VHeat, form: str, x: torch.Tensor):
    if form == 'train':
        return lambda: model(x).logsumexp(1).mean().backward()
    return lambda: model(x)


@pytest.mark.parametrize('size', [64, 96])  # the model's own size, and another
@pytest.mark.parametrize('form', ['eval', 'deploy', 'train'])
def test_no_step_waits_for_the_device(form, size):
    """Eval and deployed forwards, and a training step's forward and backward, at a size the
    caches have seen and at a new one."""
    model = _model(form)
    x = torch.randn(2, 3, size, size)
    with torch.set_grad_enabled(form == 'train'):
        _step(model, form, x)()  # the caches have seen this size
        seen = counts.count_dispatch(_step(model, form, x))
        new = counts.count_dispatch(_step(model, form, torch.randn(2, 3, size + 32, size)))
    assert seen.calls > 0
    assert not seen.syncs and not new.syncs, (seen.syncs, new.syncs)


def test_vheat_t_steps_stay_within_their_aten_call_budgets():
    """vHeat-T at 224x224, batch 2, float32: a training step (forward, loss, backward) within
    1500 ATen calls, an eval forward (without gradients, and in inference mode) within 784,
    the official code's."""
    torch.manual_seed(0)
    model = VHeat('tiny').train()
    x = torch.randn(2, 3, 224, 224)
    step = _step(model, 'train', x)
    step()  # the gradients exist: the counted step accumulates into them
    train = counts.count_dispatch(step)
    model.eval()
    with torch.no_grad():
        model(x)  # the caches have seen this size
        evaluation = counts.count_dispatch(_step(model, 'eval', x))
    with torch.inference_mode():
        inference = counts.count_dispatch(_step(model, 'eval', x))
    assert train.calls <= 1500, train
    assert evaluation.calls <= 784 and inference.calls <= 784, (evaluation, inference)


def test_the_counter_sees_a_sync():
    assert counts.count_dispatch(lambda: torch.ones(2).sum().item()).syncs == {
        'aten::_local_scalar_dense': 1}
    assert counts.count_dispatch(lambda: torch.equal(torch.ones(2), torch.ones(2))).syncs == {
        'aten::equal': 1}


@pytest.mark.skipif(not compat.has('kernels') or not dispatch.HAVE_TRITON
                    or not dispatch.INTERPRET,
                    reason='needs the kernels, and Triton under TRITON_INTERPRET=1')
def test_the_gpu_path_waits_for_nothing_and_calls_less_than_the_cpu_path():
    """The GPU path, counted on the CPU: bfloat16 autocast with each Triton kernel run by the
    interpreter, whose own ATen calls a GPU launch does not make (dispatch_counts.py leaves them
    out). vHeat-T at 32x32, batch 1 (the calls do not depend on the size; the interpreter's time
    does): no sync in a training step, an eval forward or a deployed one; fewer calls than the
    same steps without the kernels; the eval forwards within the official code's 784."""
    torch.manual_seed(0)
    model = VHeat('tiny', img_size=32).train()
    x = torch.randn(1, 3, 32, 32)
    train_step, forward = _step(model, 'train', x), _step(model, 'eval', x)
    found = {}
    with torch.autocast('cpu', dtype=torch.bfloat16):
        for path in ('cpu', 'kernels'):
            with kernel_switches(cpu_interpreter=path == 'kernels'):
                model.train()
                train_step()  # the gradients exist: the counted step accumulates into them
                found[path, 'train'] = counts.count_dispatch(train_step)
                model.eval()
                with torch.no_grad():
                    forward()  # the caches have seen this size
                    found[path, 'eval'] = counts.count_dispatch(forward)
    model.switch_to_deploy()
    with torch.autocast('cpu', dtype=torch.bfloat16), torch.no_grad(), \
            kernel_switches(cpu_interpreter=True):
        forward()
        found['kernels', 'deploy'] = counts.count_dispatch(forward)
    for (path, form), found_counts in found.items():
        assert not found_counts.syncs, (path, form, found_counts)
        assert (found_counts.launches > 0) == (path == 'kernels'), (path, form, found_counts)
    for form in ('train', 'eval'):
        assert found['kernels', form].calls < found['cpu', form].calls, found
    assert found['kernels', 'eval'].calls <= 784 and found['kernels', 'deploy'].calls <= 784
