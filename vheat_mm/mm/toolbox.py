"""What differs between mmpretrain, mmdet and mmseg, in one table: :data:`TOOLBOX_PROFILES`.

Every place that treats the toolboxes differently reads its :class:`ToolboxProfile`: the
registration (:mod:`vheat_mm.mm`), ``tools/train.py`` and ``tools/test.py``
(:mod:`.tool_config`), ``tools/analysis_tools/get_flops.py``, ``demo/image_demo.py`` and
``tools/check_install.py``. A toolbox is named by its package, which is also the
``default_scope`` of its configs. Importing this module imports no toolbox: objects named by a
dotted path (``module.name``) are imported when used.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, NamedTuple

__all__ = ['OfficialBackbone', 'ToolboxProfile', 'TOOLBOX_PROFILES', 'TOOLBOXES',
           'built_without_weights', 'import_object', 'is_installed', 'load_inference_weights',
           'registry']


class OfficialBackbone(NamedTuple):
    """The official code's backbone class for a toolbox: the name its configs use, its default
    ``img_size``, and the folder of the official repository that holds the toolbox's code."""
    name: str
    img_size: int
    folder: str


@dataclass(frozen=True)
class ToolboxProfile:
    """How one toolbox's tools, registries and inferencer differ from the others'."""
    # the module holding the toolbox's registries (MODELS, RUNNERS, ...)
    registry: str
    # --show-dir: the attribute of default_hooks.visualization that turns drawing on, and the
    # config key (dotted) that takes the directory
    show_switch: str
    show_dir_key: str
    # --tta: the wrapper that merges the augmented predictions; with tta_defaults, a config
    # without tta_model / tta_pipeline gets this wrapper / a flip TTA of its test pipeline,
    # without it the config must have both (the wrapper is then the example in the error)
    tta_model: dict
    tta_defaults: bool
    # get_flops.py: the default input (H, W), as the toolbox's own get_flops.py
    flops_shape: tuple[int, int]
    # demo/image_demo.py: runs the toolbox's inferencer, ``infer_image(config, image, *,
    # weights, out_dir, device)``, drawing the picture under ``out_dir/vis``; returns its result.
    # The weights are read as VHeatRunner reads them, not by the inferencer
    infer_image: Callable[..., dict]
    # the flip TTA's last transform (None: the test pipeline's own), and whether the test
    # pipeline is read from the innermost of nested dataset wrappers
    tta_pack: dict | None = None
    tta_innermost_dataset: bool = False
    # --out: the metric that dumps predictions to a .pkl file; None: --out is a directory
    # that the test evaluator writes predictions to (output_dir, keep_results)
    dump_metric: str | None = None
    # the dataloader defaults of mmpretrain's tools (default_collate, pin_memory,
    # persistent_workers), see tool_config.set_dataloader_defaults
    dataloader_defaults: bool = False
    # called before the runner is built
    runner_setup: str | None = None
    # get_flops.py: the data sample that goes with an image through the data preprocessor
    # (None: the model takes a plain batch), and the heads it leaves out (not run at inference)
    data_sample: str | None = None
    flops_without: tuple[str, ...] = ()
    # the official code's backbone registered into this toolbox, if any
    official: OfficialBackbone | None = None


def load_inference_weights(model, weights: str | None) -> dict:
    """Load ``weights`` into an inferencer's ``model`` as :class:`~.runner.VHeatRunner` reads
    them (the safe reader, official layouts converted, the fit reported); returns the
    checkpoint's ``dataset_meta`` (empty without weights or without one)."""
    if weights is None:
        return {}
    from .runner import load_checkpoint
    checkpoint = load_checkpoint(model, weights)
    return dict((checkpoint.get('meta') or {}).get('dataset_meta') or {})


@contextlib.contextmanager
def built_without_weights(weights: str | None) -> Iterator[None]:
    """The inferencers are built without weights (they are loaded after, by
    :func:`_weights_into`): their warnings about random weights would be false."""
    with warnings.catch_warnings():
        if weights is not None:
            warnings.filterwarnings('ignore', message='.*(randomly initialized|weights is None)')
        yield


def _infer_classes(config: str, image: str, *, weights: str | None, out_dir: str,
                   device: str) -> dict:
    from mmpretrain.apis import ImageClassificationInferencer
    inferencer = ImageClassificationInferencer(model=config, pretrained=False, device=device)
    meta = load_inference_weights(inferencer.model, weights)
    if meta.get('classes') is not None:
        inferencer.classes = meta['classes']
    (Path(out_dir) / 'vis').mkdir(parents=True, exist_ok=True)
    return inferencer(image, show_dir=str(Path(out_dir) / 'vis'))[0]


def _infer_detections(config: str, image: str, *, weights: str | None, out_dir: str,
                      device: str) -> dict:
    from mmdet.apis import DetInferencer
    with built_without_weights(weights):
        inferencer = DetInferencer(model=config, weights=None, device=device,
                                   show_progress=False)
    meta = load_inference_weights(inferencer.model, weights)
    if meta:  # mmdet keeps its keys lower-case; the visualizer shares the model's dict
        inferencer.model.dataset_meta.update({k.lower(): v for k, v in meta.items()})
    return inferencer(image, out_dir=out_dir, no_save_pred=False)


def _infer_segmentation(config: str, image: str, *, weights: str | None, out_dir: str,
                        device: str) -> dict:
    from mmseg.apis import MMSegInferencer
    with built_without_weights(weights):
        inferencer = MMSegInferencer(model=config, weights=None, device=device)
    meta = load_inference_weights(inferencer.model, weights)
    if meta.get('classes') is not None:
        inferencer.model.dataset_meta = {'classes': meta['classes'],
                                         'palette': meta.get('palette')}
        inferencer.visualizer.set_dataset_meta(meta['classes'], meta.get('palette'))
    return inferencer(image, out_dir=out_dir)


TOOLBOX_PROFILES: dict[str, ToolboxProfile] = {
    'mmpretrain': ToolboxProfile(
        registry='mmpretrain.registry',
        show_switch='enable', show_dir_key='default_hooks.visualization.out_dir',
        tta_model=dict(type='mmpretrain.AverageClsScoreTTA'), tta_defaults=True,
        flops_shape=(224, 224), infer_image=_infer_classes,
        dump_metric='mmengine.evaluator.DumpResults', dataloader_defaults=True),
    'mmdet': ToolboxProfile(
        registry='mmdet.registry',
        show_switch='draw', show_dir_key='default_hooks.visualization.test_out_dir',
        tta_model=dict(type='DetTTAModel',
                       tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)),
        tta_defaults=True,
        flops_shape=(800, 1280), infer_image=_infer_detections,
        tta_pack=dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                                       'img_shape', 'scale_factor', 'flip',
                                                       'flip_direction')),
        tta_innermost_dataset=True,
        dump_metric='mmdet.evaluation.DumpDetResults',
        runner_setup='mmdet.utils.setup_cache_size_limit_of_dynamo',
        data_sample='mmdet.structures.DetDataSample',
        official=OfficialBackbone('MMDET_VHEAT', 224, 'detection')),
    'mmseg': ToolboxProfile(
        registry='mmseg.registry',
        show_switch='draw', show_dir_key='visualizer.save_dir',
        tta_model=dict(type='SegTTAModel'), tta_defaults=False,
        flops_shape=(512, 2048), infer_image=_infer_segmentation,
        data_sample='mmseg.structures.SegDataSample', flops_without=('auxiliary_head',),
        official=OfficialBackbone('MMSEG_VHEAT', 512, 'segmentation')),
}
TOOLBOXES = tuple(TOOLBOX_PROFILES)


def import_object(dotted: str) -> Any:
    """The object that ``module.name`` names."""
    module, _, name = dotted.rpartition('.')
    return getattr(importlib.import_module(module), name)


def is_installed(package: str) -> bool:
    """Whether ``package`` can be imported (without importing it)."""
    return importlib.util.find_spec(package) is not None


def registry(toolbox: str) -> ModuleType:
    """The toolbox's registry module (``registry(toolbox).MODELS``, ``.RUNNERS``, ...)."""
    return importlib.import_module(TOOLBOX_PROFILES[toolbox].registry)
