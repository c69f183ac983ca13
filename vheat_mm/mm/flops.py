"""FLOPs of vHeat models with mmengine's jit analyzer, counted as the paper counts them.

Conventions are mmengine's (from fvcore): one multiply-add is one FLOP; convolutions, linear
layers and matrix products count their multiply-adds, norms 4-5 per element, upsampling and
adaptive pooling a few per element; every other elementwise op (the HCO's attenuation product,
SiLU, GELU, additions, layer scales) and every op without a handle counts zero.

The HCO's 2-D DCT and its inverse (:mod:`vheat_mm.models.heat`) are ``torch.matmul`` of an
(N, N) cosine basis against a 3-D view of the (B, H, W, C) tensor, recorded in the trace as
``aten::matmul`` with a 2-D left and a batched 3-D right operand. mmengine's default handle
counts ``numel(left) * right.shape[-1]``, which drops the batch dimensions that broadcasting
gives the left operand: for the transform along W, (W, W) @ (B*H, W, C), it counts W*W*C
instead of B*H*W*W*C. :func:`matmul_flop_jit` replaces it.

The paper's figures are for the deployed model: :func:`vheat_mm.models.switch_to_deploy` folds
decay**k, so k = ReLU(Linear(freq_embed)) is not counted.
"""
from __future__ import annotations

from math import prod
from typing import Any

from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import Handle, get_shape
from torch import Tensor, nn

__all__ = ['matmul_flop_jit', 'FLOP_HANDLES', 'flop_analyzer']


def matmul_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """Multiply-adds of ``aten::matmul``, broadcasting included: numel(output) * K.

    K, the contracted size, is the left operand's last dimension for every operand rank that
    ``torch.matmul`` accepts (1-D operands drop a dimension from the output, which the product
    over the output's shape accounts for).
    """
    left, right = (get_shape(v) for v in inputs[:2])
    out = get_shape(outputs[0])
    if left is None or right is None or out is None:
        raise ValueError('aten::matmul traced without complete tensor shapes')
    return prod(out) * left[-1]


# Handles that replace or extend mmengine's defaults (``FlopAnalyzer.set_op_handle``).
FLOP_HANDLES: dict[str, Handle] = {'aten::matmul': matmul_flop_jit}


def flop_analyzer(model: nn.Module, inputs: Tensor | tuple[Any, ...]) -> FlopAnalyzer:
    """mmengine's ``FlopAnalyzer`` with :data:`FLOP_HANDLES`; ops it skips are not warned about
    one by one (see ``unsupported_ops()``)."""
    analyzer = FlopAnalyzer(model, inputs).set_op_handle(**FLOP_HANDLES)
    return analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
