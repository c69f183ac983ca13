"""Parameters are plain contiguous tensors, so that the utilities that flatten them work:
``parameters_to_vector``, DDP's gradient buckets (gloo, two processes), FSDP-style views."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from helpers import MINI, ROOT, free_port
from vheat_mm.models import VHeat, VHeatFeatures


@pytest.mark.parametrize('model_cls', [VHeat, VHeatFeatures])
def test_every_parameter_is_contiguous_and_flattens(model_cls):
    model = model_cls(MINI, img_size=64)
    strided = [n for n, p in model.named_parameters() if not p.is_contiguous()]
    assert not strided, f'parameters that view(-1) cannot flatten: {strided}'
    vector = parameters_to_vector(model.parameters())
    assert vector.numel() == sum(p.numel() for p in model.parameters())
    vector_to_parameters(vector * 2, model.parameters())
    torch.testing.assert_close(parameters_to_vector(model.parameters()), vector * 2)
    assert all(p.view(-1).data_ptr() == p.data_ptr() for p in model.parameters())


DDP_STEP = textwrap.dedent('''
    import os, sys, warnings
    import torch, torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    sys.path.insert(0, {tests!r})
    from helpers import MINI
    from vheat_mm.models import VHeat

    def step(rank):
        dist.init_process_group('gloo', init_method='tcp://127.0.0.1:{port}', rank=rank,
                                world_size=2)
        torch.manual_seed(0)
        model = VHeat(MINI, img_size=64, num_classes=4)
        with warnings.catch_warnings():
            warnings.simplefilter('error')  # e.g. "Grad strides do not match bucket view strides"
            ddp = DistributedDataParallel(model, gradient_as_bucket_view=True)
            torch.manual_seed(rank)
            x = torch.randn(2, 3, 64, 64)
            ddp(x).logsumexp(1).sum().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        gathered = [torch.empty_like(grads) for _ in range(2)]
        dist.all_gather(gathered, grads)
        assert torch.equal(gathered[0], gathered[1]), 'ranks hold different gradients'
        assert grads.abs().sum() > 0
        dist.destroy_process_group()

    if __name__ == '__main__':
        torch.multiprocessing.spawn(step, nprocs=2)
        print('ddp step ok')
''')


def test_a_ddp_step_on_two_processes(tmp_path):
    script = tmp_path / 'ddp_step.py'
    script.write_text(DDP_STEP.format(tests=str(ROOT / 'tests'), port=free_port()))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=300, cwd=ROOT, env=env)
    assert result.returncode == 0 and 'ddp step ok' in result.stdout, result.stderr[-3000:]
