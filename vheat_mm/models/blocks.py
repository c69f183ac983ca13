"""The residual block of vHeat (HCO and MLP branches) and the stage that chains blocks."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from ..policy import may_overwrite
from .heat_operator import HeatConductionOperator, HeatContext
from .layers import LayerNorm, Mlp, ResidualLayerNorm, drop_path

__all__ = ['HeatBlock', 'HeatStage']


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
