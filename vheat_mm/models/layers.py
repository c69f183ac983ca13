"""Generic layers of vHeat on channels-last activations, and the rule for updating in place.

The network runs channels-last (B, H, W, C) from the stem to the last stage: linear layers and
layer norms act on the contiguous last dimension, and convolutions see the same memory as an
NCHW tensor in ``torch.channels_last`` format, so no layer needs a permute copy (and where a
convolution's output goes straight into the next one, the permutes between them cancel:
:func:`as_nchw`). Each module's ``forward`` is what runs (forward hooks on it fire); the fused
kernels of :mod:`vheat_mm.kernels` run inside the forward of the module whose parameters they
use.

In place. Every branch returns a fresh tensor: the norms, pointwise linears, depthwise
convolution and MLP here, and the HCO (:mod:`.heat_operator`); ``ChannelsLast``, a free view,
is no branch. So the step after a branch may write into the branch's output: GELU into fc1's
product, SiLU into the gate z, the layer scale and the residual sum into a block's branch
output, the attenuation into the spectrum. :func:`vheat_mm.policy.may_overwrite` (the in-place
rule) decides at every such site, so a branch that returns its input (an ``nn.Identity`` put in
its place, say) takes the out-of-place path instead of overwriting the residual stream.
(Filling a tensor that the same function has just allocated, as drop_path's mask, is no update
of another step's result.) tests/test_inplace.py checks the rule.

Symbolic tracing (``torch.fx.symbolic_trace``, torchvision's ``create_feature_extractor``).
A traced graph may return any node as a feature, so no traced step overwrites a node's value
(the in-place rule). Each call into :mod:`vheat_mm.kernels` (and
:func:`pointwise`) is one node (``torch.fx.wrap``): they choose their path from the device,
dtype and autograd state, which a trace does not know. :func:`traced_as_one_node` makes a whole
module one node (the HCO, whose caches depend on the feature size).
"""
from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Callable

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from ..compat import is_compiling
from ..kernels import (depthwise_conv3x3, layer_norm, layer_norm_silu, linear_gelu,
                       residual_layer_norm)
from ..policy import is_traced, may_overwrite, observed_by_hooks

__all__ = ['ChannelsLast', 'DepthwiseConv3x3', 'Downsample', 'GatedLayerNorm', 'GlobalAvgPool',
           'LayerNorm', 'Mlp', 'PointwiseConv', 'PointwiseLinear', 'ResidualLayerNorm',
           'SplitPointwiseLinear', 'Stem', 'as_nchw', 'as_nhwc', 'drop_path', 'pointwise',
           'pointwise_as_conv', 'pointwise_chunks', 'pointwise_gelu', 'traced_as_one_node']

# One node each in a symbolic trace (module docstring); pointwise_gelu and call_module are
# defined below.
for _name in ('layer_norm', 'layer_norm_silu', 'residual_layer_norm', 'depthwise_conv3x3',
              'pointwise', 'pointwise_gelu', 'call_module'):
    torch.fx.wrap(_name)
del _name


def traced_as_one_node(forward: Callable) -> Callable:
    """Decorator of a module's ``forward``: a symbolic trace records the module's call as one
    node, which calls the module at run time, as it would a leaf module (its hooks fire, and
    the in-place rule sees the hooks of its submodules). Eager calls run ``forward`` as it is."""

    @functools.wraps(forward)
    def call(self: nn.Module, *args):
        if is_traced(*args):
            return call_module(self, *args)
        return forward(self, *args)
    return call


def call_module(module: nn.Module, *args):
    """``module(*args)``, with :func:`observed_by_hooks` for the module (one node when traced)."""
    with observed_by_hooks(module):
        return module(*args)


def as_nchw(x: Tensor) -> Tensor:
    """NCHW view of a channels-last (B, H, W, C) tensor (memory format channels_last, no copy).

    Where x is itself the channels-last view of an NCHW tensor (a convolution's output, as
    :func:`pointwise` and the depthwise convolution give it), that tensor: the two permutes
    cancel (:func:`_permuted`)."""
    return _permuted(x, (0, 3, 1, 2))


def as_nhwc(x: Tensor) -> Tensor:
    """Channels-last (B, H, W, C) view of an NCHW tensor, the inverse of :func:`as_nchw`;
    likewise the tensor whose NCHW view x is, where it is one."""
    return _permuted(x, (0, 2, 3, 1))


def _permuted(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """``x.permute(dims)``; where x is a view whose base already is that view (the same memory,
    shape and strides: x was made by the inverse permute), the base itself, so that neither
    permute runs, nor its backward. Shapes, strides and offsets are compared on the host; no
    value is read. (Not in a symbolic trace, nor while ``torch.compile`` or ``torch.jit``
    traces: their graphs take the permute.)"""
    base = None if is_traced(x) or is_compiling() or torch.jit.is_tracing() else x._base
    if (base is not None and base.shape == tuple(x.shape[d] for d in dims)
            and base.stride() == tuple(x.stride(d) for d in dims)
            and base.storage_offset() == x.storage_offset() and base.dtype == x.dtype
            and base.requires_grad == x.requires_grad):
        return base
    return x.permute(dims)


def pointwise_as_conv(x: Tensor) -> bool:
    """Whether :func:`pointwise` runs as a 1x1 convolution (else as ``F.linear``).

    On CPU, oneDNN's 1x1 convolution of the channels-last NCHW view is the faster of the two;
    on CUDA, cuBLAS's ``F.linear`` is in bfloat16 and float16 (measured figures:
    docs/speed.md). CUDA float32 keeps the convolution, which also matches the official MLP's
    1x1 convolutions (cuDNN's TF32 setting applies to it).
    """
    return x.device.type == 'cpu' or x.dtype == torch.float32


def pointwise(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """The linear map ``weight`` (C_out, C_in), or (C_out, C_in, 1, 1), on the channels of
    channels-last x (B, H, W, C_in), giving (B, H, W, C_out).

    A 1x1 convolution of the NCHW view (channels_last memory, so no copy in or out) or
    ``F.linear`` on the contiguous last dimension, as :func:`pointwise_as_conv` says; the two
    differ only by summation order.
    """
    if pointwise_as_conv(x):
        return as_nhwc(_conv1x1(x, weight, bias))
    return F.linear(x, weight.flatten(1), bias)


def _conv1x1(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """:func:`pointwise` as a 1x1 convolution, its output left NCHW."""
    return F.conv2d(as_nchw(x), _conv_weight(weight), bias)


def pointwise_chunks(x: Tensor, weight: Tensor, bias: Tensor, chunks: int) -> tuple[Tensor, ...]:
    """``pointwise(x, weight, bias).chunk(chunks, -1)``: as a convolution
    (:func:`pointwise_as_conv`) exactly that, one product whose chunks are views of it; as
    ``F.linear``, one product per chunk of ``weight`` and ``bias``, so that each chunk comes
    out contiguous (as the CUDA kernels that read them want it)."""
    if pointwise_as_conv(x):
        return pointwise(x, weight, bias).chunk(chunks, -1)
    return tuple(F.linear(x, w, b) for w, b
                 in zip(weight.flatten(1).chunk(chunks), bias.chunk(chunks)))


def _conv_weight(weight: Tensor) -> Tensor:
    """A linear's weight (C_out, C_in) as that of a 1x1 convolution (a view); a convolution's
    weight as it is."""
    return weight.view(*weight.shape, 1, 1) if weight.dim() == 2 else weight


def pointwise_gelu(x: Tensor, weight: Tensor, bias: Tensor | None, *,
                   inplace: bool = False) -> Tensor:
    """The exact GELU of :func:`pointwise`: :func:`vheat_mm.kernels.linear_gelu` with
    :func:`pointwise`'s product as its eager one. As a convolution, GELU runs on its NCHW
    output, and the result is the channels-last view of that, which the next
    :func:`pointwise` reads as it is (:func:`as_nchw`)."""
    if pointwise_as_conv(x):
        return linear_gelu(x, weight, bias, _conv1x1, inplace=inplace, output=as_nhwc)
    return linear_gelu(x, weight, bias, pointwise, inplace=inplace)


def drop_path(x: Tensor, drop_prob: float, training: bool) -> Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability drop_prob."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class ChannelsLast(nn.Module):
    """NCHW -> (B, H, W, C) as a view; free for tensors in ``torch.channels_last`` format."""

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 2, 3, 1)


class GlobalAvgPool(nn.Module):
    """Mean over H and W of a channels-last (B, H, W, C) tensor."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(1, 2))


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last dimension that keeps its input's dtype under autocast.

    Statistics and arithmetic are float32 inside; on CUDA in bfloat16 or float16 it runs the
    Triton kernel of :func:`vheat_mm.kernels.layer_norm`.
    """

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)


class GatedLayerNorm(LayerNorm):
    """The HCO's output norm with its gate: ``LN(u) * SiLU(z)``, one kernel on CUDA.

    SiLU is computed in ``z``'s storage where :func:`~vheat_mm.policy.may_overwrite` allows it.
    """

    def forward(self, u: Tensor, z: Tensor) -> Tensor:
        return layer_norm_silu(u, z, self.weight, self.bias, self.eps,
                               inplace=may_overwrite(z, u, self.weight, self.bias))


class ResidualLayerNorm(LayerNorm):
    """The norm of a post-norm branch, which may also add it to the residual stream.

    ``norm(y)`` is ``LN(y)``; ``norm(y, residual=x, gamma=g)`` is ``x + g * LN(y)`` in one step
    (one kernel on CUDA; ``gamma`` None means 1), written into ``y``'s storage where
    :func:`~vheat_mm.policy.may_overwrite` allows it.
    """

    def forward(self, y: Tensor, residual: Tensor | None = None,
                gamma: Tensor | None = None) -> Tensor:
        if residual is None:
            return super().forward(y)
        return residual_layer_norm(
            residual, y, self.weight, self.bias, self.eps, gamma,
            inplace=may_overwrite(y, residual, gamma, self.weight, self.bias))


class DepthwiseConv3x3(nn.Conv2d):
    """3x3 depthwise convolution with bias (padding 1) on channels-last (B, H, W, C) input.

    The weight is that of ``nn.Conv2d(dim, dim, 3, padding=1, groups=dim)``, as in the official
    checkpoints; :func:`vheat_mm.kernels.depthwise_conv3x3` runs it.
    """

    def __init__(self, dim: int):
        super().__init__(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        return depthwise_conv3x3(x, self.weight, self.bias)


class PointwiseLinear(nn.Linear):
    """``nn.Linear`` (weight (C_out, C_in)) on the channels of channels-last input, run by
    :func:`pointwise` (a 1x1 convolution or ``F.linear``, whichever is faster there)."""

    def forward(self, x: Tensor) -> Tensor:
        return pointwise(x, self.weight, self.bias)


class SplitPointwiseLinear(PointwiseLinear):
    """A :class:`PointwiseLinear` whose output comes as ``chunks`` tensors of equal width.

    The values of ``linear(x).chunk(chunks, dim=-1)`` (:func:`pointwise_chunks`).
    """

    def __init__(self, in_features: int, out_features: int, *, chunks: int):
        if chunks < 1 or out_features % chunks:
            raise ValueError(f'chunks must be a positive divisor of out_features '
                             f'({out_features}), got {chunks}')
        super().__init__(in_features, out_features)
        self.chunks = chunks

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return pointwise_chunks(x, self.weight, self.bias, self.chunks)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, chunks={self.chunks}'


class PointwiseConv(nn.Conv2d):
    """1x1 ``nn.Conv2d`` (weight (C_out, C_in, 1, 1), as the official MLP's) on the channels of
    channels-last input, run by :func:`pointwise`, optionally followed by the exact GELU
    (``activation='gelu'``: one kernel on CUDA in half types, else GELU in the product's storage
    where :func:`~vheat_mm.policy.may_overwrite` allows it)."""

    def __init__(self, in_channels: int, out_channels: int, *, activation: str | None = None):
        if activation not in (None, 'gelu'):
            raise ValueError(f"activation must be None or 'gelu', got {activation!r}")
        super().__init__(in_channels, out_channels, 1)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        if self.activation == 'gelu':
            return pointwise_gelu(x, self.weight, self.bias,
                                  inplace=may_overwrite(None, x, self.weight, self.bias))
        return pointwise(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}'
                + (f', activation={self.activation}' if self.activation else ''))


class Mlp(nn.Module):
    """fc1 with GELU -> fc2 on channels-last input."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = PointwiseConv(dim, hidden_dim, activation='gelu')
        self.fc2 = PointwiseConv(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.fc1(x))


class Stem(nn.Sequential):
    """Two stride-2 3x3 convolutions with LayerNorm (eps 1e-6) and GELU: (B, 3, H, W) -> (B, H/4, W/4, C).

    Each norm sits at index 1 of a small sequential behind a free permute, as in the official
    checkpoints (``patch_embed.norm1.1.weight``).
    """

    STRIDE = 2 * 2  #: conv1's and conv2's: the stride of stage 0's features (``PATCH_SIZE``)

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(OrderedDict(
            conv1=nn.Conv2d(in_channels, out_channels // 2, 3, stride=2, padding=1),
            norm1=nn.Sequential(ChannelsLast(), LayerNorm(out_channels // 2, eps=1e-6)),
            act=nn.GELU(),
            conv2=nn.Conv2d(out_channels // 2, out_channels, 3, stride=2, padding=1),
            norm2=nn.Sequential(ChannelsLast(), LayerNorm(out_channels, eps=1e-6)),
        ))

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.norm1(self.conv1(x.contiguous(memory_format=torch.channels_last))))
        return self.norm2(self.conv2(as_nchw(x)))


class Downsample(nn.Sequential):
    """Stride-2 3x3 convolution without bias, then LayerNorm; channels-last in and out."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1, bias=False),
                         LayerNorm(out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self[1](as_nhwc(self[0](as_nchw(x))))
