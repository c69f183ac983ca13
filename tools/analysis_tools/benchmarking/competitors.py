"""The models vheat_mm is compared with, built for a case: the official vHeat code, and Swin
(mmpretrain's classifier and mmdet's backbone, or timm's) with vHeat's stage widths and depths.

Each builder raises :class:`Unavailable` where its model cannot run the case here; the
benchmark reports that model as skipped, with the reason.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import Tensor, nn

from vheat_mm.models import stage_stride

from . import official
from .cases import Case, set_mode

SWIN_WINDOW = 7
SWIN_HEADS = {96: (3, 6, 12, 24), 128: (4, 8, 16, 32)}  # Swin-T/S and Swin-B, by first width
TIMM_SWIN = {  # (depths, first width) -> timm's model
    ((2, 2, 6, 2), 96): 'swin_tiny_patch4_window7_224',
    ((2, 2, 18, 2), 96): 'swin_small_patch4_window7_224',
    ((2, 2, 18, 2), 128): 'swin_base_patch4_window7_224',
}


class Unavailable(Exception):
    """A model cannot run a case here (missing package, unsupported arch, size or mode)."""


# ----------------------------------------------------------------------------- official
def _official_kwargs(case: Case) -> dict:
    a = case.spec
    return dict(depths=list(a.depths), dims=list(a.dims), post_norm=a.post_norm,
                layer_scale=a.layer_scale, mlp_ratio=a.mlp_ratio, drop_path_rate=0.0)


def build_official(checkout: Path, case: Case) -> nn.Module:
    """The official vHeat classifier (``infer_mode`` for deploy) or ``MMDET_VHEAT`` backbone."""
    if case.part == 'classifier':
        model = official.classification_module(checkout).vHeat(
            img_size=case.img_size, infer_mode=case.mode == 'deploy', **_official_kwargs(case))
        set_mode(model, case)
        if case.mode == 'deploy':
            with torch.no_grad():
                model.infer_init()
        return model
    if case.mode == 'deploy':
        raise Unavailable('the official downstream backbone has no deploy form; use eval')
    if importlib.util.find_spec('mmdet') is None:
        raise Unavailable('the official downstream backbone needs mmdet')
    model = official.detection_module(checkout).MMDET_VHEAT(img_size=case.img_size,
                                                            **_official_kwargs(case))
    return set_mode(model, case)


# ----------------------------------------------------------------------------- Swin
class _Classifier(nn.Module):
    """A feature backbone's last map -> global average pool -> linear (mmpretrain's Swin)."""

    def __init__(self, backbone: nn.Module, width: int, num_classes: int = 1000):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.backbone(x)[-1].mean((2, 3)))


def _swin_shape(arch) -> tuple[tuple[int, ...], int]:
    """(depths, first width) of the Swin with the stages of vheat_mm ``Arch`` ``arch``;
    :class:`Unavailable` unless they are Swin's: four, each twice as wide as the last."""
    if len(arch.depths) != 4 or arch.dims != tuple(arch.dims[0] * 2**i for i in range(4)):
        raise Unavailable(f'Swin has no row for stage widths {arch.dims}: it has four stages, '
                          f'each twice as wide as the last')
    return arch.depths, arch.dims[0]


def swin_heads(arch) -> tuple[int, ...]:
    """mmpretrain's and mmdet's Swin heads per stage for vheat_mm ``Arch`` ``arch``."""
    _, width = _swin_shape(arch)
    if width not in SWIN_HEADS:
        raise Unavailable(f'Swin has no row for stage widths {arch.dims}: its heads are known '
                          f'for first widths {sorted(SWIN_HEADS)}')
    return SWIN_HEADS[width]


def swin_source(choice: str, case: Case) -> str:
    """'openmmlab' or 'timm', as ``--swin`` asks and what is installed allows."""
    package = 'mmpretrain' if case.part == 'classifier' else 'mmdet'
    openmmlab = importlib.util.find_spec(package)
    if choice == 'openmmlab' or (choice == 'auto' and openmmlab is not None):
        if openmmlab is None:
            raise Unavailable(f'--swin openmmlab needs {package}')
        return 'openmmlab'
    if importlib.util.find_spec('timm') is None:
        raise Unavailable('Swin needs mmpretrain/mmdet or timm')
    return 'timm'


def timm_swin(arch, height: int, width: int, **kwargs) -> nn.Module:
    """timm's Swin with the widths and depths of vheat_mm ``Arch`` ``arch`` at height x width
    (random weights); :class:`Unavailable` where timm has none (other widths or depths, or a
    size that does not tile into whole windows)."""
    import timm
    name = TIMM_SWIN.get(_swin_shape(arch))
    if name is None:
        raise Unavailable(f'timm has no Swin with depths {arch.depths} and stage widths '
                          f'{arch.dims}')
    # Swin's stages have vHeat's strides; whole windows at every stage
    multiple = stage_stride(len(arch.depths) - 1) * SWIN_WINDOW
    if height % multiple or width % multiple:
        raise Unavailable(f"timm's Swin needs sizes divisible by {multiple} (whole "
                          f'{SWIN_WINDOW}x{SWIN_WINDOW} windows at every stage)')
    return timm.create_model(name, pretrained=False, img_size=(height, width),
                             drop_path_rate=0.0, **kwargs)


def build_swin(choice: str, case: Case) -> nn.Module:
    """Swin from ``--swin``'s source: the classifier, or the backbone's four NCHW maps."""
    a = case.spec
    if swin_source(choice, case) == 'timm':
        features = dict(features_only=True, out_indices=(0, 1, 2, 3))
        return set_mode(timm_swin(a, case.height, case.width,
                                  **(features if case.part == 'backbone' else {})), case)
    heads = swin_heads(a)
    if case.part == 'classifier':
        from mmpretrain.models import SwinTransformer
        backbone = SwinTransformer(arch=dict(embed_dims=a.dims[0], depths=tuple(a.depths),
                                             num_heads=heads),
                                   img_size=(case.height, case.width), window_size=SWIN_WINDOW,
                                   drop_path_rate=0.0, pad_small_map=True)
        model = _Classifier(backbone, a.dims[-1])
    else:
        from mmdet.models.backbones import SwinTransformer
        model = SwinTransformer(embed_dims=a.dims[0], depths=tuple(a.depths), num_heads=heads,
                                window_size=SWIN_WINDOW, drop_path_rate=0.0,
                                out_indices=(0, 1, 2, 3))
    set_mode(model, case)  # mmdet's SwinTransformer.train() returns None: no chaining
    return model
