"""vHeat: vision backbone built on heat conduction (arXiv 2405.16555), in plain PyTorch.

The two models on the trunk (:class:`~.trunk.VHeatTrunk`): :class:`VHeat`, the classifier, and
:class:`VHeatFeatures`, the multi-scale backbone. Module names and parameter shapes follow the
official implementation, so its checkpoints load with strict=True.

The models trace symbolically (``torch.fx.symbolic_trace``, torchvision's
``create_feature_extractor``): the input checks and the heat context of a feature size are one
node each (``torch.fx.wrap``), as are the HCO and the kernels (:mod:`.layers`). A traced graph
keeps the form (deploy or not, train or eval) the model had when it was traced, and does not
checkpoint gradients (``with_cp``).
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from .arch import check_int_argument, stage_stride
from .keywords import takes_keywords_of
from .layers import GlobalAvgPool, LayerNorm, as_nchw, as_nhwc
from .trunk import VHeatTrunk, init_linear

__all__ = ['VHeat', 'VHeatFeatures']


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
        arch, img_size, freq_embed_resize, in_channels, drop_path_rate, with_cp, check_finite:
            those of :class:`VHeatTrunk`.
    """

    #: Index of the linear layer in ``classifier`` (norm, pool, flatten, linear), as in the
    #: official checkpoints; :attr:`FC_NAME` is its module name (``classifier.3``).
    FC_INDEX = 3
    FC_NAME = f'classifier.{FC_INDEX}'
    GLOBAL_POOLS = ('avg', '')

    @takes_keywords_of(VHeatTrunk.__init__)
    def __init__(self, arch: str | dict = 'tiny', *, num_classes: int = 1000,
                 global_pool: str = 'avg', **options):
        super().__init__(arch, **options)
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
            init_linear(linear)
        self.classifier[self.FC_INDEX] = linear
        self.num_classes = num_classes

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's name for ``with_cp``: gradient checkpointing of every block."""
        self.with_cp = enable

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's map, (B, C, H, W), before the head."""
        return as_nchw(self.forward_stages(x)[-1])

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """The head on :meth:`forward_features`' map: logits (B, num_classes); with
        ``pre_logits``, the normalised, pooled features (B, C) before the linear layer. Without
        pooling (global_pool ''), the same for every position, as (B, num_classes or C, H, W)."""
        norm, pool, flatten, linear = (self.classifier[0], self.classifier[1],
                                       self.classifier[2], self.classifier[3])
        x = flatten(pool(norm(as_nhwc(x))))
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
        arch, img_size, freq_embed_resize, in_channels, drop_path_rate, with_cp, check_finite:
            those of :class:`VHeatTrunk`.
    """

    @takes_keywords_of(VHeatTrunk.__init__)
    def __init__(self, arch: str | dict = 'tiny', *,
                 out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1,
                 **options):
        super().__init__(arch, **options)
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
