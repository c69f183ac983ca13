"""vHeat: vision backbone built on heat conduction (arXiv 2405.16555), in plain PyTorch.

The networks: the architecture table, the residual block (HCO and MLP branches), the stages,
and :class:`VHeatTrunk` (stem, per-stage frequency embeddings, stages) with its two models,
:class:`VHeat` (classifier) and :class:`VHeatFeatures` (multi-scale backbone). The layers are in
:mod:`.layers`, the Heat Conduction Operator and its caches in :mod:`.heat_operator`. Module
names and parameter shapes follow the official implementation, so its checkpoints load with
strict=True.

The models trace symbolically (``torch.fx.symbolic_trace``, torchvision's
``create_feature_extractor``): the input checks and the heat context of a feature size are one
node each (``torch.fx.wrap``), as are the HCO and the kernels (:mod:`.layers`). A traced graph
keeps the form (deploy or not, train or eval) the model had when it was traced, and does not
checkpoint gradients (``with_cp``).
"""
from __future__ import annotations

import logging
import math
import numbers
from typing import NamedTuple, Sequence

import torch
import torch.fx
import torch.utils.checkpoint
from torch import Tensor, nn

from ..compat import is_compiling, register_load_state_dict_pre_hook
from .heat import pad_freq_embed, resize_freq_embed
from .heat_operator import HeatConductionOperator, HeatContext, TensorCache, build_heat_context
from ..policy import is_traced, may_overwrite, observed_by_hooks
from ..variants import arch_settings
from .layers import Downsample, GlobalAvgPool, LayerNorm, Mlp, ResidualLayerNorm, Stem, drop_path

__all__ = ['ARCH_SETTINGS', 'Arch', 'HeatBlock', 'HeatStage', 'VHeat', 'VHeatFeatures',
           'VHeatTrunk', 'FREQ_EMBED_FITS', 'check_freq_embed_fit', 'check_finite_values',
           'check_images', 'fit_freq_embeds', 'freq_embed_sizes', 'resolve_arch',
           'stage_stride']

# One node each in a symbolic trace (module docstring); the checks are defined below.
for _name in ('build_heat_context', 'check_images', 'check_finite_values'):
    torch.fx.wrap(_name)
del _name

logger = logging.getLogger(__name__)

# The named archs' rows, from their records (vheat_mm/variants.py).
ARCH_SETTINGS: dict[str, dict] = arch_settings()
# Each name's initial, where no other name shares it ('t', 's', 'b').
_ARCH_ALIASES = {name[0]: name for name in ARCH_SETTINGS
                 if [other[0] for other in ARCH_SETTINGS].count(name[0]) == 1}
_ARCH_KEYS = {'depths', 'dims', 'post_norm', 'layer_scale', 'mlp_ratio'}
PATCH_SIZE = 4


def stage_stride(stage: int) -> int:
    """The stride of stage ``stage``'s features: the stem's PATCH_SIZE, halved per stage."""
    return PATCH_SIZE * 2**stage


def freq_embed_sizes(img_size: int, num_stages: int = 4) -> tuple[int, ...]:
    """The side of each stage's square freq_embed grid for a model of ``img_size``:
    img_size / 4 / 2^i for stage i."""
    return tuple(img_size // stage_stride(i) for i in range(num_stages))


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
    depths, dims = arch['depths'], arch['dims']
    if not _is_int_sequence(depths) or not (_is_int(dims) or _is_int_sequence(dims)):
        raise TypeError(f'arch needs depths as a sequence of ints and dims as an int or a '
                        f'sequence of ints, got depths={depths!r}, dims={dims!r}')
    depths = tuple(int(d) for d in depths)
    dims = tuple(int(dims) * 2**i for i in range(len(depths))) if _is_int(dims) \
        else tuple(int(d) for d in dims)
    if len(dims) != len(depths) or not depths or min(depths) < 1 or min(dims) < 1:
        raise ValueError(f'arch needs one positive depth and width per stage, got depths='
                         f'{depths}, dims={dims}')
    layer_scale, mlp_ratio = arch.get('layer_scale'), arch.get('mlp_ratio', 4.0)
    if not _is_number(mlp_ratio) or int(min(dims) * mlp_ratio) < 1:
        raise ValueError(f'arch mlp_ratio must be a number that gives every MLP at least one '
                         f'hidden channel (int(width * mlp_ratio) >= 1 for widths {dims}), got '
                         f'{mlp_ratio!r}')
    if layer_scale is not None and not _is_number(layer_scale):
        raise TypeError(f'arch layer_scale must be None or a number, got {layer_scale!r}')
    return Arch(depths, dims, bool(arch.get('post_norm', False)),
                None if layer_scale is None else float(layer_scale), float(mlp_ratio))


def _is_int(value: object) -> bool:
    """An int (numpy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_int_sequence(value: object) -> bool:
    return isinstance(value, (list, tuple)) and all(_is_int(v) for v in value)


def _is_number(value: object) -> bool:
    """A finite real number, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) \
        and math.isfinite(value)


def check_int_argument(name: str, value: object, minimum: int | None = None) -> int:
    """``value`` if it is an int (of at least ``minimum``); else a one-line TypeError or
    ValueError naming the argument ``name``."""
    if not _is_int(value):
        raise TypeError(f'{name} must be an int, got {value!r} ({type(value).__name__})')
    if minimum is not None and value < minimum:
        raise ValueError(f'{name} must be at least {minimum}, got {value}')
    return int(value)


class HeatBlock(nn.Module):
    """Residual block: x + gamma1 * HCO branch, then x + gamma2 * MLP branch.

    Pre-norm branches compute f(norm(x)); post-norm branches compute norm(f(x)), where the norm
    (:class:`~vheat_mm.models.layers.ResidualLayerNorm`) also adds the branch to x in one step
    unless drop_path is active. ``gamma1``/``gamma2`` (layer scale) exist only when
    ``layer_scale`` is set. The layer scale and the residual sum are written into the branch's
    output where the in-place rule allows (:func:`~vheat_mm.policy.may_overwrite`).
    """

    def __init__(self, dim: int, *, mlp_ratio: float, post_norm: bool,
                 layer_scale: float | None, drop_path: float, cache_key: str):
        super().__init__()
        norm = ResidualLayerNorm if post_norm else LayerNorm
        self.norm1 = norm(dim)
        self.op = HeatConductionOperator(dim, cache_key=cache_key)
        self.norm2 = norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.post_norm = post_norm
        self.drop_path = drop_path
        if layer_scale is not None:
            self.gamma1 = nn.Parameter(torch.full((dim,), layer_scale))
            self.gamma2 = nn.Parameter(torch.full((dim,), layer_scale))
        else:
            self.gamma1 = self.gamma2 = None

    def _residual(self, x: Tensor, branch, norm: LayerNorm, gamma: Tensor | None) -> Tensor:
        if not self.post_norm:
            y = branch(norm(x))
        elif self.training and self.drop_path > 0:
            y = norm(branch(x))
        else:
            return norm(branch(x), residual=x, gamma=gamma)
        inplace = may_overwrite(y, x, gamma)
        if gamma is not None:
            y = y.mul_(gamma) if inplace else y * gamma
        y = drop_path(y, self.drop_path, self.training)
        return y.add_(x) if inplace else x + y

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


#: How a loaded freq_embed of another (H, W) is fitted to the model's (``freq_embed_fit``).
FREQ_EMBED_FITS = {'pad': pad_freq_embed, 'bicubic': resize_freq_embed}


def check_freq_embed_fit(mode: str) -> str:
    """``mode`` if it is one of :data:`FREQ_EMBED_FITS`, else a one-line ValueError."""
    if mode not in FREQ_EMBED_FITS:
        raise ValueError(f'freq_embed_fit must be one of {list(FREQ_EMBED_FITS)}, got {mode!r}')
    return mode


def fit_freq_embeds(state_dict: dict[str, Tensor], prefix: str, freq_embed: Sequence[Tensor],
                    mode: str = 'bicubic') -> list[str]:
    """Fit, in ``state_dict``, each ``{prefix}freq_embed.{i}`` of another (H, W) than the
    model's ``freq_embed[i]`` (same channels) to the model's size. Returns one line per fitted
    tensor.

    ``mode='bicubic'`` resizes (:func:`~vheat_mm.models.heat.resize_freq_embed`); ``'pad'``
    zero-pads at the bottom and right (:func:`~vheat_mm.models.heat.pad_freq_embed`), as the
    official ``interpolate4downstream.py`` does, and refuses a tensor larger than the model's
    (ValueError naming the key and both shapes). The one place where loaded freq_embeds are
    fitted: the trunk's load_state_dict pre-hook (so every load path: ``load_state_dict``,
    mmengine's ``load_from`` and resume, ``init_cfg``) and
    :func:`vheat_mm.checkpoint.checkpoint_filter_fn` call it.
    """
    fit = FREQ_EMBED_FITS[check_freq_embed_fit(mode)]
    lines = []
    for i, own in enumerate(freq_embed):
        key = f'{prefix}freq_embed.{i}'
        value = state_dict.get(key)
        if isinstance(value, Tensor) and value.dim() == 3 and value.shape[2] == own.shape[2] \
                and value.shape != own.shape:
            if mode == 'pad' and (value.shape[0] > own.shape[0] or value.shape[1] > own.shape[1]):
                raise ValueError(f"freq_embed_fit='pad' cannot shrink {key} of shape "
                                 f"{tuple(value.shape)} to the model's {tuple(own.shape)}; use "
                                 f"freq_embed_fit='bicubic'")
            state_dict[key] = fit(value, own.shape[:2])
            lines.append(f'{key} {tuple(value.shape)} -> {tuple(own.shape)}')
    return lines


def _refold_loaded_weights(module: nn.Module, _incompatible_keys) -> None:
    """A deployed trunk folds decay^k again for the weights just loaded into it."""
    if module.deploy:
        module.switch_to_deploy()
        logger.info('%s: deployed, decay^k folded again for the loaded weights',
                    type(module).__name__)


def _fit_loaded_freq_embeds(module: nn.Module, state_dict: dict, prefix: str, *_) -> None:
    """load_state_dict pre-hook of the trunk: fit freq_embeds of another resolution, logged."""
    for line in fit_freq_embeds(state_dict, prefix, module.freq_embed, module.freq_embed_fit):
        logger.info('vHeat: freq_embed of another resolution fitted (%s): %s',
                    module.freq_embed_fit, line)


class VHeatTrunk(nn.Module):
    """Stem, per-stage frequency embeddings and stages: the network :class:`VHeat` and
    :class:`VHeatFeatures` share. :meth:`forward_stages` gives every stage's output.

    A subclass lists these keywords in its own signature, passes them on, adds its outputs
    (head, output norms) and then calls :meth:`reset_parameters`.

    Args:
        arch: a name of :data:`ARCH_SETTINGS` ('tiny', 'small', 'base') or its initial, or a
            dict with ``depths``,
            ``dims`` and optionally ``post_norm``, ``layer_scale``, ``mlp_ratio``.
        img_size: training resolution; sets the freq_embed sizes (img_size / 4 / 2^i). Inputs of
            any size down to the stride of the last stage (32x32 for four stages) are accepted:
            freq_embed is resized bicubically to each stage's size.
        freq_embed_fit: how a loaded freq_embed of another resolution is fitted to img_size
            (:func:`fit_freq_embeds`): 'bicubic' resizes it (any size, also smaller), 'pad'
            zero-pads it at the bottom and right, as the official ``interpolate4downstream.py``
            does (the start of the paper's downstream runs; cannot shrink).
        in_channels: image channels.
        drop_path_rate: stochastic depth, rising linearly over the blocks to this value.
        with_cp: gradient checkpointing per block.
        check_finite: debugging aid: check the input and every stage's output for NaN and inf
            and raise a ValueError naming the first place they appear and how many there are.
            Costs a reduction per stage; off (the default) it costs nothing.
    """

    def __init__(self, arch: str | dict = 'tiny', *, img_size: int = 224,
                 freq_embed_fit: str = 'bicubic', in_channels: int = 3,
                 drop_path_rate: float = 0.0, with_cp: bool = False, check_finite: bool = False):
        super().__init__()
        self.arch = resolve_arch(arch)
        self.freq_embed_fit = check_freq_embed_fit(freq_embed_fit)
        self.total_stride = stage_stride(len(self.arch.depths) - 1)  # of the last stage
        img_size = check_int_argument('img_size', img_size)
        in_channels = check_int_argument('in_channels', in_channels, 1)
        if not _is_number(drop_path_rate):
            raise TypeError(f'drop_path_rate must be a number, got {drop_path_rate!r}')
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
        self.freq_embed = nn.ParameterList(
            nn.Parameter(torch.zeros(r, r, d))
            for r, d in zip(freq_embed_sizes(img_size, self.num_stages), dims))
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            blocks = [HeatBlock(dim, mlp_ratio=self.arch.mlp_ratio, post_norm=self.arch.post_norm,
                                layer_scale=self.arch.layer_scale,
                                drop_path=rates[sum(depths[:i]) + j],
                                cache_key=f'attenuation{i}_{j}') for j in range(depth)]
            last = i == self.num_stages - 1
            self.layers.append(HeatStage(blocks, nn.Identity() if last
                                         else Downsample(dim, dims[i + 1])))
        register_load_state_dict_pre_hook(self, _fit_loaded_freq_embeds)
        self.register_load_state_dict_post_hook(_refold_loaded_weights)
        self.heat_cache = TensorCache()
        self.deploy = False
        self._trainable_before_deploy: dict[str, bool] = {}
        self._folded_from: list[tuple[Tensor, int]] = []  # the folded weights and versions
        self.with_cp = with_cp
        self.check_finite = bool(check_finite)
        _align_with_gradient_layout(self)

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
        """Bytes held by the cache of derived tensors (at most ``heat_cache.limit_bytes``)."""
        return self.heat_cache.nbytes

    def clear_caches(self) -> None:
        """Drop every cached derived tensor (they are rebuilt when next needed)."""
        self.heat_cache.clear()

    def train(self, mode: bool = True):
        """As ``nn.Module.train``; entering training also frees the caches of derived tensors,
        which evaluation at many sizes may have filled (up to ``heat_cache.limit_bytes``),
        and turns a deployed model back into the trainable one (:meth:`switch_to_train`)."""
        super().train(mode)
        if mode:
            if self.deploy:
                self.switch_to_train()
            self.clear_caches()
        return self

    def reset_parameters(self) -> None:
        """The official initialisation: linears and freq_embed trunc-normal (std .02), norms 1/0.

        The MLP's 1x1 convolutions keep the initialisation of ``nn.Conv2d``, as in the official
        code.
        """
        for m in self.modules():
            if isinstance(m, nn.Linear):  # PointwiseLinear too
                _init_linear(m)
            elif isinstance(m, nn.LayerNorm):  # and its subclasses in .layers
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for p in self.freq_embed:
            nn.init.trunc_normal_(p, std=0.02)

    def _checked_finite(self, x: Tensor, stage: int | None) -> Tensor:
        """``x`` (the input, or ``stage``'s output), checked by :func:`check_finite_values`
        with ``check_finite``."""
        if not self.check_finite:
            return x
        return check_finite_values(x, 'the input' if stage is None
                                   else f'the output of stage {stage}')

    def heat_context(self, stage: int, height: int, width: int, like: Tensor) -> HeatContext:
        """Bases, decay map and freq_embed of ``stage`` at feature size (height, width), on
        ``like``'s device (:func:`~vheat_mm.models.heat_operator.build_heat_context`)."""
        return build_heat_context(self.heat_cache, self.freq_embed[stage], f'freq_embed{stage}',
                                  height, width, device=like.device, deploy=self.deploy)

    def forward_stages(self, x: Tensor, last: int | None = None) -> list[Tensor]:
        """Channels-last output of every stage, before its downsampling; with ``last``, of
        stages 0 to ``last`` only (the later ones do not run).

        No step runs in place while a forward hook is registered on the model or any of its
        modules (:func:`~vheat_mm.policy.observed_by_hooks`).
        """
        x = self._checked_finite(check_images(x, self.in_channels, self.total_stride), None)
        if self.deploy and not is_compiling() and not is_traced(x):
            self._check_deployed_weights()
        with observed_by_hooks(self):
            x = self.patch_embed(x)
            outs = []
            for i, stage in enumerate(self.layers):
                out, x = stage(x, self.heat_context(i, x.shape[1], x.shape[2], x))
                outs.append(self._checked_finite(out, i))
                if i == last:
                    break
        return outs

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Fold decay^k into fixed tensors (the official ``infer_mode``) and freeze the weights.

        The attenuation at the native resolution is folded now; any other feature size is
        folded on first use, so the deploy form works at every input size.

        The deployed model, eager, compiled or exported (``torch.onnx.export`` /
        ``torch.export``), reads these tensors without comparing their values with the weights.
        ``load_state_dict`` folds them again for the loaded weights; in eager mode, weights
        replaced (``torch.func.functional_call``, an assignment) or changed in place since, or
        a forward that would train them, raise a RuntimeError at the next forward: call
        ``switch_to_deploy()`` again after changing the weights. ``train()`` (or
        :meth:`switch_to_train`) returns to the trainable form. At a size whose
        tensors are not folded yet, the compiled graph or exported program computes them
        itself (nothing is stored while tracing); one eager forward at that size first lets it
        use the folded tensors instead. Either way, compiling with ``dynamic=False`` traces
        once per input size and never again at a size already seen.
        """
        if not self.deploy:
            self._trainable_before_deploy = {name: p.requires_grad
                                             for name, p in self.named_parameters()}
        self.clear_caches()
        self.deploy = True
        for i, stage in enumerate(self.layers):
            size = self.freq_embed[i].shape[:2]
            ctx = self.heat_context(i, size[0], size[1], self.freq_embed[i])
            for block in stage.blocks:
                block.op.attenuation(ctx)
        self.requires_grad_(False)
        self.eval()
        self._folded_from = [(t, t._version) for t in self._folded_weights()]

    def _folded_weights(self) -> list[Tensor]:
        """The weights the deploy form folds: each stage's freq_embed and each HCO's to_k."""
        return [*self.freq_embed, *(t for block in self.blocks()
                                    for t in (block.op.to_k[0].weight, block.op.to_k[0].bias))]

    def _check_deployed_weights(self) -> None:
        """Raise a RuntimeError where the deployed model's folded tensors no longer follow its
        weights (replaced, as ``torch.func.functional_call`` or an assignment does, or changed
        in place), or where it would be trained (a folded weight requires grad)."""
        current = self._folded_weights()
        if len(current) != len(self._folded_from) or any(
                now is not then or now._version != version
                for now, (then, version) in zip(current, self._folded_from)):
            raise RuntimeError(
                f'{type(self).__name__} is deployed, and its weights changed after '
                f'switch_to_deploy() (functional_call, an assignment or an in-place edit): its '
                f'folded decay^k would not follow them; call switch_to_deploy() again, or train() '
                f'(or switch_to_train()) to use the weights as they are')
        if torch.is_grad_enabled() and any(t.requires_grad for t in current):
            raise RuntimeError(
                f'{type(self).__name__} is deployed (decay^k folded, no gradient reaches '
                f'freq_embed or to_k): call train() (or switch_to_train()) before training it')

    def switch_to_train(self) -> None:
        """Undo :meth:`switch_to_deploy`: drop the folded tensors, so that decay^k follows the
        weights again, and give every parameter back the ``requires_grad`` it had before. A
        model that is not deployed is left as it is. ``train()`` calls this."""
        if not self.deploy:
            return
        self.deploy = False
        self.clear_caches()
        for name, param in self.named_parameters():
            param.requires_grad_(self._trainable_before_deploy.get(name, True))
        self._trainable_before_deploy = {}
        self._folded_from = []
        logger.info('%s: left the deploy form; decay^k follows the weights again',
                    type(self).__name__)


def check_images(x: Tensor, channels: int, min_size: int) -> Tensor:
    """``x`` if it is a batch of images (B, channels, H, W) with H and W at least
    ``min_size``; otherwise a one-line ValueError."""
    if not isinstance(x, (Tensor, torch.fx.Proxy)):
        raise TypeError(f'vHeat expects a torch.Tensor of images (B, {channels}, H, W), got a '
                        f'{type(x).__module__}.{type(x).__qualname__} (torch.as_tensor converts '
                        f'a numpy array)')
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f'vHeat expects images of shape (B, {channels}, H, W), '
                         f'got {tuple(x.shape)}')
    if min(x.shape[2:]) < min_size:
        raise ValueError(f'vHeat needs images of at least {min_size}x{min_size} pixels (the '
                         f'stride of its last stage), got H={x.shape[2]}, W={x.shape[3]}')
    return x


def check_finite_values(x: Tensor, where: str) -> Tensor:
    """``x`` if every value is finite; otherwise a ValueError saying ``where`` the NaN and
    inf values are and how many there are."""
    if bool(torch.isfinite(x).all()):
        return x
    nan, inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
    raise ValueError(f'check_finite: {where} holds {nan + inf} non-finite values of '
                     f'{x.numel()} ({nan} NaN, {inf} inf); every value must be finite')


def _init_linear(linear: nn.Linear) -> None:
    """The official initialisation of a linear layer: weight trunc-normal (std .02), bias 0."""
    nn.init.trunc_normal_(linear.weight, std=0.02)
    nn.init.zeros_(linear.bias)


@torch.no_grad()
def _align_with_gradient_layout(model: nn.Module) -> None:
    """Give each convolution weight that is contiguous in both memory formats (a 1x1 or a
    depthwise kernel) the strides of ``torch.channels_last``: the same memory, and the strides
    its gradient has for channels-last activations, so DDP's gradient bucket views match it.
    Every parameter stays contiguous (``view(-1)`` and ``parameters_to_vector`` work)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.weight.is_contiguous(
                memory_format=torch.channels_last):
            module.weight.data = torch.empty_like(
                module.weight, memory_format=torch.channels_last).copy_(module.weight)


class VHeat(VHeatTrunk):
    """vHeat image classifier; ``VHeat(arch='tiny')`` is vHeat-T of the paper.

    The head, ``classifier``, is LayerNorm, average pool, flatten and linear, under the official
    state-dict names (``classifier.0``, and :attr:`FC_NAME` for the linear). The model has
    timm's classifier interface: :meth:`forward_features` (the last stage's map, NCHW, before
    the head), :meth:`forward_head`, :meth:`get_classifier`, :meth:`reset_classifier`,
    :meth:`forward_intermediates` and ``feature_info`` (each stage's channels and stride).

    Args:
        num_classes: classifier outputs; 0: no linear layer (the model gives the features).
        global_pool: 'avg' averages over H and W; '' does not pool: the model then gives a map
            (B, num_classes, H, W), or (B, C, H, W) for num_classes 0, every position through
            the head's norm (and linear).
        arch, img_size, freq_embed_fit, in_channels, drop_path_rate, with_cp, check_finite:
            those of :class:`VHeatTrunk`.
    """

    #: Index of the linear layer in ``classifier`` (norm, pool, flatten, linear), as in the
    #: official checkpoints; :attr:`FC_NAME` is its module name (``classifier.3``).
    FC_INDEX = 3
    FC_NAME = f'classifier.{FC_INDEX}'
    GLOBAL_POOLS = ('avg', '')

    def __init__(self, arch: str | dict = 'tiny', *, img_size: int = 224,
                 freq_embed_fit: str = 'bicubic', in_channels: int = 3,
                 drop_path_rate: float = 0.0, num_classes: int = 1000, global_pool: str = 'avg',
                 with_cp: bool = False, check_finite: bool = False):
        super().__init__(arch, img_size=img_size, freq_embed_fit=freq_embed_fit,
                         in_channels=in_channels, drop_path_rate=drop_path_rate,
                         with_cp=with_cp, check_finite=check_finite)
        self.num_features = self.head_hidden_size = self.arch.dims[-1]
        self.feature_info = [dict(num_chs=dim, reduction=stage_stride(i), module=f'layers.{i}')
                             for i, dim in enumerate(self.arch.dims)]
        self.global_pool = self._check_global_pool(global_pool)
        self.num_classes = num_classes
        self.classifier = nn.Sequential(LayerNorm(self.num_features), *self._pooling(),
                                        self._linear(num_classes))
        self.reset_parameters()

    def _check_global_pool(self, global_pool: str) -> str:
        if global_pool not in self.GLOBAL_POOLS:
            raise ValueError(f'global_pool must be one of {list(self.GLOBAL_POOLS)} (vHeat '
                             f'averages, or does not pool), got {global_pool!r}')
        return global_pool

    def _pooling(self) -> tuple[nn.Module, nn.Module]:
        """The pool and flatten of ``classifier`` for :attr:`global_pool`."""
        if self.global_pool:
            return GlobalAvgPool(), nn.Flatten(1)
        return nn.Identity(), nn.Identity()

    def _linear(self, num_classes: int, like: Tensor | None = None) -> nn.Module:
        """The classifier's linear layer for ``num_classes`` (on ``like``'s device and dtype)."""
        num_classes = check_int_argument('num_classes', num_classes, 0)
        if num_classes == 0:
            return nn.Identity()
        return nn.Linear(self.num_features, num_classes,
                         device=None if like is None else like.device,
                         dtype=None if like is None else like.dtype)

    def get_classifier(self) -> nn.Module:
        """The linear layer (an ``nn.Identity`` for num_classes 0)."""
        return self.classifier[self.FC_INDEX]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new linear layer for ``num_classes`` (0: none), initialised as the model's layers
        are; ``global_pool`` ('avg' or '', None: as it is) sets the pooling (class docstring)."""
        if global_pool is not None:
            self.global_pool = self._check_global_pool(global_pool)
            self.classifier[1], self.classifier[2] = self._pooling()
        linear = self._linear(num_classes, like=self.freq_embed[0])
        if isinstance(linear, nn.Linear):
            _init_linear(linear)
        self.classifier[self.FC_INDEX] = linear
        self.num_classes = num_classes

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's name for ``with_cp``: gradient checkpointing of every block."""
        self.with_cp = enable

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's map, (B, C, H, W), before the head."""
        return self.forward_stages(x)[-1].permute(0, 3, 1, 2)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """The head on :meth:`forward_features`' map: logits (B, num_classes); with
        ``pre_logits``, the normalised, pooled features (B, C) before the linear layer. Without
        pooling (global_pool ''), the same for every position, as (B, num_classes or C, H, W)."""
        norm, pool, flatten, linear = (self.classifier[0], self.classifier[1],
                                       self.classifier[2], self.classifier[3])
        x = flatten(pool(norm(x.permute(0, 2, 3, 1))))
        if not pre_logits:
            x = linear(x)
        return x if self.global_pool else x.permute(0, 3, 1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def _take_indices(self, indices: int | Sequence[int] | None) -> list[int]:
        """The stages :meth:`forward_intermediates` names by ``indices``, in ascending order."""
        n = self.num_stages
        if indices is None:
            return list(range(n))
        if isinstance(indices, int):
            if not 1 <= indices <= n:
                raise ValueError(f'indices as an int asks for the last n stages, 1 <= n <= {n}, '
                                 f'got {indices}')
            return list(range(n - indices, n))
        take = sorted({i + n if i < 0 else i for i in indices})
        if not take or take[0] < 0 or take[-1] >= n:
            raise ValueError(f'indices must be stage indices in [0, {n}) (or [-{n}, 0) counting '
                             f'from the last), got {tuple(indices)}')
        return take

    def forward_intermediates(self, x: Tensor, indices: int | Sequence[int] | None = None,
                              norm: bool = False, stop_early: bool = False,
                              output_fmt: str = 'NCHW', intermediates_only: bool = False
                              ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """timm's feature API: the outputs of the stages ``indices`` names (None: all; an int
        n: the last n; a sequence: those, negative ones counted from the end), in ``output_fmt``
        ('NCHW' or 'NHWC'), and :meth:`forward_features`' map (unless ``intermediates_only``).

        ``norm``: the last stage's map passes through the head's norm (the only norm after a
        stage). ``stop_early`` (and ``intermediates_only``): the stages after the last one
        asked for do not run; the final map is then the last one that ran.
        """
        if output_fmt not in ('NCHW', 'NHWC'):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take = self._take_indices(indices)
        stages = self.forward_stages(x, take[-1] if stop_early or intermediates_only else None)
        maps = []
        for i in take:
            out = self.classifier[0](stages[i]) if norm and i == self.num_stages - 1 \
                else stages[i]
            maps.append(out if output_fmt == 'NHWC' else out.permute(0, 3, 1, 2))
        if intermediates_only:
            return maps
        return stages[-1].permute(0, 3, 1, 2), maps

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1,
                                  prune_norm: bool = False, prune_head: bool = True) -> list[int]:
        """timm's feature API: the stage indices for ``indices`` (as
        :meth:`forward_intermediates` reads them); ``prune_head`` removes the linear layer and
        the pooling, ``prune_norm`` the head's norm. The stages stay, so the state-dict keys of
        the trunk stay the official ones; :meth:`forward_intermediates` runs only those needed."""
        take = self._take_indices(indices)
        if prune_head:
            self.reset_classifier(0, '')
        if prune_norm:
            self.classifier[0] = nn.Identity()
        return take


class VHeatFeatures(VHeatTrunk):
    """vHeat multi-scale backbone: a tuple of NCHW features, one per index in ``out_indices``.

    Each returned stage output (before its downsampling) passes through a LayerNorm named
    ``outnorm{i}``, as in the official detection and segmentation backbones.

    Args:
        out_indices: stages whose outputs are returned.
        frozen_stages: -1 freezes nothing; 0 freezes the stem; i > 0 also freezes stages
            0..i-1 (their blocks, downsampling, freq_embed and output norms). Frozen parts stay
            in eval mode after ``train()``.
        arch, img_size, freq_embed_fit, in_channels, drop_path_rate, with_cp, check_finite:
            those of :class:`VHeatTrunk`.
    """

    def __init__(self, arch: str | dict = 'tiny', *, img_size: int = 224,
                 freq_embed_fit: str = 'bicubic', in_channels: int = 3,
                 drop_path_rate: float = 0.0, out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1, with_cp: bool = False, check_finite: bool = False):
        super().__init__(arch, img_size=img_size, freq_embed_fit=freq_embed_fit,
                         in_channels=in_channels, drop_path_rate=drop_path_rate,
                         with_cp=with_cp, check_finite=check_finite)
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
