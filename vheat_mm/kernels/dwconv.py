"""The HCO's 3x3 depthwise convolution (stride 1, zero padding 1) on channels-last activations.

``F.conv2d`` with ``groups=C`` on a channels-last tensor. The Triton kernel reads each output
tile's 3x3 neighbourhood straight from the channels-last input (channels contiguous, so every
load is coalesced), accumulates in float32 and adds the bias before its one store. It serves
inference in a half type (see :mod:`.dispatch`); with gradients the eager path runs.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .dispatch import HAVE_TRITON, INTERPRET, Route, compiled_as_custom_op, route

__all__ = ['depthwise_conv3x3']


def depthwise_conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """(B, H, W, C) channels-last ``x`` -> (B, H, W, C), ``weight`` of shape (C, 1, 3, 3)."""
    if route('depthwise_conv3x3', x, weight, bias) is Route.INFERENCE:
        return _depthwise_conv3x3_triton(x, weight, bias)
    out = F.conv2d(x.permute(0, 3, 1, 2), weight, bias, padding=1, groups=x.shape[-1])
    return out.permute(0, 2, 3, 1)


if HAVE_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _dwconv3x3_kernel(X, Wt, Bias, Y, H, W, C, stride_wc, stride_wh, stride_ww,
                          HAS_BIAS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
        """One program: row h of image b, BLOCK_W columns by BLOCK_C channels."""
        bh = tl.program_id(0)
        h = bh % H
        cols = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
        chans = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        chan_ok = chans < C
        acc = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
        for i in tl.static_range(3):
            src_h = h + i - 1
            row_ok = (src_h >= 0) & (src_h < H)
            row = (bh + i - 1).to(tl.int64) * W  # (b * H + src_h) * W
            for j in tl.static_range(3):
                src_w = cols + j - 1
                mask = (row_ok & (src_w >= 0) & (src_w < W))[:, None] & chan_ok[None, :]
                x = tl.load(X + (row + src_w)[:, None] * C + chans[None, :], mask=mask,
                            other=0.0)
                k = tl.load(Wt + chans * stride_wc + i * stride_wh + j * stride_ww,
                            mask=chan_ok, other=0.0)
                acc += x.to(tl.float32) * k.to(tl.float32)[None, :]
        if HAS_BIAS:
            acc += tl.load(Bias + chans, mask=chan_ok, other=0.0).to(tl.float32)[None, :]
        out = Y + ((bh.to(tl.int64) * W + cols)[:, None]) * C + chans[None, :]
        tl.store(out, acc.to(Y.dtype.element_ty),
                 mask=(cols < W)[:, None] & chan_ok[None, :])


def _output_like(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@compiled_as_custom_op('vheat_mm::depthwise_conv3x3', _output_like)
def _depthwise_conv3x3_triton(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    x = x.contiguous()
    b, h, w, c = x.shape
    out = torch.empty_like(x)
    block_c = min(128, triton.next_power_of_2(c))
    block_w = 8 if INTERPRET else max(1, min(32, 4096 // block_c))
    grid = (b * h, triton.cdiv(w, block_w), triton.cdiv(c, block_c))
    _dwconv3x3_kernel[grid](x, weight, weight if bias is None else bias, out, h, w, c,
                            weight.stride(0), weight.stride(2), weight.stride(3),
                            HAS_BIAS=bias is not None, BLOCK_W=block_w, BLOCK_C=block_c,
                            num_warps=4)
    return out
