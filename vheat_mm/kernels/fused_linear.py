"""GELU(x W^T + b) in one kernel: the MLP's first product with its activation as the epilogue.

The MLP's hidden tensor is 4x the block's width; in eager PyTorch the exact GELU reads and writes
it once more after the product. The Triton kernel applies bias and the exact (erf) GELU to the
float32 accumulator before the one store. It serves inference in a half type (bfloat16 or
float16, see :mod:`.dispatch`); with gradients, and in float32, the eager path runs.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .dispatch import HAVE_TRITON, INTERPRET, Route, compiled_as_custom_op, route

__all__ = ['linear_gelu']


def linear_gelu(x: Tensor, weight: Tensor, bias: Tensor | None,
                project: Callable[..., Tensor] = F.linear, *, inplace: bool = False,
                output: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Exact GELU of the linear map ``weight`` (C_out, C_in) on the last dimension of ``x``.

    ``project(x, weight, bias)`` is the eager product (default ``F.linear``; the model passes
    its device-dependent one); where it gives the product in another layout (the model's NCHW
    convolution), ``output`` views the GELU of it as the result (..., C_out).
    ``inplace=True`` lets the eager GELU overwrite the product.
    """
    if route('linear_gelu', x, weight, bias) is Route.INFERENCE:
        return _linear_gelu_triton(x, weight.reshape(weight.shape[0], -1), bias)
    y = project(x, weight, bias)
    y = torch.ops.aten.gelu_(y) if inplace else F.gelu(y)
    return y if output is None else output(y)


if HAVE_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _linear_gelu_kernel(A, W, Bias, C, M, N, K, HAS_BIAS: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                            BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                            UPCAST: tl.constexpr = False):
        """C (M, N) = GELU(A (M, K) @ W (N, K)^T + Bias), row-major, float32 accumulation.

        ``UPCAST`` multiplies in float32 (the same products: half-type products are exact in
        float32); Triton's interpreter needs it, as its dot mishandles bfloat16.
        """
        pid = tl.program_id(0)
        grid_m = tl.cdiv(M, BLOCK_M)
        grid_n = tl.cdiv(N, BLOCK_N)
        # grouped order: consecutive programs share rows of A while they sit in the cache
        group = GROUP_M * grid_n
        first_m = (pid // group) * GROUP_M
        group_m = min(grid_m - first_m, GROUP_M)
        pid_m = first_m + (pid % group) % group_m
        pid_n = (pid % group) // group_m
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        a_ptrs = A + rm.to(tl.int64)[:, None] * K + rk[None, :]
        w_ptrs = W + rn[None, :] * K + rk[:, None]
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, tl.cdiv(K, BLOCK_K)):
            left = K - k * BLOCK_K
            a = tl.load(a_ptrs, mask=(rm[:, None] < M) & (rk[None, :] < left), other=0.0)
            w = tl.load(w_ptrs, mask=(rk[:, None] < left) & (rn[None, :] < N), other=0.0)
            if UPCAST:
                a = a.to(tl.float32)
                w = w.to(tl.float32)
            acc = tl.dot(a, w, acc)
            a_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        if HAS_BIAS:
            acc += tl.load(Bias + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        acc = 0.5 * acc * (1.0 + tl.erf(acc * 0.7071067811865476))
        c_ptrs = C + rm.to(tl.int64)[:, None] * N + rn[None, :]
        tl.store(c_ptrs, acc.to(C.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))

    _CONFIGS = [
        triton.Config(dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=32, GROUP_M=8), num_warps=4,
                      num_stages=4),
        triton.Config(dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8), num_warps=8,
                      num_stages=3),
        triton.Config(dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=32, GROUP_M=8), num_warps=4,
                      num_stages=4),
        triton.Config(dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=32, GROUP_M=8), num_warps=8,
                      num_stages=3),
    ]
    _linear_gelu_tuned = triton.autotune(configs=_CONFIGS, key=['N', 'K'])(_linear_gelu_kernel)


def _output_like(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0])


@compiled_as_custom_op('vheat_mm::linear_gelu', _output_like)
def _linear_gelu_triton(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    x = x.contiguous()
    k = x.shape[-1]
    m = x.numel() // k
    n = weight.shape[0]
    weight = weight.to(x.dtype).contiguous()
    out = torch.empty(*x.shape[:-1], n, device=x.device, dtype=x.dtype)
    args = (x, weight, weight if bias is None else bias, out, m, n, k, bias is not None)
    if INTERPRET:  # no autotuning in the interpreter: one small tile
        _linear_gelu_kernel[(triton.cdiv(m, 16) * triton.cdiv(n, 16),)](
            *args, BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=4, UPCAST=True)
    else:
        _linear_gelu_tuned[lambda meta: (triton.cdiv(m, meta['BLOCK_M'])
                                         * triton.cdiv(n, meta['BLOCK_N']),)](*args)
    return out
