"""LayerNorm over the channels of channels-last activations, alone or fused with what follows it.

Three functions, each with an eager reference and a Triton kernel (:mod:`.dispatch` picks):

- :func:`layer_norm` -- ``LN(x)``;
- :func:`layer_norm_silu` -- ``LN(u) * SiLU(z)``, the HCO's output gating;
- :func:`residual_layer_norm` -- ``r + gamma * LN(y)``, the post-norm residual step.

All keep the dtype of their input under autocast: a bfloat16 activation gives a bfloat16 result,
with the statistics (mean, variance) and the arithmetic in float32 inside the kernel or the
eager ``layer_norm``. (Autocast alone would run ``layer_norm`` in float32 and return float32,
doubling the bytes every later elementwise step moves.) The weights stay float32 parameters.

The Triton kernels work on tiles of ``BLOCK_M`` rows by the whole channel dimension. The
backward kernel (LN and LN * SiLU, for training) recomputes the normalized input from the saved
per-row mean and 1/std and reduces the weight and bias gradients per program, then across
programs; the forward saves nothing else.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..compat import autocast_enabled
from .dispatch import HALF_TYPES, HAVE_TRITON, Route, compiled_as_custom_op, route

__all__ = ['layer_norm', 'layer_norm_silu', 'residual_layer_norm']


# ----------------------------------------------------------------------------- eager references
def _layer_norm_eager(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    device_type = x.device.type
    if x.dtype in HALF_TYPES and autocast_enabled(device_type):
        with torch.autocast(device_type, enabled=False):
            return F.layer_norm(x, weight.shape, weight.to(x.dtype), bias.to(x.dtype), eps)
    return F.layer_norm(x, weight.shape, weight, bias, eps)


def _layer_norm_silu_eager(u: Tensor, z: Tensor, weight: Tensor, bias: Tensor, eps: float,
                           inplace: bool) -> Tensor:
    gate = F.silu(z, inplace=inplace)
    normed = _layer_norm_eager(u, weight, bias, eps)
    return normed.mul_(gate) if inplace else normed * gate


def _residual_layer_norm_eager(residual: Tensor, y: Tensor, weight: Tensor, bias: Tensor,
                               eps: float, gamma: Tensor | None, inplace: bool) -> Tensor:
    normed = _layer_norm_eager(y, weight, bias, eps)
    if inplace:
        if gamma is not None:
            normed.mul_(gamma)
        return normed.add_(residual)
    return residual + (normed if gamma is None else normed * gamma.to(normed.dtype))


# ----------------------------------------------------------------------------- public functions
def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """``F.layer_norm`` over the last dimension, keeping ``x``'s dtype under autocast."""
    path = route('layer_norm', x, weight, bias)
    if path is Route.INFERENCE:
        return _norm_inference(x, None, None, None, weight, bias, eps)
    if path is Route.AUTOGRAD:
        return _LayerNormFunction.apply(x, None, weight, bias, eps)
    return _layer_norm_eager(x, weight, bias, eps)


def layer_norm_silu(u: Tensor, z: Tensor, weight: Tensor, bias: Tensor, eps: float, *,
                    inplace: bool = False) -> Tensor:
    """``LN(u) * SiLU(z)`` for ``u`` and ``z`` of one shape, in ``u``'s dtype under autocast.

    ``inplace=True`` lets the eager path compute SiLU in ``z``'s storage (pass it only for a
    ``z`` nobody reads afterwards, and never while autograd records).
    """
    path = route('layer_norm_silu', u, z, weight, bias)
    if path is Route.INFERENCE:
        return _norm_inference(u, z, None, None, weight, bias, eps)
    if path is Route.AUTOGRAD:
        return _LayerNormFunction.apply(u, z, weight, bias, eps)
    return _layer_norm_silu_eager(u, z, weight, bias, eps, inplace)


def residual_layer_norm(residual: Tensor, y: Tensor, weight: Tensor, bias: Tensor, eps: float,
                        gamma: Tensor | None = None, *, inplace: bool = False) -> Tensor:
    """``residual + gamma * LN(y)`` (``gamma`` None means 1), in ``y``'s dtype under autocast.

    ``inplace=True`` lets the result reuse ``y``'s storage (pass it only for a ``y`` nobody
    reads afterwards, and never while autograd records). The Triton kernel serves inference;
    with gradients the eager path runs.
    """
    path = route('residual_layer_norm', y, residual, weight, bias, gamma,
                 supported=residual.dtype == y.dtype)
    if path is Route.INFERENCE:
        return _norm_inference(y, None, residual, gamma, weight, bias, eps,
                               out=y if inplace and y.is_contiguous() else None)
    return _residual_layer_norm_eager(residual, y, weight, bias, eps, gamma, inplace)


# ----------------------------------------------------------------------------- Triton
if HAVE_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _norm_fwd_kernel(X, Z, R, G, W, B, Y, Stats, M, N, eps,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GATE: tl.constexpr,
                         RESIDUAL: tl.constexpr, HAS_GAMMA: tl.constexpr, STATS: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BLOCK_N)
        row_ok = rows < M
        col_ok = cols < N
        mask = row_ok[:, None] & col_ok[None, :]
        offs = rows.to(tl.int64)[:, None] * N + cols[None, :]
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=1) / N
        centered = tl.where(mask, x - mean[:, None], 0.0)
        rstd = tl.rsqrt(tl.sum(centered * centered, axis=1) / N + eps)
        w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
        b = tl.load(B + cols, mask=col_ok, other=0.0).to(tl.float32)
        y = centered * rstd[:, None] * w[None, :] + b[None, :]
        if GATE:
            z = tl.load(Z + offs, mask=mask, other=0.0).to(tl.float32)
            y = y * (z * tl.sigmoid(z))
        if RESIDUAL:
            if HAS_GAMMA:
                y = y * tl.load(G + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
            y = y + tl.load(R + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)
        if STATS:  # mean in Stats[0:M], 1/std in Stats[M:2M]
            tl.store(Stats + rows, mean, mask=row_ok)
            tl.store(Stats + M + rows, rstd, mask=row_ok)

    @triton.jit
    def _norm_bwd_kernel(X, Z, W, B, Stats, DY, DX, DZ, DWB, M, N,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GATE: tl.constexpr):
        """dX (and dZ) for its row blocks; its share of dW and dB into DWB[0, pid], DWB[1, pid]."""
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK_N)
        col_ok = cols < N
        w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
        b = tl.load(B + cols, mask=col_ok, other=0.0).to(tl.float32)
        dw = tl.zeros((BLOCK_N,), dtype=tl.float32)
        db = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for block in range(pid, tl.cdiv(M, BLOCK_M), tl.num_programs(0)):
            rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
            row_ok = rows < M
            mask = row_ok[:, None] & col_ok[None, :]
            offs = rows.to(tl.int64)[:, None] * N + cols[None, :]
            x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
            mean = tl.load(Stats + rows, mask=row_ok, other=0.0)
            rstd = tl.load(Stats + M + rows, mask=row_ok, other=0.0)
            xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
            dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
            if GATE:
                z = tl.load(Z + offs, mask=mask, other=0.0).to(tl.float32)
                sig = tl.sigmoid(z)
                normed = xhat * w[None, :] + b[None, :]
                dz = dy * normed * sig * (1.0 + z * (1.0 - sig))
                tl.store(DZ + offs, dz.to(DZ.dtype.element_ty), mask=mask)
                dy = dy * z * sig
            dw += tl.sum(dy * xhat, axis=0)
            db += tl.sum(dy, axis=0)
            dxhat = dy * w[None, :]
            mean_dxhat = tl.sum(dxhat, axis=1) / N
            mean_dxhat_xhat = tl.sum(dxhat * xhat, axis=1) / N
            dx = (dxhat - mean_dxhat[:, None] - xhat * mean_dxhat_xhat[:, None]) * rstd[:, None]
            tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)
        tl.store(DWB + pid * N + cols, dw, mask=col_ok)
        tl.store(DWB + (tl.num_programs(0) + pid) * N + cols, db, mask=col_ok)


def _tile(n: int) -> tuple[int, int, int]:
    """BLOCK_M, BLOCK_N and warps for rows of n channels: about 4096 elements per program."""
    block_n = triton.next_power_of_2(n)
    block_m = max(1, min(64, 4096 // block_n))
    return block_m, block_n, 4 if block_n <= 2048 else 8


def _norm_forward(x: Tensor, z: Tensor | None, weight: Tensor, bias: Tensor, eps: float, *,
                  residual: Tensor | None = None, gamma: Tensor | None = None,
                  out: Tensor | None = None, stats: bool = False
                  ) -> tuple[Tensor, Tensor | None]:
    """Launch the forward kernel on contiguous rows, into ``out`` (a contiguous tensor of x's
    shape) if given; returns y and, with ``stats``, the per-row mean and 1/std as one
    (2, rows) float32 tensor."""
    x = x.contiguous()
    n = x.shape[-1]
    m = x.numel() // n
    z = None if z is None else z.contiguous()
    residual = None if residual is None else residual.contiguous()
    y = torch.empty_like(x) if out is None else out
    row_stats = torch.empty(2, m, device=x.device, dtype=torch.float32) if stats else None
    block_m, block_n, warps = _tile(n)
    _norm_fwd_kernel[(triton.cdiv(m, block_m),)](
        x, x if z is None else z, x if residual is None else residual,
        weight if gamma is None else gamma, weight, bias, y,
        x if row_stats is None else row_stats, m, n, eps,
        BLOCK_M=block_m, BLOCK_N=block_n, GATE=z is not None, RESIDUAL=residual is not None,
        HAS_GAMMA=gamma is not None, STATS=stats, num_warps=warps)
    return y, row_stats


def _norm_output_like(x: Tensor, z: Optional[Tensor], residual: Optional[Tensor],
                      gamma: Optional[Tensor], weight: Tensor, bias: Tensor, eps: float,
                      out: Optional[Tensor] = None) -> Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@compiled_as_custom_op('vheat_mm::norm_inference', _norm_output_like)
def _norm_inference(x: Tensor, z: Optional[Tensor], residual: Optional[Tensor],
                    gamma: Optional[Tensor], weight: Tensor, bias: Tensor, eps: float,
                    out: Optional[Tensor] = None) -> Tensor:
    """The forward kernel without statistics: LN(x), times SiLU(z), or residual + gamma * LN
    (into ``out`` if given)."""
    return _norm_forward(x, z, weight, bias, eps, residual=residual, gamma=gamma, out=out)[0]


def _backward_programs(device: torch.device, blocks: int) -> int:
    if device.type == 'cuda':
        return min(blocks, 4 * torch.cuda.get_device_properties(device).multi_processor_count)
    return min(blocks, 4)


class _LayerNormFunction(torch.autograd.Function):
    """LN(x), or LN(x) * SiLU(z), with the Triton forward and backward kernels."""

    @staticmethod
    def forward(ctx, x: Tensor, z: Tensor | None, weight: Tensor, bias: Tensor, eps: float):
        y, row_stats = _norm_forward(x, z, weight, bias, eps, stats=True)
        ctx.save_for_backward(x.contiguous(), z if z is None else z.contiguous(), weight, bias,
                              row_stats)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, z, weight, bias, row_stats = ctx.saved_tensors
        dy = dy.contiguous()
        n = x.shape[-1]
        m = x.numel() // n
        block_m, block_n, warps = _tile(n)
        programs = _backward_programs(x.device, triton.cdiv(m, block_m))
        dx = torch.empty_like(x)
        dz = None if z is None else torch.empty_like(z)
        partial = torch.empty(2, programs, n, device=x.device, dtype=torch.float32)
        _norm_bwd_kernel[(programs,)](
            x, x if z is None else z, weight, bias, row_stats, dy, dx, dx if dz is None else dz,
            partial, m, n, BLOCK_M=block_m, BLOCK_N=block_n, GATE=z is not None,
            num_warps=warps)
        dw, db = partial.sum(1).to(weight.dtype)
        return dx, dz, dw, db, None
