"""The spectrum times the attenuation decay ** k out of place, with its gradients.

``spectrum`` (B, H, W, C) in a half type times ``attenuation`` (H, W, C) in float32, the product
computed in float32 and stored in the spectrum's dtype. The backward needs the gradient of the
spectrum (the incoming gradient times the attenuation) and of the attenuation (the incoming
gradient times the spectrum, summed over the batch): one Triton kernel computes both, each
program looping over the batch for its block of (h, w, c) positions, so the batch reduction
costs no extra pass and no extra kernels. Without gradients the forward kernel runs alone;
the model calls this only where it may not scale the spectrum in place
(:func:`vheat_mm.models.heat.attenuate`).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .dispatch import HAVE_TRITON, Route, compiled_as_custom_op, route

__all__ = ['attenuate_with_grad']

BLOCK = 256  # positions per program


def attenuate_with_grad(spectrum: Tensor, attenuation: Tensor) -> Tensor:
    """``spectrum * attenuation`` out of place, for a float32 ``attenuation``: the Triton
    kernels where :func:`~.dispatch.route` says, else the eager product with the attenuation
    cast to the spectrum's dtype."""
    path = route('attenuate_with_grad', spectrum, attenuation,
                 supported=attenuation.dtype == torch.float32)
    if path is Route.INFERENCE:
        return _attenuate_inference(spectrum, attenuation)
    if path is Route.AUTOGRAD:
        return _AttenuateFunction.apply(spectrum, attenuation)
    return spectrum * attenuation.to(spectrum.dtype)


if HAVE_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _attenuate_fwd_kernel(S, A, Out, B, P, BLOCK: tl.constexpr):
        pos = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = pos < P
        att = tl.load(A + pos, mask=ok, other=0.0)
        offs = pos.to(tl.int64)  # of sample b: b * P + pos
        for _ in range(0, B):
            s = tl.load(S + offs, mask=ok, other=0.0).to(tl.float32)
            tl.store(Out + offs, (s * att).to(Out.dtype.element_ty), mask=ok)
            offs += P

    @triton.jit
    def _attenuate_bwd_kernel(S, A, G, DS, DA, B, P, BLOCK: tl.constexpr):
        pos = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = pos < P
        att = tl.load(A + pos, mask=ok, other=0.0)
        acc = tl.zeros((BLOCK,), dtype=tl.float32)
        offs = pos.to(tl.int64)  # of sample b: b * P + pos
        for _ in range(0, B):
            g = tl.load(G + offs, mask=ok, other=0.0).to(tl.float32)
            s = tl.load(S + offs, mask=ok, other=0.0).to(tl.float32)
            tl.store(DS + offs, (g * att).to(DS.dtype.element_ty), mask=ok)
            acc += g * s
            offs += P
        tl.store(DA + pos, acc, mask=ok)


def _product_like(spectrum: Tensor, attenuation: Tensor) -> Tensor:
    return torch.empty_like(spectrum, memory_format=torch.contiguous_format)


@compiled_as_custom_op('vheat_mm::attenuate', _product_like)
def _attenuate_inference(spectrum: Tensor, attenuation: Tensor) -> Tensor:
    """The forward kernel on contiguous copies (views) of both tensors."""
    spectrum = spectrum.contiguous()
    attenuation = attenuation.contiguous()
    b, p = spectrum.shape[0], attenuation.numel()
    out = torch.empty_like(spectrum)
    _attenuate_fwd_kernel[(triton.cdiv(p, BLOCK),)](spectrum, attenuation, out, b, p,
                                                     BLOCK=BLOCK, num_warps=4)
    return out


class _AttenuateFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, spectrum: Tensor, attenuation: Tensor) -> Tensor:
        spectrum = spectrum.contiguous()
        attenuation = attenuation.contiguous()
        ctx.save_for_backward(spectrum, attenuation)
        return _attenuate_inference(spectrum, attenuation)

    @staticmethod
    def backward(ctx, grad: Tensor):
        spectrum, attenuation = ctx.saved_tensors
        grad = grad.contiguous()
        b, p = spectrum.shape[0], attenuation.numel()
        d_spectrum = torch.empty_like(spectrum)
        d_attenuation = torch.empty_like(attenuation)
        _attenuate_bwd_kernel[(triton.cdiv(p, BLOCK),)](
            spectrum, attenuation, grad, d_spectrum, d_attenuation, b, p, BLOCK=BLOCK,
            num_warps=4)
        return d_spectrum, d_attenuation
