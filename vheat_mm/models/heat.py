"""The Heat Conduction Operator (HCO) as plain functions.

vHeat treats the feature map u(x, y) of a stage as a temperature field on an H x W plate with
insulated borders. The solution of the heat equation du/dt = k (d2u/dx2 + d2u/dy2) with those
(Neumann) boundary conditions is, after time t = 1,

    u(x, y) = IDCT2D( DCT2D(u)(n, m) * exp(-((n pi / H)^2 + (m pi / W)^2)) ** k(n, m) )

where DCT2D is the orthonormal 2-D DCT-II and k(n, m) >= 0 is a learned conductivity per
frequency and channel. Everything here works on channels-last tensors (B, H, W, C): both
transforms are plain matrix products against small (N x N) cosine bases, with no copies, one
``bmm`` per axis (:func:`broadcast_bases`). In eager training without autocast autograd records
the whole conduction as one step whose backward applies the adjoint transforms
(:class:`_HeatConduction`): the gradients autograd would give, in fewer ATen calls.

Under ``torch.autocast`` the transforms are matmuls in the autocast dtype (the GEMMs accumulate
in float32) and the spectrum stays in that dtype when the float32 attenuation is applied
(:func:`attenuate`). With
``float32=True`` the whole conduction runs in float32 (:func:`float32_under_autocast`): its own
error on a bfloat16 input drops to the rounding of its input and output, but the network's
error, dominated by its bfloat16 linears and convolutions, does not change measurably, and the
float32 transforms cost time; so it is not the default (tests/test_precision.py measures both).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..compat import autocast_enabled, is_compiling
from ..kernels import attenuate_with_grad
from ..policy import is_traced, may_overwrite, needs_grad

__all__ = [
    'attenuate', 'broadcast_bases', 'dct_basis', 'heat_decay_map', 'heat_log_decay_map',
    'heat_conduction', 'dct_2d', 'idct_2d', 'has_size', 'inverse_bases',
    'pad_freq_embed', 'resize_freq_embed', 'float32_under_autocast'
]


def dct_basis(n: int, *, device: torch.device | None = None,
              dtype: torch.dtype = torch.float32) -> Tensor:
    """Orthonormal DCT-II matrix D of shape (n, n), rows indexed by frequency.

    D[k, x] = sqrt(2 / n) * cos((x + 0.5) * k * pi / n), with row k = 0 divided by sqrt(2), so
    that D @ D.T = I: the forward transform is D @ f and the inverse is D.T @ F.
    Computed in float64 and cast, so every dtype gets the correctly rounded basis.
    """
    if n < 1:
        raise ValueError(f'a DCT needs at least one sample, got n={n}')
    x = torch.arange(n, dtype=torch.float64) + 0.5
    k = torch.arange(n, dtype=torch.float64)[:, None]
    # sqrt(2 / n) as a tensor: the same correctly rounded value, for a symbolic n too
    scale = torch.full((), 2.0, dtype=torch.float64).div(n).sqrt()
    basis = torch.cos(k * x * (math.pi / n)) * scale
    basis[0] /= math.sqrt(2.0)
    return basis.to(device=device, dtype=dtype)


def heat_log_decay_map(height: int, width: int, *, device: torch.device | None = None,
                       dtype: torch.dtype = torch.float32) -> Tensor:
    """log decay[n, m] = -((n pi / H)^2 + (m pi / W)^2), shape (H, W).

    The attenuation decay ** k is computed as exp(k * log decay): the same values as the
    power, with a backward pass of two products instead of the power's.
    """
    n = torch.arange(height, dtype=torch.float64) * (math.pi / height)
    m = torch.arange(width, dtype=torch.float64) * (math.pi / width)
    return (-(n[:, None] ** 2 + m[None, :] ** 2)).to(device=device, dtype=dtype)


def heat_decay_map(height: int, width: int, *, device: torch.device | None = None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """decay[n, m] = exp(-((n pi / H)^2 + (m pi / W)^2)), shape (H, W).

    Raised to the learned conductivity k it gives the per-frequency attenuation decay ** k.
    """
    return heat_log_decay_map(height, width, dtype=torch.float64).exp().to(device=device,
                                                                           dtype=dtype)


def _basis_times(basis: Tensor, u: Tensor) -> Tensor:
    """``basis @ u[i]`` for every i, u (I, M, K) and basis (N, M) or already broadcast to
    (I, N, M) (:func:`broadcast_bases`): one ``bmm``, where ``torch.matmul`` of the 2-D basis
    adds a transpose, expands, reshapes and views around the same ``bmm``. Under
    ``torch.jit.trace`` (the FLOP counters of :mod:`vheat_mm.mm.flops` read such a graph) it
    is the ``torch.matmul`` they count; both give the same values."""
    if torch.jit.is_tracing():
        return torch.matmul(basis, u)
    if basis.dim() == 2:
        basis = basis.expand(u.shape[0], -1, -1)
    return torch.bmm(basis, u)


def _along_h(u: Tensor, basis: Tensor) -> Tensor:
    """out[b, i, w, c] = sum_h basis[i, h] u[b, h, w, c] for u of shape (B, H, W, C)."""
    b, h, w, c = u.shape
    return _basis_times(basis, u.reshape(b, h, w * c)).view(b, basis.shape[-2], w, c)


def _along_w(u: Tensor, basis: Tensor) -> Tensor:
    """out[b, h, j, c] = sum_w basis[j, w] u[b, h, w, c] for u of shape (B, H, W, C)."""
    b, h, w, c = u.shape
    return _basis_times(basis, u.reshape(b * h, w, c)).view(b, h, basis.shape[-2], c)


def _transform_2d(u: Tensor, basis_h: Tensor, basis_w: Tensor) -> Tensor:
    """``_along_h(_along_w(u, basis_w), basis_h)`` for u of B maps (H, W, C) in any shape of
    that memory ((B, H, W, C), (B, H*W, C), ...), as (B, H', W'*C): one view between the two
    products (the bases give H and W)."""
    b, c = u.shape[0], u.shape[-1]
    along_w = _basis_times(basis_w, u.reshape(b * basis_h.shape[-1], basis_w.shape[-1], c))
    return _basis_times(basis_h, along_w.view(b, basis_h.shape[-1], -1))    # (B, H', W'*C)


def _transform_2d_reversed(g: Tensor, basis_h: Tensor, basis_w: Tensor) -> Tensor:
    """:func:`_transform_2d` in the other order, along H first, then along W, as
    (B*H', W', C): with the transposed bases, the adjoint of :func:`_transform_2d`."""
    b, c = g.shape[0], g.shape[-1]
    along_h = _basis_times(basis_h, g.reshape(b, basis_h.shape[-1], -1))
    return _basis_times(basis_w, along_h.view(-1, basis_w.shape[-1], c))


def broadcast_bases(basis_h: Tensor, basis_w: Tensor, batch: int
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The bases of :func:`dct_2d` (D_H, D_W) and of :func:`idct_2d` (their transposes) for u
    of ``batch`` samples (B, H, W, C), broadcast over the batches of the products that apply
    them: (B, H, H), (B*H, W, W) and the transposes, all views. A stage makes them once and
    its every HCO applies them (:func:`heat_conduction`)."""
    height = basis_h.shape[-1]
    basis_h = basis_h.expand(batch, -1, -1)
    basis_w = basis_w.expand(batch * height, -1, -1)
    return (basis_h, basis_w, *inverse_bases(basis_h, basis_w))


def inverse_bases(basis_h: Tensor, basis_w: Tensor) -> tuple[Tensor, Tensor]:
    """The bases of the inverse transform: D_H and D_W transposed (views), for 2-D bases and
    for those of :func:`broadcast_bases` alike."""
    return basis_h.transpose(-2, -1), basis_w.transpose(-2, -1)


def dct_2d(u: Tensor, basis_h: Tensor, basis_w: Tensor) -> Tensor:
    """2-D DCT-II of channels-last u (B, H, W, C): D_H u D_W^T per channel."""
    return _transform_2d(u, basis_h, basis_w).view(u.shape)


def idct_2d(spectrum: Tensor, basis_h: Tensor, basis_w: Tensor) -> Tensor:
    """Inverse of :func:`dct_2d` (the bases are orthonormal, so the inverse is the transpose)."""
    return _transform_2d(spectrum, *inverse_bases(basis_h, basis_w)).view(spectrum.shape)


def float32_under_autocast(fn: Callable[..., Tensor], *tensors: Tensor) -> Tensor:
    """``fn(*tensors)``, computed in float32 with autocast off when autocast is on.

    When ``torch.autocast`` is enabled for the device of ``tensors[0]``, autocast is disabled
    locally, the tensors are cast to float32 (no-op for those already float32, such as cached
    bases) and the result is cast back to ``tensors[0].dtype`` (the autocast dtype for an
    activation), so callers see the dtype they passed in. Otherwise this is exactly
    ``fn(*tensors)``: no cast and no extra operation, so float32 results are unchanged.
    """
    device_type = tensors[0].device.type
    if not autocast_enabled(device_type):
        return fn(*tensors)
    with torch.autocast(device_type, enabled=False):
        out = fn(*(t.float() for t in tensors))
    return out.to(tensors[0].dtype)


def attenuate(spectrum: Tensor, attenuation: Tensor) -> Tensor:
    """``spectrum * attenuation`` in the spectrum's dtype, (B, H, W, C) * (H, W, C) (or the
    same as rows: (B, H*W, C) * (H*W, C)).

    The spectrum is a fresh tensor (a transform's output), so where the in-place rule allows it
    (:func:`~vheat_mm.policy.may_overwrite`) it is scaled in place: for a bfloat16
    spectrum and a float32 attenuation the products are computed in float32 and rounded once,
    to bfloat16. Otherwise (with autograd) the attenuation is cast to the spectrum's dtype
    first. (Type promotion alone would give a float32 tensor of the spectrum's size, twice the
    bytes, which the next transform casts straight back under autocast.) On
    CUDA in a half type, training runs :func:`vheat_mm.kernels.attenuate_with_grad`: the float32
    attenuation applied in float32, and both gradients from one kernel.
    """
    if may_overwrite(spectrum, attenuation):
        return spectrum.mul_(attenuation)
    return attenuate_with_grad(spectrum, attenuation)


def _spectrum(u: Tensor, basis_h: Tensor, basis_w: Tensor, attenuation: Tensor) -> Tensor:
    """DCT2D(u), shaped as the attenuation broadcasts over it: (B, H, W, C), or (B, H*W, C)
    for an attenuation of rows (H*W, C)."""
    spectrum = _transform_2d(u, basis_h, basis_w)
    if attenuation.dim() == 2:
        return spectrum.view(u.shape[0], -1, u.shape[-1])
    return spectrum.view(u.shape[0], basis_h.shape[-2], basis_w.shape[-2], u.shape[-1])


def _conduct(u: Tensor, basis_h: Tensor, basis_w: Tensor, inverse_h: Tensor,
             inverse_w: Tensor, attenuation: Tensor) -> Tensor:
    if _records_conduction(u, attenuation):
        return _HeatConduction.apply(u, attenuation, basis_h, basis_w, inverse_h, inverse_w)[0]
    spectrum = attenuate(_spectrum(u, basis_h, basis_w, attenuation), attenuation)
    return _transform_2d(spectrum, inverse_h, inverse_w).view(u.shape)


def _records_conduction(u: Tensor, attenuation: Tensor) -> bool:
    """Whether autograd records the conduction as :class:`_HeatConduction`: in eager training
    of one dtype without autocast (where :func:`attenuate` is the plain product)."""
    return (not is_traced(u, attenuation) and needs_grad(u, attenuation)
            and u.dtype == attenuation.dtype and not autocast_enabled(u.device.type)
            and not is_compiling() and not torch.jit.is_tracing())


class _HeatConduction(torch.autograd.Function):
    """IDCT2D(DCT2D(u) * attenuation) whose backward applies the adjoint transforms itself.

    The forward and the gradients are those autograd gives the same steps, value for value
    (the same products in the same order); autograd's backward would also transpose the bases
    and view its way back through every step. Runs where :func:`_records_conduction` says; a
    first derivative only (``torch.func`` transforms included), as the heat conduction of
    a training step needs.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(u: Tensor, attenuation: Tensor, basis_h: Tensor, basis_w: Tensor,
                inverse_h: Tensor, inverse_w: Tensor) -> tuple[Tensor, Tensor]:
        """The result and, for the backward, the spectrum DCT2D(u)."""
        spectrum = _spectrum(u, basis_h, basis_w, attenuation)
        return _transform_2d(spectrum * attenuation, inverse_h, inverse_w).view(u.shape), spectrum

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
        u, attenuation, basis_h, basis_w, inverse_h, inverse_w = inputs
        spectrum = output[1]
        ctx.mark_non_differentiable(spectrum)
        ctx.set_materialize_grads(False)  # no zeros for the spectrum's gradient, never used
        ctx.save_for_backward(spectrum, attenuation, basis_h, basis_w, inverse_h, inverse_w)
        ctx.u_shape = u.shape

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor | None, _: None):
        if grad is None:
            return None, None, None, None, None, None
        spectrum, attenuation, basis_h, basis_w, inverse_h, inverse_w = ctx.saved_tensors
        # the adjoint of the inverse transform applies the forward bases, and vice versa
        grad = _transform_2d_reversed(grad, basis_h, basis_w).view(spectrum.shape)
        grad_attenuation = None
        if ctx.needs_input_grad[1]:
            product = grad * spectrum
            grad_attenuation = (product.sum(0) if product.shape[1:] == attenuation.shape
                                else product.sum_to_size(attenuation.shape))
        grad_u = None
        if ctx.needs_input_grad[0]:
            grad_u = _transform_2d_reversed(grad * attenuation, inverse_h, inverse_w)
            grad_u = grad_u.view(ctx.u_shape)
        return grad_u, grad_attenuation, None, None, None, None


def heat_conduction(u: Tensor, basis_h: Tensor, basis_w: Tensor, attenuation: Tensor, *,
                    inverse: tuple[Tensor, Tensor] | None = None,
                    float32: bool = False) -> Tensor:
    """Spread channels-last u (B, H, W, C) by heat conduction.

    ``attenuation`` is decay ** k of shape (H, W, C), or the same as rows (H*W, C); the result
    is IDCT2D(DCT2D(u) * attenuation). With attenuation == 1 (k = 0) this is the identity up to
    rounding. The bases are (H, H) and (W, W), or those of :func:`broadcast_bases` for u's
    batch; ``inverse``, where the caller holds them, are their transposes (else they are taken
    here).

    Under autocast the matmuls, and so the result, are in the autocast dtype; with
    ``float32=True`` the two transforms and the product run in float32 instead and the result
    has ``u``'s dtype. Without autocast ``float32`` has no effect.
    """
    bases = basis_h, basis_w, *(inverse_bases(basis_h, basis_w) if inverse is None else inverse)
    if float32:
        return float32_under_autocast(_conduct, u, *bases, attenuation)
    return _conduct(u, *bases, attenuation)


def has_size(tensor: Tensor, size: tuple[int, int]) -> bool:
    """Whether ``tensor`` (H, W, ...) is of (H, W) ``size``; False for a symbolic size
    (``torch.export`` with dynamic H and W), so that the graph resizes at every size (the
    identity at the tensor's own size) instead of holding for one size only."""
    if any(isinstance(s, torch.SymInt) for s in size):
        return False
    return tuple(tensor.shape[:2]) == (int(size[0]), int(size[1]))


def resize_freq_embed(freq_embed: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize a (H, W, C) frequency embedding to ``size`` bicubically (align_corners=False).

    The one resizing used everywhere: at any input size in the forward pass, when a checkpoint
    of another resolution is loaded, and by ``interpolate4downstream.py --mode bicubic``.
    Interpolation runs in float32 (bicubic is not implemented for every half type) and the result
    keeps the input's dtype. A tensor already of that size is returned as it is.
    """
    if freq_embed.dim() != 3:
        raise ValueError(f'freq_embed must be (H, W, C), got shape {tuple(freq_embed.shape)}')
    if has_size(freq_embed, size):
        return freq_embed
    size = tuple(s if isinstance(s, torch.SymInt) else int(s) for s in size)
    grid = freq_embed.permute(2, 0, 1).unsqueeze(0).float()
    resized = F.interpolate(grid, size=size, mode='bicubic', align_corners=False)
    return resized[0].permute(1, 2, 0).to(freq_embed.dtype)


def pad_freq_embed(freq_embed: Tensor, size: tuple[int, int]) -> Tensor:
    """Zero-pad a (H, W, C) frequency embedding at the bottom and right to ``size``.

    What the official ``interpolate4downstream.py`` writes (and ``interpolate4downstream.py``
    here by default); the backbone's load-time resize under ``freq_embed_resize='pad'``. The (H, W)
    corner keeps its values, the new rows and columns are 0. Padding cannot shrink: a ``size``
    smaller than (H, W) in either dimension is a ValueError. A tensor already of that size is
    returned as it is.
    """
    if freq_embed.dim() != 3:
        raise ValueError(f'freq_embed must be (H, W, C), got shape {tuple(freq_embed.shape)}')
    size = (int(size[0]), int(size[1]))
    pad_h, pad_w = size[0] - freq_embed.shape[0], size[1] - freq_embed.shape[1]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f'cannot zero-pad a freq_embed of shape {tuple(freq_embed.shape)} to '
                         f'the smaller {size}; bicubic resizing can shrink it')
    if not pad_h and not pad_w:
        return freq_embed
    return F.pad(freq_embed, (0, 0, 0, pad_w, 0, pad_h))
