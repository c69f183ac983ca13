"""The trunk both vHeat models share (:class:`VHeatTrunk`: stem, per-stage frequency
embeddings, stages; the deploy form; the load hooks), and the checks of its inputs and outputs.

The trunk traces symbolically (``torch.fx.symbolic_trace``): the input checks and the heat
context of a feature size are one node each (``torch.fx.wrap``), as are the HCO and the kernels
(:mod:`.layers`).
"""
from __future__ import annotations

import logging

import torch
import torch.fx
from torch import Tensor, nn

from ..compat import is_compiling, register_load_state_dict_pre_hook
from ..policy import is_traced, observed_by_hooks
from .arch import check_int_argument, freq_embed_sizes, is_number, resolve_arch, stage_stride
from .blocks import HeatBlock, HeatStage
from .freq_embed_resize import check_freq_embed_resize, resize_loaded_freq_embeds
from .heat_operator import HeatContext, TensorCache, build_heat_context
from .layers import Downsample, Stem

__all__ = ['VHeatTrunk', 'check_finite_values', 'check_images', 'init_linear',
           'switch_to_deploy']

# One node each in a symbolic trace (module docstring); the checks are defined below.
for _name in ('build_heat_context', 'check_images', 'check_finite_values'):
    torch.fx.wrap(_name)
del _name

logger = logging.getLogger(__name__)


def _refold_loaded_weights(module: nn.Module, _incompatible_keys) -> None:
    """A deployed trunk folds decay^k again for the weights just loaded into it."""
    if module.deploy:
        module.switch_to_deploy()
        logger.info('%s: deployed, decay^k folded again for the loaded weights',
                    type(module).__name__)


def _resize_loaded_freq_embeds(module: nn.Module, state_dict: dict, prefix: str, *_) -> None:
    """load_state_dict pre-hook of the trunk: resize freq_embeds of another resolution, logged."""
    mode = module.freq_embed_resize
    for line in resize_loaded_freq_embeds(state_dict, prefix, module.freq_embed, mode):
        logger.info('vHeat: freq_embed of another resolution resized (%s): %s', mode, line)


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
        freq_embed_resize: how a loaded freq_embed of another resolution is resized to img_size
            (:func:`resize_loaded_freq_embeds`): 'bicubic' interpolates it (any size, also
            smaller), 'pad' zero-pads it at the bottom and right, as the official
            ``interpolate4downstream.py`` does (the start of the paper's downstream runs; cannot
            shrink).
        in_channels: image channels.
        drop_path_rate: stochastic depth, rising linearly over the blocks to this value.
        with_cp: gradient checkpointing per block.
        check_finite: debugging aid: check the input and every stage's output for NaN and inf
            and raise a ValueError naming the first place they appear and how many there are.
            Costs a reduction per stage; off (the default) it costs nothing.
    """

    def __init__(self, arch: str | dict = 'tiny', *, img_size: int = 224,
                 freq_embed_resize: str = 'bicubic', in_channels: int = 3,
                 drop_path_rate: float = 0.0, with_cp: bool = False, check_finite: bool = False):
        super().__init__()
        self.arch = resolve_arch(arch)
        self.freq_embed_resize = check_freq_embed_resize(freq_embed_resize)
        self.total_stride = stage_stride(len(self.arch.depths) - 1)  # of the last stage
        img_size = check_int_argument('img_size', img_size)
        in_channels = check_int_argument('in_channels', in_channels, 1)
        if not is_number(drop_path_rate):
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
        register_load_state_dict_pre_hook(self, _resize_loaded_freq_embeds)
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
                init_linear(m)
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

    def heat_context(self, stage: int, height: int, width: int, like: Tensor,
                     batch: int | None = None) -> HeatContext:
        """Bases, decay map and freq_embed of ``stage`` at feature size (height, width), on
        ``like``'s device, the bases broadcast for ``batch`` maps where given
        (:func:`~vheat_mm.models.heat_operator.build_heat_context`)."""
        return build_heat_context(self.heat_cache, self.freq_embed[stage], f'freq_embed{stage}',
                                  height, width, device=like.device, deploy=self.deploy,
                                  batch=batch)

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
                out, x = stage(x, self.heat_context(i, x.shape[1], x.shape[2], x, x.shape[0]))
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


def init_linear(linear: nn.Linear) -> None:
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



def switch_to_deploy(model: nn.Module) -> int:
    """Switch every vHeat trunk inside ``model`` to its deployed form; returns how many."""
    trunks = [m for m in model.modules() if isinstance(m, VHeatTrunk)]
    for trunk in trunks:
        trunk.switch_to_deploy()
    return len(trunks)
