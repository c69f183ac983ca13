"""vHeat: vision backbone built on heat conduction (arXiv 2405.16555), in plain PyTorch.

The network runs channels-last (B, H, W, C) from the stem to the last stage: linear layers and
layer norms act on the contiguous last dimension, and convolutions see the same memory as an
NCHW tensor in ``torch.channels_last`` format, so no layer needs a permute copy. Module names and
parameter shapes follow the official implementation, so its checkpoints load with strict=True.

Public builders: :class:`VHeat` (classifier) and :class:`VHeatFeatures` (multi-scale backbone).
"""
from __future__ import annotations

import logging
import math
from collections import OrderedDict
from typing import Callable, Hashable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from ..kernels import depthwise_conv3x3, layer_norm, layer_norm_silu, linear_gelu, \
    needs_grad, residual_layer_norm
from .heat import (dct_basis, float32_under_autocast, heat_conduction, heat_log_decay_map,
                   resize_freq_embed)

__all__ = ['ARCH_SETTINGS', 'resolve_arch', 'VHeat', 'VHeatFeatures', 'HeatConductionOperator',
           'fit_freq_embeds']

logger = logging.getLogger(__name__)

ARCH_SETTINGS: dict[str, dict] = {
    'tiny': dict(depths=(2, 2, 6, 2), dims=96, post_norm=False, layer_scale=None),
    'small': dict(depths=(2, 2, 18, 2), dims=96, post_norm=True, layer_scale=1e-5),
    'base': dict(depths=(2, 2, 18, 2), dims=128, post_norm=True, layer_scale=1e-5),
}
_ARCH_ALIASES = {'t': 'tiny', 's': 'small', 'b': 'base'}
_ARCH_KEYS = {'depths', 'dims', 'post_norm', 'layer_scale', 'mlp_ratio'}
PATCH_SIZE = 4


class Arch(NamedTuple):
    """A resolved architecture: per-stage depths and widths, block form, MLP ratio."""
    depths: tuple[int, ...]
    dims: tuple[int, ...]
    post_norm: bool
    layer_scale: float | None
    mlp_ratio: float


def resolve_arch(arch: str | dict) -> Arch:
    """Turn a name of :data:`ARCH_SETTINGS` (or its initial) or a dict into an :class:`Arch`.

    A dict needs ``depths`` and ``dims`` (an int c means widths c, 2c, 4c, 8c...) and may set
    ``post_norm`` (default False), ``layer_scale`` (default None) and ``mlp_ratio`` (default 4).
    """
    if isinstance(arch, str):
        name = _ARCH_ALIASES.get(arch.lower(), arch.lower())
        if name not in ARCH_SETTINGS:
            raise ValueError(f'unknown vHeat arch {arch!r}; choose one of '
                             f'{sorted(ARCH_SETTINGS)} (or their initials), or pass a dict '
                             f'with keys {sorted(_ARCH_KEYS)}')
        arch = ARCH_SETTINGS[name]
    if not isinstance(arch, dict):
        raise TypeError(f'arch must be a name or a dict, got {type(arch).__name__}')
    unknown = set(arch) - _ARCH_KEYS
    missing = {'depths', 'dims'} - set(arch)
    if unknown or missing:
        raise ValueError(f'arch dict: unknown keys {sorted(unknown)}, missing keys '
                         f'{sorted(missing)}; allowed keys are {sorted(_ARCH_KEYS)}')
    depths = tuple(int(d) for d in arch['depths'])
    dims = arch['dims']
    dims = tuple(int(dims * 2**i) for i in range(len(depths))) if isinstance(dims, int) \
        else tuple(int(d) for d in dims)
    if len(dims) != len(depths) or not depths or min(depths) < 1 or min(dims) < 1:
        raise ValueError(f'arch needs one positive depth and width per stage, got depths='
                         f'{depths}, dims={dims}')
    layer_scale = arch.get('layer_scale')
    return Arch(depths, dims, bool(arch.get('post_norm', False)),
                None if layer_scale is None else float(layer_scale),
                float(arch.get('mlp_ratio', 4.0)))


def _nchw(x: Tensor) -> Tensor:
    """NCHW view of a channels-last (B, H, W, C) tensor (memory format channels_last, no copy)."""
    return x.permute(0, 3, 1, 2)


def pointwise_as_conv(x: Tensor) -> bool:
    """Whether :func:`pointwise` runs as a 1x1 convolution (else as ``F.linear``).

    On CPU, oneDNN's 1x1 convolution of the channels-last NCHW view ran these products 1.3x
    (batch 16 at 224) to 2x (batch 1) faster than ``F.linear`` (2 threads, float32). On CUDA,
    cuBLAS's ``F.linear`` is the faster one in bfloat16 and float16 (docs/benchmark_gpu.md);
    float32 keeps the convolution, which also matches the official MLP's 1x1 convolutions
    (cuDNN's TF32 setting applies to it).
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
        if weight.dim() == 2:
            weight = weight[:, :, None, None]
        return F.conv2d(_nchw(x), weight, bias).permute(0, 2, 3, 1)
    return F.linear(x, weight.flatten(1), bias)


class ChannelsLast(nn.Module):
    """NCHW -> (B, H, W, C) as a view; free for tensors in ``torch.channels_last`` format."""

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 2, 3, 1)


def drop_path(x: Tensor, drop_prob: float, training: bool) -> Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability drop_prob."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


def _may_overwrite() -> bool:
    """Whether fresh intermediate tensors may be updated in place: autograd is not recording.

    Under ``no_grad`` / ``inference_mode`` the forward pass reuses each large intermediate for
    the next elementwise step (GELU, SiLU, gating, residual sum) instead of allocating a new
    tensor; the values are the same. With gradients enabled every step allocates, as autograd
    may need the operands for the backward pass.
    """
    return not torch.is_grad_enabled()


class Stem(nn.Sequential):
    """Two stride-2 3x3 convolutions with LayerNorm (eps 1e-6) and GELU: (B, 3, H, W) -> (B, H/4, W/4, C).

    Each norm sits at index 1 of a small sequential behind a free permute, as in the official
    checkpoints (``patch_embed.norm1.1.weight``).
    """

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
        return self.norm2(self.conv2(_nchw(x)))


class Downsample(nn.Sequential):
    """Stride-2 3x3 convolution without bias, then LayerNorm; channels-last in and out."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1, bias=False),
                         LayerNorm(out_dim))

    def forward(self, x: Tensor) -> Tensor:
        conv, norm = self
        return norm(conv(_nchw(x)).permute(0, 2, 3, 1))


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last dimension that keeps its input's dtype under autocast.

    Statistics and arithmetic are float32 inside; on CUDA in bfloat16 or float16 it runs the
    Triton kernel of :func:`vheat_mm.kernels.layer_norm`.
    """

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)


class GatedLayerNorm(LayerNorm):
    """The HCO's output norm with its gate: ``LN(u) * SiLU(z)``, one kernel on CUDA.

    When autograd is off (:func:`_may_overwrite`) the eager path computes SiLU in ``z``'s
    storage: callers pass a ``z`` they no longer need.
    """

    def forward(self, u: Tensor, z: Tensor) -> Tensor:
        return layer_norm_silu(u, z, self.weight, self.bias, self.eps, inplace=_may_overwrite())


class DepthwiseConv3x3(nn.Conv2d):
    """3x3 depthwise convolution with bias (padding 1) on channels-last (B, H, W, C) input.

    The weight is that of ``nn.Conv2d(dim, dim, 3, padding=1, groups=dim)``, as in the official
    checkpoints; :func:`vheat_mm.kernels.depthwise_conv3x3` runs it.
    """

    def __init__(self, dim: int):
        super().__init__(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        return depthwise_conv3x3(x, self.weight, self.bias)


class PointwiseLinear(nn.Module):
    """A linear map of the channels of channels-last input (:func:`pointwise`), optionally
    followed by the exact GELU (``activation='gelu'``, one kernel on CUDA in half types).

    The weight keeps the convolution's (out, in, 1, 1) shape of the official checkpoints.
    """

    def __init__(self, in_features: int, out_features: int, activation: str | None = None):
        super().__init__()
        if activation not in (None, 'gelu'):
            raise ValueError(f"activation must be None or 'gelu', got {activation!r}")
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(out_features, in_features, 1, 1))
        self.bias = nn.Parameter(torch.empty(out_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(in_features)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        if self.activation == 'gelu':
            return linear_gelu(x, self.weight, self.bias, pointwise, inplace=_may_overwrite())
        return pointwise(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f'in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}'
                + (f', activation={self.activation}' if self.activation else ''))


class Mlp(nn.Module):
    """fc1 with GELU (in place when autograd is off, see :func:`_may_overwrite`) -> fc2 on
    channels-last input."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = PointwiseLinear(dim, hidden_dim, activation='gelu')
        self.fc2 = PointwiseLinear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.fc1(x))


class CacheBudget:
    """A byte limit shared by the :class:`TensorCache` s of one model.

    Before an entry is stored, the least recently used entries of any of the caches are dropped
    until the new one fits; an entry larger than the whole limit is not stored. Evaluating a
    detector at hundreds of distinct padded sizes then keeps the caches of the last few sizes
    only, instead of every size seen.
    """

    def __init__(self, limit_bytes: int):
        self.limit_bytes = int(limit_bytes)
        self._order: OrderedDict[tuple[TensorCache, str], None] = OrderedDict()

    @property
    def nbytes(self) -> int:
        """Bytes held now by the entries of every cache under this budget."""
        return sum(cache.entry_nbytes(name) for cache, name in self._order)

    def used(self, cache: TensorCache, name: str) -> None:
        self._order[(cache, name)] = None
        self._order.move_to_end((cache, name))

    def forget(self, cache: TensorCache, name: str) -> None:
        self._order.pop((cache, name), None)

    def make_room(self, nbytes: int) -> bool:
        """Drop least recently used entries until ``nbytes`` more fit; False if they never do."""
        if nbytes > self.limit_bytes:
            return False
        held = self.nbytes
        while self._order and held + nbytes > self.limit_bytes:
            cache, name = next(iter(self._order))
            held -= cache.entry_nbytes(name)
            cache.drop(name)
        return True


class TensorCache(nn.Module):
    """Derived tensors kept as non-persistent buffers, keyed by name, within a byte budget.

    Buffers follow ``module.to()`` and stay out of the state dict. An entry is rebuilt when its
    device or dtype no longer matches the request, or when the request's ``tag`` (e.g. the
    versions of the weights it was derived from) differs from the one it was built with. The
    caches of one model share a :class:`CacheBudget` (set by the model; a cache on its own has
    its own, of ``DEFAULT_LIMIT_BYTES``). Entries never require grad and are built outside
    inference mode and with autocast off, so they can be used in any later mode and do not depend
    on the autocast state of the call that built them.

    While ``torch.compile`` or ``torch.export`` traces (:func:`torch.compiler.is_compiling`),
    the cache is read-only: an entry of the right device and dtype is used as it is (its tag,
    storage pointers and versions, cannot be traced, so pass ``tag=None`` there), and a missing
    one is computed in the graph without being stored (registering a buffer while tracing would
    change the module and force a recompilation on the next call).
    """

    DEFAULT_LIMIT_BYTES = 512 * 2**20

    def __init__(self, budget: CacheBudget | None = None):
        super().__init__()
        self.budget = budget or CacheBudget(self.DEFAULT_LIMIT_BYTES)
        self._tags: dict[str, Hashable] = {}

    def get(self, key: str, build: Callable[[], Tensor], *, device: torch.device,
            dtype: torch.dtype, tag: Hashable = None) -> Tensor:
        name = f'cache_{key}'
        cached = self._buffers.get(name)
        if torch.compiler.is_compiling():
            if cached is not None and cached.device == device and cached.dtype == dtype:
                return cached
            with torch.no_grad(), torch.autocast(device.type, enabled=False):
                return build().to(device=device, dtype=dtype)
        if cached is not None and cached.device == device and cached.dtype == dtype \
                and self._tags.get(name) == tag:
            self.budget.used(self, name)
            return cached
        self.drop(name)
        with torch.inference_mode(False), torch.no_grad(), \
                torch.autocast(device.type, enabled=False):
            cached = build().to(device=device, dtype=dtype)
        if self.budget.make_room(cached.numel() * cached.element_size()):
            self.register_buffer(name, cached, persistent=False)
            self._tags[name] = tag
            self.budget.used(self, name)
        return cached

    def entry_nbytes(self, name: str) -> int:
        buf = self._buffers.get(name)
        return 0 if buf is None else buf.numel() * buf.element_size()

    def drop(self, name: str) -> None:
        self._buffers.pop(name, None)
        self._tags.pop(name, None)
        self.budget.forget(self, name)

    def clear(self) -> None:
        for name in list(self._buffers):
            self.drop(name)

    def extra_repr(self) -> str:
        return f'entries={list(self._buffers)}'


def weights_tag(*tensors: Tensor) -> tuple[tuple[int, int], ...]:
    """Identifies the current values of ``tensors``: storage and in-place version of each.

    Optimizer steps and ``load_state_dict`` modify parameters in place, which bumps the version,
    so a cache tagged with this is rebuilt after them.
    """
    return tuple((t.data_ptr(), t._version) for t in tensors)


def may_use_cache(deploy: bool, *weights: Tensor) -> bool:
    """Whether tensors derived from ``weights`` may come from (and go into) a :class:`TensorCache`.

    Yes in the deploy form (frozen weights), and whenever autograd will not need them (no
    gradient enabled, or none of the weights requires one); no while ``torch.compile`` or
    ``torch.export`` traces outside the deploy form, where the weights' versions that tag an
    entry cannot be checked.
    """
    if torch.compiler.is_compiling():
        return deploy
    return deploy or not needs_grad(*weights)


class HeatContext(NamedTuple):
    """What every block of a stage shares at one feature size (H, W)."""
    basis_h: Tensor      # (H, H) DCT-II basis
    basis_w: Tensor      # (W, W) DCT-II basis
    log_decay: Tensor    # (H, W) log of the decay exp(-((n pi/H)^2 + (m pi/W)^2))
    freq_embed: Tensor   # (H, W, C) the stage's frequency embedding at this size
    freq_embed_tag: Hashable  # weights_tag of the stage's freq_embed parameter


class HeatConductionOperator(nn.Module):
    """HCO: dwconv -> Linear(C, 2C) -> [u, z]; u <- IDCT(DCT(u) * decay^k); Linear(LN(u) * SiLU(z)).

    k = ReLU(Linear(freq_embed)) is the learned per-frequency, per-channel conductivity.
    The attenuation decay^k is recomputed on every forward only when gradients may flow to the
    weights (training). Otherwise (evaluation under ``no_grad``, and the deploy form after
    :meth:`switch_to_deploy`) it is computed once per feature size and kept until the weights
    change.

    Under ``torch.autocast`` the attenuation (k and decay^k) is computed in float32 (with k
    from a bfloat16 linear, decay^k is up to 9% off at single high frequencies), the DCT and
    IDCT matmuls in the autocast dtype, and the attenuation is applied to the spectrum in its
    dtype (:func:`~vheat_mm.models.heat.attenuate`); set ``float32_transforms = True`` (on the
    class or an instance) to run the whole heat conduction in float32 (see
    :func:`heat_conduction`).
    """

    float32_transforms: bool = False

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = DepthwiseConv3x3(dim)
        self.linear = nn.Linear(dim, 2 * dim)
        self.out_norm = GatedLayerNorm(dim)
        self.out_linear = nn.Linear(dim, dim)
        self.to_k = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.deploy = False
        self.folded = TensorCache()

    def attenuation(self, ctx: HeatContext) -> Tensor:
        """decay ** k, shape (H, W, C); cached per feature size when :func:`may_use_cache`.

        Otherwise (training, and compiled code outside the deploy form) it is computed anew.
        """
        linear = self.to_k[0]
        if not may_use_cache(self.deploy, ctx.freq_embed, linear.weight, linear.bias):
            return self._decay_pow_k(ctx)
        h, w = ctx.log_decay.shape
        tag = None if torch.compiler.is_compiling() else (
            ctx.freq_embed_tag, weights_tag(linear.weight, linear.bias))
        return self.folded.get(f'{h}x{w}', lambda: self._decay_pow_k(ctx),
                               device=ctx.log_decay.device, dtype=ctx.log_decay.dtype,
                               tag=tag)

    def _decay_pow_k(self, ctx: HeatContext) -> Tensor:
        """decay ** k = exp(k * log decay), in float32 under autocast."""
        return float32_under_autocast(
            lambda log_decay, embed: torch.exp(self.to_k(embed) * log_decay[:, :, None]),
            ctx.log_decay, ctx.freq_embed)

    def forward(self, x: Tensor, ctx: HeatContext) -> Tensor:
        x = self.dwconv(x)
        # Two products instead of chunking one: u and z come out contiguous, with no copy.
        # (The weight is chunked: one autograd node for both halves.)
        (weight_u, weight_z), (bias_u, bias_z) = (self.linear.weight.chunk(2),
                                                  self.linear.bias.chunk(2))
        u = pointwise(x, weight_u, bias_u)
        z = pointwise(x, weight_z, bias_z)
        u = heat_conduction(u, ctx.basis_h, ctx.basis_w, self.attenuation(ctx),
                            float32=self.float32_transforms)
        gated = self.out_norm(u, z)
        return pointwise(gated, self.out_linear.weight, self.out_linear.bias)


class HeatBlock(nn.Module):
    """Residual block: x + gamma1 * HCO branch, then x + gamma2 * MLP branch.

    Pre-norm branches compute f(norm(x)); post-norm branches compute norm(f(x)).
    ``gamma1``/``gamma2`` (layer scale) exist only when ``layer_scale`` is set.
    """

    def __init__(self, dim: int, *, mlp_ratio: float, post_norm: bool,
                 layer_scale: float | None, drop_path: float):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.op = HeatConductionOperator(dim)
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.post_norm = post_norm
        self.drop_path = drop_path
        if layer_scale is not None:
            self.gamma1 = nn.Parameter(torch.full((dim,), layer_scale))
            self.gamma2 = nn.Parameter(torch.full((dim,), layer_scale))
        else:
            self.gamma1 = self.gamma2 = None

    def _residual(self, x: Tensor, branch, norm: LayerNorm, gamma: Tensor | None) -> Tensor:
        if self.post_norm and not (self.training and self.drop_path > 0):
            # x + gamma * LN(branch(x)) in one step (one kernel on CUDA)
            return residual_layer_norm(x, branch(x), norm.weight, norm.bias, norm.eps, gamma,
                                       inplace=_may_overwrite())
        y = norm(branch(x)) if self.post_norm else branch(norm(x))
        if _may_overwrite():
            if gamma is not None:
                y.mul_(gamma)
            return drop_path(y, self.drop_path, self.training).add_(x)
        if gamma is not None:
            y = y * gamma
        return x + drop_path(y, self.drop_path, self.training)

    def forward(self, x: Tensor, ctx: HeatContext) -> Tensor:
        x = self._residual(x, lambda t: self.op(t, ctx), self.norm1, self.gamma1)
        return self._residual(x, self.mlp, self.norm2, self.gamma2)

    def extra_repr(self) -> str:
        return f'post_norm={self.post_norm}, drop_path={self.drop_path:.3f}'


class HeatStage(nn.ModuleList):
    """Blocks of one stage followed by the downsampling into the next (``nn.Identity`` last).

    Indexed as in the official checkpoints: ``layers.i.j`` is block j, ``layers.i.depth`` the
    downsampling. ``forward`` returns the stage output (before downsampling) and the next input.
    """

    def __init__(self, blocks: Sequence[HeatBlock], downsample: nn.Module):
        super().__init__([*blocks, downsample])
        self.with_cp = False

    @property
    def blocks(self) -> list[HeatBlock]:
        return list(self)[:-1]

    def forward(self, x: Tensor, ctx: HeatContext) -> tuple[Tensor, Tensor]:
        for block in self.blocks:
            if self.with_cp and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, ctx, use_reentrant=False)
            else:
                x = block(x, ctx)
        return x, self[-1](x)


def fit_freq_embeds(state_dict: dict[str, Tensor], prefix: str,
                    freq_embed: Sequence[Tensor]) -> list[str]:
    """Resize, in ``state_dict``, each ``{prefix}freq_embed.{i}`` of another (H, W) than the
    model's ``freq_embed[i]`` (same channels) to the model's size, bicubically
    (:func:`~vheat_mm.models.heat.resize_freq_embed`). Returns one line per resized tensor.

    The one place where loaded freq_embeds are fitted: the trunk's load_state_dict pre-hook
    (so every load path: ``load_state_dict``, mmengine's ``load_from`` and resume, ``init_cfg``)
    and :func:`vheat_mm.checkpoint.checkpoint_filter_fn` call it.
    """
    lines = []
    for i, own in enumerate(freq_embed):
        key = f'{prefix}freq_embed.{i}'
        value = state_dict.get(key)
        if isinstance(value, Tensor) and value.dim() == 3 and value.shape[2] == own.shape[2] \
                and value.shape != own.shape:
            state_dict[key] = resize_freq_embed(value, own.shape[:2])
            lines.append(f'{key} {tuple(value.shape)} -> {tuple(own.shape)}')
    return lines


def _fit_loaded_freq_embeds(module: nn.Module, state_dict: dict, prefix: str, *_) -> None:
    """load_state_dict pre-hook of the trunk: fit freq_embeds of another resolution, logged."""
    for line in fit_freq_embeds(state_dict, prefix, module.freq_embed):
        logger.info('vHeat: freq_embed of another resolution resized (bicubic): %s', line)


class _VHeatTrunk(nn.Module):
    """Stem, per-stage frequency embeddings and stages; shared by the classifier and backbone."""

    def __init__(self, arch: str | dict, *, img_size: int, in_channels: int,
                 drop_path_rate: float, with_cp: bool, check_finite: bool = False):
        super().__init__()
        self.arch = resolve_arch(arch)
        self.total_stride = PATCH_SIZE * 2 ** (len(self.arch.depths) - 1)  # of the last stage
        if img_size <= 0 or img_size % self.total_stride:
            raise ValueError(f'img_size must be a positive multiple of {self.total_stride} (the '
                             f'stride of the last stage), got {img_size}')
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate}')
        self.img_size = img_size
        self.in_channels = in_channels
        depths, dims = self.arch.depths, self.arch.dims
        self.num_stages = len(depths)

        self.patch_embed = Stem(in_channels, dims[0])
        res = [img_size // PATCH_SIZE // 2**i for i in range(self.num_stages)]
        self.freq_embed = nn.ParameterList(
            nn.Parameter(torch.zeros(r, r, d)) for r, d in zip(res, dims))
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            blocks = [HeatBlock(dim, mlp_ratio=self.arch.mlp_ratio, post_norm=self.arch.post_norm,
                                layer_scale=self.arch.layer_scale,
                                drop_path=rates[sum(depths[:i]) + j]) for j in range(depth)]
            last = i == self.num_stages - 1
            self.layers.append(HeatStage(blocks, nn.Identity() if last
                                         else Downsample(dim, dims[i + 1])))
        self.register_load_state_dict_pre_hook(_fit_loaded_freq_embeds)
        self.cache_budget = CacheBudget(TensorCache.DEFAULT_LIMIT_BYTES)
        self.heat_cache = TensorCache(self.cache_budget)
        for block in self.blocks():
            block.op.folded.budget = self.cache_budget
        self.deploy = False
        self.with_cp = with_cp
        # Convolution weights in the memory format of their inputs: no conversion per call.
        self.to(memory_format=torch.channels_last)
        self.check_finite = bool(check_finite)

    @property
    def with_cp(self) -> bool:
        """Gradient checkpointing of every block (saves memory, costs a second forward)."""
        return self._with_cp

    @with_cp.setter
    def with_cp(self, value: bool) -> None:
        self._with_cp = bool(value)
        for stage in self.layers:
            stage.with_cp = self._with_cp

    def blocks(self) -> list[HeatBlock]:
        """Every block, stage by stage."""
        return [block for stage in self.layers for block in stage.blocks]

    def cached_nbytes(self) -> int:
        """Bytes held by the caches of derived tensors (bounded by ``cache_budget``)."""
        return self.cache_budget.nbytes

    def clear_caches(self) -> None:
        """Drop every cached derived tensor (they are rebuilt when next needed)."""
        self.heat_cache.clear()
        for block in self.blocks():
            block.op.folded.clear()

    def train(self, mode: bool = True):
        """As ``nn.Module.train``; entering training also frees the caches of derived tensors,
        which evaluation at many sizes may have filled (up to ``cache_budget.limit_bytes``)."""
        super().train(mode)
        if mode:
            self.clear_caches()
        return self

    def reset_parameters(self) -> None:
        """The official initialisation: linears and freq_embed trunc-normal (std .02), norms 1/0."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):  # LayerNorm and GatedLayerNorm too
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for p in self.freq_embed:
            nn.init.trunc_normal_(p, std=0.02)

    def _check_input(self, x: Tensor) -> None:
        """Raise a ValueError for a wrong rank or channel count, or H or W below the stride."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'vHeat expects images of shape (B, {self.in_channels}, H, W), '
                             f'got {tuple(x.shape)}')
        if min(x.shape[2:]) < self.total_stride:
            raise ValueError(f'vHeat needs images of at least {self.total_stride}x'
                             f'{self.total_stride} pixels (the stride of its last stage), got '
                             f'H={x.shape[2]}, W={x.shape[3]}')

    def _check_finite(self, x: Tensor, stage: int | None) -> None:
        """With ``check_finite``, raise a ValueError if ``x`` (the input, or ``stage``'s output)
        holds NaN or inf values; otherwise do nothing."""
        if not self.check_finite or bool(torch.isfinite(x).all()):
            return
        where = 'the input' if stage is None else f'the output of stage {stage}'
        nan, inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
        raise ValueError(f'check_finite: {where} holds {nan + inf} non-finite values of '
                         f'{x.numel()} ({nan} NaN, {inf} inf); every value must be finite')

    def heat_context(self, stage: int, height: int, width: int, like: Tensor) -> HeatContext:
        """Bases, decay map and freq_embed of ``stage`` at feature size (height, width).

        The resized freq_embed is cached like the attenuation (see :func:`may_use_cache`). At
        its own size freq_embed is used as it is (not cached: a buffer aliasing a parameter
        would break ``torch.export``).
        """
        freq_embed = self.freq_embed[stage]
        kw = dict(device=like.device, dtype=freq_embed.dtype)
        tag = None if torch.compiler.is_compiling() else weights_tag(freq_embed)
        if tuple(freq_embed.shape[:2]) == (height, width) \
                or not may_use_cache(self.deploy, freq_embed):
            resized = resize_freq_embed(freq_embed, (height, width))
        else:
            resized = self.heat_cache.get(
                f'freq_embed{stage}_{height}x{width}',
                lambda: resize_freq_embed(freq_embed, (height, width)), **kw, tag=tag)
        return HeatContext(
            self.heat_cache.get(f'dct{height}', lambda: dct_basis(height), **kw),
            self.heat_cache.get(f'dct{width}', lambda: dct_basis(width), **kw),
            self.heat_cache.get(f'log_decay{height}x{width}',
                                lambda: heat_log_decay_map(height, width), **kw),
            resized, tag)

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """Channels-last output of every stage, before its downsampling."""
        self._check_input(x)
        self._check_finite(x, None)
        x = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.layers):
            out, x = stage(x, self.heat_context(i, x.shape[1], x.shape[2], x))
            self._check_finite(out, i)
            outs.append(out)
        return outs

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Fold decay^k into fixed tensors (the official ``infer_mode``) and freeze the weights.

        The attenuation at the native resolution is folded now; any other feature size is
        folded on first use, so the deploy form works at every input size.

        ``torch.compile`` and ``torch.onnx.export`` / ``torch.export`` of the deployed model
        read these tensors without checking the weights' versions (that check cannot be
        traced): call ``switch_to_deploy()`` again after changing the weights. At a size whose
        tensors are not folded yet, the compiled graph or exported program computes them
        itself (nothing is stored while tracing); one eager forward at that size first lets it
        use the folded tensors instead. Either way, compiling with ``dynamic=False`` traces
        once per input size and never again at a size already seen.
        """
        self.clear_caches()
        for i, stage in enumerate(self.layers):
            size = self.freq_embed[i].shape[:2]
            ctx = self.heat_context(i, size[0], size[1], self.freq_embed[i])
            for block in stage.blocks:
                block.op.deploy = True
                block.op.attenuation(ctx)
        self.requires_grad_(False)
        self.deploy = True
        self.eval()


class VHeat(_VHeatTrunk):
    """vHeat image classifier; ``VHeat(arch='tiny')`` is vHeat-T of the paper.

    Args:
        arch: 'tiny' | 'small' | 'base' (or 't' | 's' | 'b'), or a dict with ``depths``,
            ``dims`` and optionally ``post_norm``, ``layer_scale``, ``mlp_ratio``.
        img_size: training resolution; sets the freq_embed sizes (img_size / 4 / 2^i). Inputs of
            any size down to the stride of the last stage (32x32 for four stages) are accepted:
            freq_embed is resized bicubically to each stage's size.
        in_channels: image channels.
        num_classes: classifier outputs.
        drop_path_rate: stochastic depth, rising linearly over the blocks to this value.
        with_cp: gradient checkpointing per block.
        check_finite: debugging aid: check the input and every stage's output for NaN and inf
            and raise a ValueError naming the first place they appear and how many there are.
            Costs a reduction per stage; off (the default) it costs nothing.
    """

    def __init__(self, arch: str | dict = 'tiny', *, img_size: int = 224, in_channels: int = 3,
                 num_classes: int = 1000, drop_path_rate: float = 0.0, with_cp: bool = False,
                 check_finite: bool = False):
        super().__init__(arch, img_size=img_size, in_channels=in_channels,
                         drop_path_rate=drop_path_rate, with_cp=with_cp,
                         check_finite=check_finite)
        self.num_classes = num_classes
        width = self.arch.dims[-1]
        self.classifier = nn.Sequential(
            LayerNorm(width), GlobalAvgPool(), nn.Flatten(1), nn.Linear(width, num_classes))
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.forward_stages(x)[-1])


class GlobalAvgPool(nn.Module):
    """Mean over H and W of a channels-last (B, H, W, C) tensor."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(1, 2))


class VHeatFeatures(_VHeatTrunk):
    """vHeat multi-scale backbone: a tuple of NCHW features, one per index in ``out_indices``.

    Each returned stage output (before its downsampling) passes through a LayerNorm named
    ``outnorm{i}``, as in the official detection and segmentation backbones.

    Args:
        arch, img_size, in_channels, drop_path_rate, with_cp, check_finite: as for
            :class:`VHeat`.
        out_indices: stages whose outputs are returned.
        frozen_stages: -1 freezes nothing; 0 freezes the stem; i > 0 also freezes stages
            0..i-1 (their blocks, downsampling, freq_embed and output norms). Frozen parts stay
            in eval mode after ``train()``.
    """

    def __init__(self, arch: str | dict = 'tiny', *, img_size: int = 224, in_channels: int = 3,
                 drop_path_rate: float = 0.0, out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1, with_cp: bool = False, check_finite: bool = False):
        super().__init__(arch, img_size=img_size, in_channels=in_channels,
                         drop_path_rate=drop_path_rate, with_cp=with_cp,
                         check_finite=check_finite)
        given = (out_indices,) if isinstance(out_indices, int) else tuple(out_indices)
        n = self.num_stages
        out_indices = tuple(i + n if i < 0 else i for i in given)
        if not out_indices or any(not 0 <= i < n for i in out_indices) \
                or len(set(out_indices)) != len(out_indices):
            raise ValueError(f'out_indices must be distinct stage indices in [0, {n}) (or '
                             f'[-{n}, 0) counting from the last), got {given}')
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {self.num_stages}], '
                             f'got {frozen_stages}')
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        for i in out_indices:
            self.add_module(f'outnorm{i}', LayerNorm(self.arch.dims[i]))
        self.reset_parameters()
        self._freeze_stages()

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        frozen = [self.patch_embed]
        for i in range(self.frozen_stages):
            frozen.append(self.layers[i])
            if i in self.out_indices:
                frozen.append(getattr(self, f'outnorm{i}'))
        return frozen

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            module.requires_grad_(False)
        for i in range(max(self.frozen_stages, 0)):
            self.freq_embed[i].requires_grad_(False)

    def train(self, mode: bool = True) -> VHeatFeatures:
        super().train(mode)
        self._freeze_stages()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        stages = self.forward_stages(x)
        return tuple(
            getattr(self, f'outnorm{i}')(stages[i]).permute(0, 3, 1, 2).contiguous()
            for i in self.out_indices)
