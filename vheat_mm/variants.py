"""The vHeat variants as data: one :class:`ArchRecord` per named architecture and one
:class:`Release` per config of the paper, with the official release's figures and weights.

Each fact about a variant is stated here once, as timm keeps one ``default_cfgs`` entry per
weight and torchvision one ``Weights`` member with its URL and metrics. The rest reads it:

- ``ARCH_SETTINGS`` (:mod:`vheat_mm.models.arch`) is :func:`arch_settings`;
- ``PRETRAINED_URLS`` (:mod:`vheat_mm.checkpoint.download`) is :func:`pretrained_urls`, and a
  release's ``sha256``, where known, is what its download must match;
- timm's ``default_cfgs`` (:mod:`vheat_mm.timm_models`) are built from :func:`classifiers`;
- the metafiles' ``Models`` (``configs/*/metafile.yml``, indexed by ``model-index.yml``) and
  the README's architecture and model zoo tables are written from :data:`ARCHS` and
  :data:`RELEASES` by ``tools/misc/model_zoo.py``;
- ``tests/test_variants.py`` fails where a metafile, a README table, a timm config, a
  ``hubconf.py`` entry point or its docstring disagrees with these records, and the parameter
  counts of the built models are checked against them (``tests/test_vheat.py``,
  ``tests/test_configs.py``).

Standard library only, importing nothing of vheat_mm: every layer may read it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ['ARCHS', 'CLASSIFICATION', 'FAMILIES', 'MASK_RCNN', 'RELEASES', 'UPERNET',
           'ArchRecord', 'Family', 'Metric', 'Release', 'arch_record', 'arch_settings',
           'classifiers', 'pretrained_urls']

_RELEASE_URL = 'https://github.com/MzeroMiko/vHeat/releases/download'


@dataclass(frozen=True)
class ArchRecord:
    """A named architecture: a row of ``ARCH_SETTINGS`` and the size of its classifier."""
    #: the name ``VHeat(name)`` takes; its initial is an alias where no other name shares it
    name: str
    #: blocks per stage
    depths: tuple[int, ...]
    #: the width of stage 0; stage i is ``dims * 2**i`` wide
    dims: int
    #: each branch normalised after (True) or before (False) its residual addition
    post_norm: bool
    #: the initial value of each branch's per-channel scale; None: no scale
    layer_scale: float | None
    #: the parameters of ``VHeat(name)`` (1000 classes, 224x224), those of the official model
    params: int

    @property
    def title(self) -> str:
        """The paper's name of the variant: vHeat-T, vHeat-S, vHeat-B."""
        return f'vHeat-{self.name[0].upper()}'

    def settings(self) -> dict:
        """The row as ``ARCH_SETTINGS`` holds it (what ``resolve_arch`` reads)."""
        return dict(depths=self.depths, dims=self.dims, post_norm=self.post_norm,
                    layer_scale=self.layer_scale)


class Metric(NamedTuple):
    """One figure a family's releases report."""
    field: str    #: the :class:`Release` attribute holding it
    task: str     #: the metafile's ``Task``
    dataset: str  #: the metafile's ``Dataset``
    name: str     #: the metafile's metric name
    label: str    #: the README's column header


@dataclass(frozen=True)
class Family:
    """A family of configs: a folder of ``configs/`` with its ``metafile.yml``."""
    folder: str                   #: under configs/
    collection: str               #: the metafile's ``Collection`` of its models
    metrics: tuple[Metric, ...]   #: the figures its releases report, in the metafile's order


CLASSIFICATION = Family('classification', 'vHeat', (
    Metric('top1', 'Image Classification', 'ImageNet-1k', 'Top 1 Accuracy', 'top-1'),))
MASK_RCNN = Family('mask_rcnn', 'Mask R-CNN vHeat', (
    Metric('box_map', 'Object Detection', 'COCO', 'box AP', 'box mAP'),
    Metric('mask_map', 'Instance Segmentation', 'COCO', 'mask AP', 'mask mAP')))
UPERNET = Family('upernet', 'UPerNet vHeat', (
    Metric('miou', 'Semantic Segmentation', 'ADE20K', 'mIoU', 'mIoU'),))
FAMILIES: tuple[Family, ...] = (CLASSIFICATION, MASK_RCNN, UPERNET)


@dataclass(frozen=True)
class Release:
    """A config of the paper (``configs/<family>/<name>.py``) with the official release's
    figures and weights. The figures are the paper's (also in the official README); ``params``
    is the count of the model the config builds here."""
    #: the config's file name without ``.py``: the metafile's ``Name``
    name: str
    family: Family
    #: the :class:`ArchRecord` of its backbone
    arch: str
    #: the parameters of the model the config builds (``tests/test_configs.py`` builds it)
    params: int
    #: parameters and FLOPs as the paper gives them (the whole detector or segmentor)
    paper_params: int
    paper_flops: int
    #: the official weights; None where the release has none
    url: str | None = None
    #: the sha256 of the file at ``url``, where known (a download must match it)
    sha256: str | None = None
    #: ImageNet-1k top-1 (%), COCO box and mask mAP, ADE20K single-scale mIoU
    top1: float | None = None
    box_map: float | None = None
    mask_map: float | None = None
    miou: float | None = None
    #: the training schedule, as the metafile states it
    epochs: int | None = None
    iterations: int | None = None
    batch_size: int | None = None
    #: the README's schedule column ('1x', '3x MS'), where the family has one
    schedule: str | None = None

    @property
    def config(self) -> str:
        """The config's path in the repository."""
        return f'configs/{self.family.folder}/{self.name}.py'

    def metric_values(self) -> tuple[float, ...]:
        """The family's figures of this release, in :attr:`Family.metrics`' order."""
        return tuple(getattr(self, metric.field) for metric in self.family.metrics)


ARCHS: tuple[ArchRecord, ...] = (
    ArchRecord('tiny', depths=(2, 2, 6, 2), dims=96, post_norm=False, layer_scale=None,
               params=30_853_480),
    ArchRecord('small', depths=(2, 2, 18, 2), dims=96, post_norm=True, layer_scale=1e-5,
               params=52_220_392),
    ArchRecord('base', depths=(2, 2, 18, 2), dims=128, post_norm=True, layer_scale=1e-5,
               params=92_132_328),
)


def arch_record(name: str) -> ArchRecord:
    """The record of the arch called ``name`` (KeyError if none)."""
    for record in ARCHS:
        if record.name == name:
            return record
    raise KeyError(name)


RELEASES: tuple[Release, ...] = (
    # ImageNet-1k, 224x224, 300 epochs
    Release('vheat-t_16xb128_in1k', CLASSIFICATION, 'tiny',
            params=arch_record('tiny').params, paper_params=29_000_000,
            paper_flops=4_600_000_000, top1=82.2,
            url=f'{_RELEASE_URL}/vheatcls/vHeat_tiny.pth'),
    Release('vheat-s_16xb128_in1k', CLASSIFICATION, 'small',
            params=arch_record('small').params, paper_params=50_000_000,
            paper_flops=8_500_000_000, top1=83.6,
            url=f'{_RELEASE_URL}/vheatcls/vHeat_small.pth'),
    Release('vheat-b_16xb128_in1k', CLASSIFICATION, 'base',
            params=arch_record('base').params, paper_params=87_000_000,
            paper_flops=14_900_000_000, top1=83.9,
            url=f'{_RELEASE_URL}/vheatcls/vHeat_base.pth'),
    # COCO, Mask R-CNN + FPN; the official tiny 3x config keeps img_size 224, as this one does
    Release('mask-rcnn_vheat-t_fpn_1x_coco', MASK_RCNN, 'tiny', params=52_744_368,
            paper_params=53_000_000, paper_flops=286_000_000_000, box_map=45.1, mask_map=41.2,
            epochs=12, schedule='1x', url=f'{_RELEASE_URL}/vheatdet/vHeat_tiny_det.pth'),
    Release('mask-rcnn_vheat-s_fpn_1x_coco', MASK_RCNN, 'small', params=74_111_280,
            paper_params=74_000_000, paper_flops=377_000_000_000, box_map=46.8, mask_map=42.3,
            epochs=12, schedule='1x', url=f'{_RELEASE_URL}/vheatdet/vHeat_small_det.pth'),
    Release('mask-rcnn_vheat-b_fpn_1x_coco', MASK_RCNN, 'base', params=114_685_424,
            paper_params=115_000_000, paper_flops=526_000_000_000, box_map=47.7, mask_map=43.0,
            epochs=12, schedule='1x', url=f'{_RELEASE_URL}/vheatdet/vHeat_base_det.pth'),
    Release('mask-rcnn_vheat-t_fpn_ms-crop-3x_coco', MASK_RCNN, 'tiny', params=50_359_728,
            paper_params=53_000_000, paper_flops=286_000_000_000, box_map=47.3, mask_map=42.5,
            epochs=36, schedule='3x MS',
            url=f'{_RELEASE_URL}/vheatdet/vHeat_tiny_det_ms3x.pth'),
    Release('mask-rcnn_vheat-s_fpn_ms-crop-3x_coco', MASK_RCNN, 'small', params=74_111_280,
            paper_params=74_000_000, paper_flops=377_000_000_000, box_map=48.8, mask_map=43.7,
            epochs=36, schedule='3x MS',
            url=f'{_RELEASE_URL}/vheatdet/vHeat_small_det_ms3x.pth'),
    # ADE20K, UperNet, 160k iterations of 16 images at 512x512
    Release('upernet_vheat-t_8xb2-160k_ade20k-512x512', UPERNET, 'tiny', params=64_891_628,
            paper_params=62_000_000, paper_flops=948_000_000_000, miou=47.0,
            iterations=160_000, batch_size=16,
            url=f'{_RELEASE_URL}/vheatseg/vHeat_tiny_seg.pth'),
    Release('upernet_vheat-s_8xb2-160k_ade20k-512x512', UPERNET, 'small', params=86_258_540,
            paper_params=82_000_000, paper_flops=1_028_000_000_000, miou=49.0,
            iterations=160_000, batch_size=16),  # the release has no weights
    Release('upernet_vheat-b_8xb2-160k_ade20k-512x512', UPERNET, 'base', params=128_823_340,
            paper_params=129_000_000, paper_flops=1_219_000_000_000, miou=49.6,
            iterations=160_000, batch_size=16,
            url=f'{_RELEASE_URL}/vheatseg/vHeat_base_seg.pth'),
)


def arch_settings() -> dict[str, dict]:
    """``ARCH_SETTINGS``: each arch's row by name, in :data:`ARCHS`' order."""
    return {record.name: record.settings() for record in ARCHS}


def classifiers() -> tuple[Release, ...]:
    """The released ImageNet-1k classifiers, one per arch: what timm and torch.hub load."""
    return tuple(release for release in RELEASES
                 if release.family is CLASSIFICATION and release.url is not None)


def pretrained_urls() -> dict[str, str]:
    """``PRETRAINED_URLS``: the official ImageNet-1k weights of each arch."""
    return {release.arch: release.url for release in classifiers()}
