"""The paper configs' recipes beside the official configs', hyperparameter by hyperparameter.

    python tools/analysis_tools/recipes.py /path/to/MzeroMiko-vHeat-checkout [--markdown]

For each of the 11 paper configs (:data:`PAPER_CONFIGS`) it reads the project's config
(mmengine, resolved) and the official one from a checkout of github MzeroMiko/vHeat: the
classification yaml over the defaults of the official ``utils/config.py`` and the constants of
``main.py`` (both read with ``ast``, nothing imported), the detection and segmentation configs
with their Swin ``_base_`` taken from the toolbox's packaged configs (:func:`fix_base`, what a
user of the official configs changes). It prints every hyperparameter that decides the result,
the project's value beside the official one, and exits 1 naming each one that differs.
``--markdown`` prints the tables of ``docs/recipes.md``.
"""
from __future__ import annotations

import argparse
import ast
import copy
import inspect
import logging
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
import yaml
from mmengine.config import Config
from mmengine.logging import MMLogger

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / 'configs'

# project config (under configs/) -> official config (in the checkout)
PAPER_CONFIGS = {
    'classification/vheat-t_16xb128_in1k.py': 'classification/configs/vHeat/vHeat_tiny_224.yaml',
    'classification/vheat-s_16xb128_in1k.py': 'classification/configs/vHeat/vHeat_small_224.yaml',
    'classification/vheat-b_16xb128_in1k.py': 'classification/configs/vHeat/vHeat_base_224.yaml',
    'mask_rcnn/mask-rcnn_vheat-t_fpn_1x_coco.py': 'detection/configs/vheat/mask_rcnn_fpn_coco_tiny.py',
    'mask_rcnn/mask-rcnn_vheat-s_fpn_1x_coco.py': 'detection/configs/vheat/mask_rcnn_fpn_coco_small.py',
    'mask_rcnn/mask-rcnn_vheat-b_fpn_1x_coco.py': 'detection/configs/vheat/mask_rcnn_fpn_coco_base.py',
    'mask_rcnn/mask-rcnn_vheat-t_fpn_ms-crop-3x_coco.py':
        'detection/configs/vheat/mask_rcnn_fpn_coco_tiny_ms_3x.py',
    'mask_rcnn/mask-rcnn_vheat-s_fpn_ms-crop-3x_coco.py':
        'detection/configs/vheat/mask_rcnn_fpn_coco_small_ms_3x.py',
    'upernet/upernet_vheat-t_8xb2-160k_ade20k-512x512.py':
        'segmentation/configs/vheat/upernet_vheat_160k_ade20k_512x512_tiny.py',
    'upernet/upernet_vheat-s_8xb2-160k_ade20k-512x512.py':
        'segmentation/configs/vheat/upernet_vheat_160k_ade20k_512x512_small.py',
    'upernet/upernet_vheat-b_8xb2-160k_ade20k-512x512.py':
        'segmentation/configs/vheat/upernet_vheat_160k_ade20k_512x512_base.py',
}
IMPORTS = "\ncustom_imports = dict(imports=['vheat_mm'], allow_failed_imports=False)\n"


class Row(NamedTuple):
    """One hyperparameter: its name, the project's and the official value (compared with ==),
    and how each is shown."""
    name: str
    ours: Any
    official: Any
    shown: tuple[str, str]

    @property
    def same(self) -> bool:
        return self.ours == self.official


def row(name: str, ours: Any, official: Any, show: Callable[[Any], str] = repr) -> Row:
    return Row(name, ours, official, (show(ours), show(official)))


# ----------------------------------------------------------------------------- official files
def fix_base(text: str, toolbox: str) -> str:
    """What a user of an official config changes: the relative Swin ``_base_`` becomes the
    toolbox's packaged one, and vheat_mm is imported."""
    return re.sub(r"'(?:\.\./|\./)(swin/[^']+)'", rf"'{toolbox}::\1'", text) + IMPORTS


def official_toolbox(name: str) -> str:
    """The toolbox of the official downstream config ``name``, by its folder in the official
    repository (``OfficialBackbone.folder`` in vheat_mm's toolbox profiles)."""
    from vheat_mm.mm.toolbox import TOOLBOX_PROFILES  # imports vheat_mm: registers the backbone
    folder = name.split('/', 1)[0]
    for toolbox, profile in TOOLBOX_PROFILES.items():
        if profile.official is not None and profile.official.folder == folder:
            return toolbox
    raise ValueError(f'no toolbox holds the official folder {folder!r} ({name})')


def official_downstream_config(checkout: Path, name: str) -> Config:
    """An official detection or segmentation config, resolved (see :func:`fix_base`)."""
    toolbox = official_toolbox(name)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(name).name
        path.write_text(fix_base((checkout / name).read_text(), toolbox))
        return Config.fromfile(str(path))


def _dotted(node: ast.AST) -> str | None:
    """'_C.TRAIN.BASE_LR' for the attribute chain ``_C.TRAIN.BASE_LR``."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return '.'.join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else None


def official_defaults(checkout: Path) -> dict:
    """The defaults of the official ``classification/utils/config.py`` (``_C.X.Y = value``), as
    a nested dict, read with ast."""
    tree = ast.parse((checkout / 'classification/utils/config.py').read_text())
    defaults: dict = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = _dotted(node.targets[0])
        if target is None or not target.startswith('_C.'):
            continue
        *parents, leaf = target.split('.')[1:]
        scope = defaults
        for part in parents:
            scope = scope.setdefault(part, {})
        if isinstance(node.value, ast.Call):  # CN(): a new section
            scope.setdefault(leaf, {})
        else:
            scope[leaf] = ast.literal_eval(node.value)
    return defaults


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _official_main(checkout: Path) -> ast.Module:
    return ast.parse((checkout / 'classification/main.py').read_text())


def _argparse_default(tree: ast.Module, option: str) -> Any:
    """The default of ``parser.add_argument(option, ...)`` in the official main.py."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, 'attr', '') == 'add_argument' \
                and node.args and isinstance(node.args[0], ast.Constant) \
                and node.args[0].value == option:
            for keyword in node.keywords:
                if keyword.arg == 'default':
                    return ast.literal_eval(keyword.value)
    raise ValueError(f'main.py has no add_argument({option!r}, default=...)')


def _lr_base_batch(tree: ast.Module) -> float:
    """The batch the official main.py scales the lr by: ``... / 512.0`` in ``linear_scaled_lr``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _dotted(node.targets[0]) == 'linear_scaled_lr' \
                and isinstance(node.value, ast.BinOp) and isinstance(node.value.op, ast.Div):
            return ast.literal_eval(node.value.right)
    raise ValueError('main.py has no linear_scaled_lr = ... / N')


def _best_checkpoints(tree: ast.Module) -> tuple[str, ...]:
    """Which weights the official main.py keeps a best checkpoint of (``best='best'`` is the
    raw model's, ``best='ema_best'`` the EMA's)."""
    names = {'best': 'raw', 'ema_best': 'EMA'}
    kept = [names[ast.literal_eval(k.value)] for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, 'id', '') == 'save_checkpoint'
            for k in node.keywords if k.arg == 'best']
    return tuple(sorted(set(kept), key=['raw', 'EMA'].index))


def official_classification(checkout: Path, name: str) -> dict:
    """The official classification recipe: the yaml over the config.py defaults, plus what
    main.py fixes (EMA, lr scaling, best checkpoints)."""
    config = _merge(official_defaults(checkout), yaml.safe_load((checkout / name).read_text()))
    main = _official_main(checkout)
    config['MAIN'] = dict(EMA=_argparse_default(main, '--model_ema'),
                          EMA_DECAY=_argparse_default(main, '--model_ema_decay'),
                          LR_BASE_BATCH=_lr_base_batch(main), BEST=_best_checkpoints(main))
    return config


# ----------------------------------------------------------------------------- shared pieces
def _arch_tuple(arch: Any) -> tuple:
    from vheat_mm.models import resolve_arch
    resolved = resolve_arch(arch)
    return (tuple(resolved.depths), tuple(resolved.dims), resolved.post_norm,
            resolved.layer_scale, resolved.mlp_ratio)


def _show_arch(arch: tuple) -> str:
    depths, dims, post_norm, layer_scale, mlp_ratio = arch
    return (f'depths {list(depths)}, dims {list(dims)}, {"post" if post_norm else "pre"}-norm, '
            f'layer scale {layer_scale}, MLP ratio {mlp_ratio}')


def _mini(arch: tuple) -> dict:
    """A small arch of the same block kind (names and dimensions of its tensors as ``arch``'s)."""
    return dict(depths=(1, 1, 1, 1), dims=4, post_norm=arch[2], layer_scale=arch[3],
                mlp_ratio=arch[4])


def _no_decay_mmengine(model: torch.nn.Module, optim_wrapper: dict) -> frozenset[str]:
    """The parameters that mmengine's optimizer constructor gives no weight decay."""
    from mmengine.optim import DefaultOptimWrapperConstructor
    cfg = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05))
    constructor = DefaultOptimWrapperConstructor(cfg, optim_wrapper.get('paramwise_cfg'))
    groups = []
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # add_params logs every tensor's settings
    try:
        constructor.add_params(groups, model)
    finally:
        logger.setLevel(level)
    names = {id(p): n for n, p in model.named_parameters()}
    return frozenset(names[id(g['params'][0])] for g in groups if g.get('weight_decay', 0.05) == 0)


def _show_no_decay(names: frozenset[str], model: torch.nn.Module) -> str:
    params = dict(model.named_parameters())
    of = f'({len(names)} of {len(params)} tensors of a small model)'
    if names == {n for n, p in params.items() if p.dim() == 1 or n.endswith('.bias')}:
        return f'1-D tensors and biases {of}'
    if names == {n for n in params if 'norm' in n}:
        return f"tensors named '*norm*' {of}"
    return f'{len(names)} of {len(params)}: ' + ', '.join(sorted(names))


def _precision(optim_wrapper: dict) -> str:
    if optim_wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
        return f'{optim_wrapper.get("dtype") or "float16"}, loss scale ' \
               f'{optim_wrapper.get("loss_scale", "dynamic")}'
    return 'float32'


def _clean(value: Any) -> Any:
    """``value`` without the ``_scope_`` keys that mmengine adds while resolving a config."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if k != '_scope_'}
    if isinstance(value, (list, tuple)):
        return type(value)(_clean(v) for v in value)
    return value


def _pipeline(pipeline: list) -> tuple:
    return tuple(tuple(sorted((k, repr(v)) for k, v in _clean(t).items())) for t in pipeline)


def _show_pipeline(pipeline: tuple) -> str:
    return ' → '.join(dict(t)['type'].strip("'") for t in pipeline)


def _show_dict(value: dict, keys: tuple[str, ...]) -> str:
    shown = [f'{k} {value[k]!r}' for k in keys if k in value]
    return f"{value.get('type', '')} ({', '.join(shown)})" if shown else str(value.get('type'))


def _schedule(schedulers: list) -> tuple:
    return tuple(tuple(sorted(_clean(s).items())) for s in schedulers)


def _show_schedule(schedule: tuple) -> str:
    parts = []
    for s in map(dict, schedule):
        args = {k: v for k, v in s.items() if k != 'type'}
        parts.append(f"{s['type']}({', '.join(f'{k}={v!r}' for k, v in args.items())})")
    return '; '.join(parts)


# ----------------------------------------------------------------------------- classification
def _ema_hook(cfg: Config) -> dict | None:
    return next((h for h in cfg.get('custom_hooks') or []
                 if h['type'] in ('EMAHook', 'RawAndEMAHook')), None)


def _rand_augment(pipeline: list) -> str:
    t = next((t for t in pipeline if t['type'] == 'RandAugment'), None)
    if t is None:
        return ''
    increasing = '-inc1' if t['policies'] == 'timm_increasing' else ''
    n = '' if t['num_policies'] == 2 else f'-n{t["num_policies"]}'
    return f'rand-m{t["magnitude_level"]}{n}-mstd{t["magnitude_std"]}{increasing}'


def classification_rows(cfg: Config, off: dict) -> list[Row]:
    from vheat_mm.checkpoint import official_to_mmpretrain
    from vheat_mm.models import VHeat
    backbone, optim = cfg.model.backbone, cfg.optim_wrapper
    optimizer = optim.optimizer
    warmup, cosine = cfg.param_scheduler
    # auto_scale_lr.base_batch_size: the total batch that lr is for (scaled only when enabled)
    base_batch = cfg.auto_scale_lr.base_batch_size
    per = base_batch if cfg.auto_scale_lr.get('enable') else None
    lr512 = optimizer.lr * 512 / base_batch
    train, test = cfg.train_dataloader.dataset.pipeline, cfg.test_dataloader.dataset.pipeline
    crop = next(t for t in train if t['type'] == 'RandomResizedCrop')
    erase = next(t for t in train if t['type'] == 'RandomErasing')
    resize = next(t for t in test if t['type'] == 'ResizeEdge')
    center = next(t for t in test if t['type'] == 'CenterCrop')
    augments = cfg.model.train_cfg.augments
    alpha = {a['type']: a['alpha'] for a in augments}
    ema = _ema_hook(cfg)
    best = tuple('EMA' if k.startswith('ema/') else 'raw'
                 for k in cfg.default_hooks.checkpoint.get('save_best') or [])
    m, t, a, d = off['MODEL'], off['TRAIN'], off['AUG'], off['DATA']
    main = off['MAIN']
    arch = _arch_tuple(backbone.arch)
    official_arch = (tuple(m['VHEAT']['DEPTHS']), tuple(m['VHEAT']['EMBED_DIM'] * 2**i for i in range(4)),
                     m['VHEAT']['POST_NORM'], m['VHEAT']['LAYER_SCALE'], m['VHEAT']['MLP_RATIO'])
    # no weight decay: mmengine's constructor on the mmpretrain classifier, against the official
    # rule (1-D tensors and names ending in .bias) on the official keys
    from mmpretrain.registry import MODELS
    from mmengine.registry import DefaultScope
    small = copy.deepcopy(cfg.model)
    small.backbone.arch = _mini(arch)
    small.head.in_channels = 32
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(small)
    official_model = VHeat(_mini(official_arch), num_classes=small.head.num_classes)
    official_no_decay = {n for n, p in official_model.named_parameters()
                         if p.dim() == 1 or n.endswith('.bias')}
    renamed = official_to_mmpretrain({n: n for n in dict(official_model.named_parameters())})
    official_no_decay = frozenset(k for k, n in renamed.items() if n in official_no_decay)
    show_no_decay = lambda names: _show_no_decay(names, model)  # noqa: E731
    return [
        row('arch', arch, official_arch, _show_arch),
        row('img_size', backbone.img_size, d['IMG_SIZE']),
        row('drop_path_rate', backbone.drop_path_rate, m['DROP_PATH_RATE']),
        row('classes', cfg.model.head.num_classes, m['NUM_CLASSES']),
        row('epochs', cfg.train_cfg.max_epochs, t['EPOCHS']),
        row('warm-up epochs', warmup.end, t['WARMUP_EPOCHS']),
        row('images per GPU', cfg.train_dataloader.batch_size, d['BATCH_SIZE']),
        row('lr scaled with the real total batch, per', per, main['LR_BASE_BATCH']),
        row('lr per 512 images', lr512, t['BASE_LR']),
        row('warm-up start lr per 512', lr512 * warmup.start_factor, t['WARMUP_LR']),
        row('final lr per 512', lr512 * cosine.get('eta_min_ratio', float('nan'))
            if cosine.get('eta_min') is None else f'{cosine.eta_min} (not scaled)', t['MIN_LR']),
        row('schedule', (warmup.type, cosine.type), ('LinearLR', 'CosineAnnealingLR')
            if t['LR_SCHEDULER']['NAME'] == 'cosine' else t['LR_SCHEDULER']['NAME'],
            lambda v: ' + '.join(v) if isinstance(v, tuple) else v),
        row('lr updated every', 'iteration' if all(s.get('convert_to_iter_based') or
                                                     not s.get('by_epoch', True)
                                                     for s in cfg.param_scheduler) else 'epoch',
            'iteration', str),
        row('optimizer', optimizer.type.lower(), t['OPTIMIZER']['NAME']),
        row('betas', tuple(optimizer.betas), tuple(t['OPTIMIZER']['BETAS'])),
        row('eps', optimizer.eps, t['OPTIMIZER']['EPS']),
        row('weight decay', optimizer.weight_decay, t['WEIGHT_DECAY']),
        row('no weight decay on', _no_decay_mmengine(model, optim), official_no_decay,
            show_no_decay),
        row('gradient clipping (max norm)', optim.clip_grad.max_norm, t['CLIP_GRAD']),
        row('precision', _precision(optim), 'float16, loss scale dynamic' if off['AMP_ENABLE']
            else 'float32', str),
        row('EMA decay', 1 - ema.momentum if ema else None,
            main['EMA_DECAY'] if main['EMA'] else None),
        row('validated every epoch', ('raw', 'EMA') if ema and ema.type == 'RawAndEMAHook'
            else ('EMA',) if ema else ('raw',), ('raw', 'EMA') if main['EMA'] else ('raw',),
            ' and '.join),
        row('best checkpoint kept of', best, main['BEST'], ' and '.join),
        row('label smoothing', cfg.model.head.loss.label_smooth_val, m['LABEL_SMOOTHING']),
        row('Mixup alpha', alpha.get('Mixup', 0.0), a['MIXUP']),
        row('CutMix alpha', alpha.get('CutMix', 0.0), a['CUTMIX']),
        row('Mixup/CutMix switch probability', 1 / len(augments) if len(augments) == 2 else None,
            a['MIXUP_SWITCH_PROB']),
        row('RandAugment', _rand_augment(train), a['AUTO_AUGMENT'], str),
        # timm applies colour jitter only without AutoAugment / RandAugment
        row('colour jitter', next((t['brightness'] for t in train if t['type'] == 'ColorJitter'),
                                  0.0), 0.0 if a['AUTO_AUGMENT'] else a['COLOR_JITTER']),
        row('random erasing probability', erase.erase_prob, a['REPROB']),
        row('random erasing mode', {'rand': 'pixel'}.get(erase.mode, erase.mode), a['REMODE']),
        row('random erasing count', 1, a['RECOUNT']),
        row('train crop', (crop.scale, crop.interpolation), (d['IMG_SIZE'], d['INTERPOLATION'])),
        row('test resize (short side), crop', (resize.scale, center.crop_size, resize.interpolation),
            (int(256 / 224 * d['IMG_SIZE']), d['IMG_SIZE'], d['INTERPOLATION'])
            if off['TEST']['CROP'] else (d['IMG_SIZE'], d['IMG_SIZE'], d['INTERPOLATION'])),
    ]


# ----------------------------------------------------------------------------- downstream
def _official_backbone(backbone: dict, toolbox: str) -> dict:
    """The official keywords with the official class's defaults filled in."""
    from vheat_mm.mm.backbone import build_official_backbone
    from vheat_mm.mm.toolbox import TOOLBOX_PROFILES
    official = TOOLBOX_PROFILES[toolbox].official
    build = build_official_backbone(official.name, official.img_size)
    defaults = {n: p.default for n, p in inspect.signature(build).parameters.items()
                if p.default is not p.empty}
    return {**defaults, **{k: v for k, v in backbone.items() if k in defaults}}


def _zero_padded_by_official_tool(checkout: Path) -> str:
    """'pad' if the official interpolate4downstream.py zero-pads (``F.pad``)."""
    text = (checkout / 'classification/interpolate4downstream.py').read_text()
    return 'pad' if 'F.pad(' in text else 'unknown'


def downstream_rows(cfg: Config, off: Config, checkout: Path, toolbox: str) -> list[Row]:
    ours, theirs = cfg.model.backbone, _official_backbone(off.model.backbone, toolbox)
    arch = _arch_tuple(ours.arch)
    official_arch = _arch_tuple(dict(depths=theirs['depths'], dims=theirs['dims'],
                                     post_norm=theirs['post_norm'],
                                     layer_scale=theirs['layer_scale'],
                                     mlp_ratio=theirs['mlp_ratio']))
    from vheat_mm.models import VHeatFeatures
    small = torch.nn.Module()
    small.backbone = VHeatFeatures(_mini(arch))
    rows = [
        row('arch', arch, official_arch, _show_arch),
        row('img_size', ours.get('img_size', 224), theirs['img_size']),
        row('freq_embed start (from the 224 checkpoint)', ours.get('freq_embed_resize', 'bicubic'),
            _zero_padded_by_official_tool(checkout), str),
        row('drop_path_rate', ours.drop_path_rate, theirs['drop_path_rate']),
        row('out_indices', tuple(ours.out_indices), tuple(theirs['out_indices'])),
        row('frozen_stages', ours.get('frozen_stages', -1), theirs['frozen_stages']),
    ]
    parts = ('data_preprocessor', 'neck', 'rpn_head', 'roi_head', 'decode_head',
             'auxiliary_head', 'train_cfg', 'test_cfg')
    for part in parts:
        if part in cfg.model or part in off.model:
            a, b = _clean(cfg.model.get(part)), _clean(off.model.get(part))
            keys = ('in_channels', 'num_classes', 'size', 'mode', 'crop_size', 'stride')
            rows.append(row(f'model.{part}', a, b,
                            lambda v, keys=keys: '—' if v is None else
                            _show_dict(v, keys) if 'type' in v else
                            _show_dict(dict(v, type='dict'), keys)))
    optim, optim_off = cfg.optim_wrapper, off.optim_wrapper
    rows += [
        row('optimizer', optim.optimizer.type, optim_off.optimizer.type, str),
        row('lr', optim.optimizer.lr, optim_off.optimizer.lr),
        row('betas', tuple(optim.optimizer.betas), tuple(optim_off.optimizer.betas)),
        row('weight decay', optim.optimizer.weight_decay, optim_off.optimizer.weight_decay),
        row('no weight decay on (backbone)', _no_decay_mmengine(small, optim),
            _no_decay_mmengine(small, optim_off),
            lambda names: _show_no_decay(names, small) if names else 'nothing'),
        row('precision', _precision(optim), _precision(optim_off), str),
        row('gradient clipping', optim.get('clip_grad'), optim_off.get('clip_grad')),
        row('schedule', _schedule(cfg.param_scheduler), _schedule(off.param_scheduler),
            _show_schedule),
        row('train loop', tuple(sorted(_clean(cfg.train_cfg).items())),
            tuple(sorted(_clean(off.train_cfg).items())), lambda v: ', '.join(f'{k} {x}' for k, x in v)),
        row('images per GPU', cfg.train_dataloader.batch_size, off.train_dataloader.batch_size),
        row('train pipeline', _pipeline(cfg.train_dataloader.dataset.pipeline),
            _pipeline(off.train_dataloader.dataset.pipeline), _show_pipeline),
        row('test pipeline', _pipeline(cfg.test_dataloader.dataset.pipeline),
            _pipeline(off.test_dataloader.dataset.pipeline), _show_pipeline),
    ]
    return rows


# ----------------------------------------------------------------------------- entry points
def recipe_rows(name: str, checkout: Path) -> list[Row]:
    """The rows of the paper config ``name`` (a key of :data:`PAPER_CONFIGS`)."""
    import vheat_mm  # noqa: F401  registers the backbone and the hooks
    official = PAPER_CONFIGS[name]
    cfg = Config.fromfile(str(CONFIGS / name))
    if name.startswith('classification/'):
        return classification_rows(cfg, official_classification(checkout, official))
    toolbox = official_toolbox(official)
    return downstream_rows(cfg, official_downstream_config(checkout, official), checkout,
                           toolbox)


def markdown(name: str, rows: list[Row]) -> str:
    """One config's table for docs/recipes.md."""
    official = PAPER_CONFIGS[name]
    lines = [f'### {Path(name).stem}', '',
             f'[`configs/{name}`](../configs/{name}) against the official `{official}`.', '',
             '| hyperparameter | vheat_mm | official |', '|---|---|---|']
    for r in rows:
        mark = '' if r.same else ' **(differs)**'
        lines.append(f'| {r.name}{mark} | {r.shown[0]} | {r.shown[1]} |')
    return '\n'.join(lines) + '\n'


def differences(name: str, rows: list[Row]) -> list[str]:
    return [f'{name}: {r.name}: vheat_mm {r.shown[0]} != official {r.shown[1]}'
            for r in rows if not r.same]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('checkout', type=Path, help='a checkout of github MzeroMiko/vHeat')
    parser.add_argument('--markdown', action='store_true', help="print docs/recipes.md's tables")
    args = parser.parse_args(argv)
    if not (args.checkout / 'classification/main.py').is_file():
        parser.error(f'{args.checkout} is not a checkout of MzeroMiko/vHeat (no '
                     f'classification/main.py)')
    found = []
    for name in PAPER_CONFIGS:
        rows = recipe_rows(name, args.checkout)
        found += differences(name, rows)
        print(markdown(name, rows) if args.markdown else
              '\n'.join(f'{name}: {r.name}: {r.shown[0]} | {r.shown[1]}' for r in rows))
    for line in found:
        print(f'differs: {line}', file=sys.stderr)
    return 1 if found else 0


if __name__ == '__main__':
    sys.exit(main())
