"""FLOP counting: vheat_mm.mm.flops (the HCO matmul handle), tools/analysis_tools/get_flops.py."""
import re
import subprocess
import sys

import pytest
import torch
from mmengine.analysis import FlopAnalyzer
from torch import nn

from helpers import MINI, ROOT, load_script
from vheat_mm.mm.flops import flop_analyzer
from vheat_mm.models import VHeat, switch_to_deploy
from vheat_mm.models.heat import dct_2d, dct_basis, heat_conduction

TOOL = ROOT / 'tools' / 'analysis_tools' / 'get_flops.py'
CLASSIFICATION = ROOT / 'configs' / 'classification'
PAPER_GFLOPS = {'t': 4.6, 's': 8.5, 'b': 14.9}


tool = load_script(TOOL)


class HCO(nn.Module):
    """The HCO's transforms on channels-last (B, H, W, C): the DCT alone or the whole conduction."""

    def __init__(self, height: int, width: int, *, conduction: bool):
        super().__init__()
        self.register_buffer('basis_h', dct_basis(height))
        self.register_buffer('basis_w', dct_basis(width))
        self.register_buffer('attenuation', torch.rand(height, width, 1))
        self.conduction = conduction

    def forward(self, u):
        if self.conduction:
            return heat_conduction(u, self.basis_h, self.basis_w, self.attenuation)
        return dct_2d(u, self.basis_h, self.basis_w)


def dct_macs(b, h, w, c):
    """Multiply-adds of one 2-D DCT: along W (H*W*W per channel), then along H (H*H*W)."""
    return b * c * (h * w * w + h * h * w)


@pytest.mark.parametrize('shape', [(2, 5, 7, 3), (1, 8, 8, 4), (3, 6, 4, 2)])
def test_dct_2d_counts_every_multiply_add(shape):
    analyzer = flop_analyzer(HCO(*shape[1:3], conduction=False), (torch.randn(shape),))
    assert analyzer.total() == dct_macs(*shape)
    assert dict(analyzer.by_operator()) == {'matmul': dct_macs(*shape)}


def test_heat_conduction_counts_two_transforms_and_no_elementwise_product():
    shape = (2, 5, 7, 3)
    analyzer = flop_analyzer(HCO(*shape[1:3], conduction=True), (torch.randn(shape),))
    assert analyzer.total() == 2 * dct_macs(*shape)


def test_mmengine_default_matmul_handle_drops_the_broadcast_batch():
    """Why the handle exists: the default counts numel(basis) * last dim of the right operand."""
    shape = (2, 5, 7, 3)
    default = FlopAnalyzer(HCO(*shape[1:3], conduction=False), (torch.randn(shape),))
    default.unsupported_ops_warnings(False)
    assert default.total() < dct_macs(*shape)


class Matmul(nn.Module):
    def forward(self, a, b):
        return torch.matmul(a, b)


@pytest.mark.parametrize('left,right', [
    ((3, 4), (2, 4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 6)),
    ((4,), (4,)), ((3, 4), (4,)), ((4,), (2, 4, 5)),
])
def test_matmul_handle_for_every_operand_rank(left, right):
    a, b = torch.randn(left), torch.randn(right)
    expected = torch.matmul(a, b).numel() * left[-1]
    assert flop_analyzer(Matmul(), (a, b)).total() == expected


def deployed_hco_macs(model: VHeat, size: int) -> int:
    """FLOPs of the DCT matmuls of the deployed ``model`` on a size x size image."""
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        model(x)  # folds decay**k at this size, as the tool does
        return flop_analyzer(model, (x,)).by_operator()['matmul']


def test_hco_flops_grow_as_tokens_to_the_1_5():
    model = VHeat(MINI, img_size=64, num_classes=10)
    switch_to_deploy(model)
    small, large = deployed_hco_macs(model, 64), deployed_hco_macs(model, 128)
    # N = H*W tokens x4 -> N^1.5 x8; every stage: DCT and IDCT, C * H*W * (H + W) each
    expected = sum(depth * 2 * c * (64 // 4 >> i) ** 3 * 2 for i, (depth, c) in
                   enumerate(zip(model.arch.depths, model.arch.dims)))
    assert small == expected
    assert large == 8 * small


def test_deployed_count_leaves_out_the_conductivity():
    """Before deployment k = ReLU(Linear(freq_embed)) costs H*W*C*C per block; after, nothing."""
    x = torch.randn(1, 3, 64, 64)
    model = VHeat(MINI, img_size=64, num_classes=10).eval()
    with torch.no_grad():
        trained_form = flop_analyzer(model, (x,)).total()
        switch_to_deploy(model)
        deployed = flop_analyzer(model, (x,)).total()
    to_k = sum(depth * (64 // 4 >> i) ** 2 * c * c for i, (depth, c) in
               enumerate(zip(model.arch.depths, model.arch.dims)))
    assert trained_form - deployed == to_k


def test_shapes_and_defaults():
    assert tool.parse_shape(None, 'mmdet') == (800, 1280)
    assert tool.parse_shape([320], 'mmseg') == (320, 320)
    assert tool.parse_shape([256, 512], 'mmpretrain') == (256, 512)
    with pytest.raises(tool.tool_config.ToolConfigError, match='--shape'):
        tool.parse_shape([1, 2, 3], 'mmpretrain')


def check_paper_figure(arch: str):
    result = tool.get_flops(str(CLASSIFICATION / f'vheat-{arch}_16xb128_in1k.py'))
    assert result.toolbox == 'mmpretrain' and result.input_shape == (224, 224)
    assert result.flops == pytest.approx(PAPER_GFLOPS[arch] * 1e9, rel=0.03)
    # Only elementwise ops go uncounted (in place under no_grad, as the analyzer runs).
    elementwise = {'aten::add', 'aten::mul', 'aten::gelu', 'aten::silu'}
    assert result.skipped_ops.keys() <= elementwise | {f'{op}_' for op in elementwise}


def test_vheat_t_at_224_is_the_paper_s_4_6g():
    check_paper_figure('t')


@pytest.mark.slow
@pytest.mark.parametrize('arch', ['s', 'b'])
def test_vheat_s_and_b_at_224_are_the_paper_s_figures(arch):
    check_paper_figure(arch)


def test_no_deploy_counts_the_conductivity_in_every_block():
    config, shape = str(CLASSIFICATION / 'vheat-t_16xb128_in1k.py'), [64]
    deployed = tool.get_flops(config, shape)
    trained = tool.get_flops(config, shape, deploy=False)
    assert deployed.deployed and not trained.deployed
    # vHeat-T: depths 2, 2, 6, 2, widths 96..768, feature sizes 16, 8, 4, 2 at 64x64
    to_k = sum(depth * (16 >> i) ** 2 * c * c
               for i, (depth, c) in enumerate(zip((2, 2, 6, 2), (96, 192, 384, 768))))
    assert trained.flops - deployed.flops == to_k


def test_command_line_prints_flops_and_params():
    config = CLASSIFICATION / 'vheat-t_16xb128_in1k.py'
    done = subprocess.run([sys.executable, str(TOOL), str(config), '--shape', '128'], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert re.search(r'^Flops: \d+\.\d+G$', done.stdout, re.M), done.stdout
    assert re.search(r'^Params: \d+\.\d+M$', done.stdout, re.M), done.stdout
    assert 'Input shape: (128, 128)' in done.stdout
