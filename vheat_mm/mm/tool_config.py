"""The config steps of ``tools/train.py`` and ``tools/test.py``, one pair of tools for three
toolboxes (``tools/analysis_tools/get_flops.py`` reads configs with them too): the command line,
loading a config, the edit each flag makes, and building the runner.

The toolbox is the config's ``default_scope``. Each step follows that toolbox's own
``tools/train.py`` / ``tools/test.py`` (work_dir, ``--resume``, ``--amp``, ``--tta``,
``--show-dir``, ``--out``); where they differ, the difference is a field of the toolbox's
:class:`~vheat_mm.mm.toolbox.ToolboxProfile`. Running without CUDA is
:mod:`vheat_mm.mm.cpu_launch`, which the tools call before :func:`build_runner`.

The runner is :class:`~vheat_mm.mm.runner.VHeatRunner` unless the config names another
(:func:`build_runner`): it reads checkpoints through vheat_mm's safe reader on any machine, and
``tools/train.py`` saves them with :class:`~vheat_mm.mm.checkpoint_hook.AtomicCheckpointHook`
(:func:`use_atomic_checkpoints`), so that a run killed at any point resumes from a complete
checkpoint. ``tools/train.py`` holds its work_dir's lock while it runs (:func:`lock_work_dir`),
so that a second run there refuses to start, and checks ``last_checkpoint`` before ``--resume``
reads it (:func:`check_last_checkpoint`).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import logging
import os
import os.path as osp
from typing import Sequence

import torch
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner

from ..checkpoint.messages import shown
from .runner import VHeatRunner
from .toolbox import TOOLBOX_PROFILES, TOOLBOXES, ToolboxProfile, import_object, is_installed, \
    registry
from .work_dir_lock import WorkDirLock

__all__ = ['ToolConfigError', 'LAUNCHERS',
           'add_launch_arguments', 'add_strict_argument', 'export_local_rank',
           'parse_tool_args', 'load_config', 'load_tool_config', 'select_toolbox',
           'enable_amp', 'enable_auto_scale_lr', 'set_resume', 'set_dataloader_defaults',
           'enable_visualization', 'enable_tta', 'set_test_output', 'attach_dump_metric',
           'use_atomic_checkpoints', 'check_last_checkpoint', 'launch_rank', 'lock_work_dir',
           'build_runner']

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
# where each launcher puts a process's global rank before the process group exists (what
# mmengine's init_dist reads)
RANK_VARIABLES = {'pytorch': 'RANK', 'slurm': 'SLURM_PROCID', 'mpi': 'OMPI_COMM_WORLD_RANK'}


class ToolConfigError(ValueError):
    """A config or command line that the tools cannot use; the message says why."""


def _log(message: str, level: int = logging.INFO) -> None:
    print_log(message, logger='current', level=level)


# ----------------------------------------------------------------------------- command line
class CfgOptions(DictAction):
    """mmengine's ``DictAction`` for ``--cfg-options``, which first refuses an item that is not
    ``key=value`` in one line naming it (``DictAction`` fails on it inside its unpacking)."""

    def __call__(self, parser, namespace, values, option_string=None):
        for item in values:
            key, equals, _ = item.partition('=')
            if not equals or not key:
                parser.error(f'{option_string} takes key=value items (for example '
                             f'train_cfg.max_iters=10), got {shown(item)}')
        super().__call__(parser, namespace, values, option_string)


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """``--work-dir``, ``--cfg-options``, ``--launcher`` and ``--local_rank`` / ``--local-rank``."""
    parser.add_argument('--work-dir', help='directory for logs and checkpoints (default: '
                        './work_dirs/<config name>, unless the config sets work_dir)')
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptions,
                        help='override config settings, key=value (lists as key="[a,b]")')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def add_strict_argument(parser: argparse.ArgumentParser) -> None:
    """``--strict``: a checkpoint that fits the model badly is an error, not a warning (run the
    tool inside :func:`~vheat_mm.checkpoint.strict_loading` with its value)."""
    parser.add_argument('--strict', action='store_true',
                        help='fail when a checkpoint fits the model badly: under 90%% of the '
                             'model\'s tensors loaded, or over 10%% of its own unused (default: '
                             'a warning)')


def export_local_rank(args: argparse.Namespace) -> None:
    """Set ``LOCAL_RANK`` from ``--local_rank`` unless the launcher set it (as the toolboxes do)."""
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))


def parse_tool_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line of ``tools/train.py`` or ``tools/test.py``: ``parser``'s own
    arguments, :func:`add_strict_argument`'s and :func:`add_launch_arguments`'s; then
    :func:`export_local_rank`."""
    add_strict_argument(parser)
    add_launch_arguments(parser)
    args = parser.parse_args()
    export_local_rank(args)
    return args


# ----------------------------------------------------------------------------- config
def select_toolbox(cfg: Config) -> str:
    """The toolbox named by the config's ``default_scope``; an error names the choices."""
    scope = cfg.get('default_scope')
    if scope not in TOOLBOXES:
        raise ToolConfigError(f'the config must set default_scope to one of '
                              f'{list(TOOLBOXES)} to choose the toolbox; it is {scope!r}')
    if not is_installed(scope):
        raise ToolConfigError(f'the config is for {scope} (default_scope), which is not '
                              f'installed')
    return scope


def load_config(path: str, *, work_dir: str | None, cfg_options: dict | None,
                launcher: str) -> tuple[Config, str]:
    """Read a config, merge ``--cfg-options``, set launcher and work_dir; return it and its toolbox.

    work_dir: the command line's, else the config's, else ``./work_dirs/<config name>``.
    """
    try:
        cfg = Config.fromfile(path)
    except SyntaxError as err:  # mmengine parses the text as '<unknown>': the file is named here
        where = path if _syntax_error(path) else f'a config that {path} inherits'
        raise ToolConfigError(f'{where} is not valid Python: line {err.lineno}: {err.msg}') \
            from None
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    return cfg, select_toolbox(cfg)


def _syntax_error(path: str) -> bool:
    """Whether the file ``path`` itself fails to parse as Python (read, never run)."""
    try:
        with open(path, 'rb') as file:
            ast.parse(file.read(), filename=path)
    except SyntaxError:
        return True
    except (OSError, ValueError):  # unreadable, or NUL bytes: mmengine's own error would say
        return False
    return False


def load_tool_config(args: argparse.Namespace) -> tuple[Config, str]:
    """:func:`load_config` for a command line of :func:`parse_tool_args` (``config``,
    ``--work-dir``, ``--cfg-options``, ``--launcher``)."""
    return load_config(args.config, work_dir=args.work_dir, cfg_options=args.cfg_options,
                       launcher=args.launcher)


def enable_amp(cfg: Config) -> None:
    """Mixed precision: ``AmpOptimWrapper`` with a dynamic loss scale (``--amp``)."""
    wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper_type == 'AmpOptimWrapper':
        _log('AMP training is already enabled in the config.', logging.WARNING)
        return
    if wrapper_type != 'OptimWrapper':
        raise ToolConfigError(f'--amp needs optim_wrapper type OptimWrapper, the config has '
                              f'{wrapper_type!r}')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'


def enable_auto_scale_lr(cfg: Config) -> None:
    """Scale the learning rate by the batch size (``--auto-scale-lr``, checked as mmdet does)."""
    auto_scale_lr = cfg.get('auto_scale_lr') or {}
    if 'enable' not in auto_scale_lr or 'base_batch_size' not in auto_scale_lr:
        raise ToolConfigError('--auto-scale-lr needs auto_scale_lr = dict(enable=..., '
                              'base_batch_size=...) in the config')
    cfg.auto_scale_lr.enable = True


def set_resume(cfg: Config, *, resume: str | None) -> None:
    """``resume='auto'``: the latest checkpoint in work_dir; a path: that checkpoint; None: no.
    (``VHeatRunner`` refuses, in one line, a checkpoint that mmengine's runner did not write.)
    """
    if resume is None:
        return
    cfg.resume = True
    cfg.load_from = None if resume == 'auto' else resume


def set_dataloader_defaults(cfg: Config, *, toolbox: str, fields: Sequence[str],
                            persistent_workers: bool) -> None:
    """The dataloader defaults of the toolboxes whose tools set them (``dataloader_defaults``:
    mmpretrain's give ``default_collate`` and memory pinning).

    As in mmpretrain's tools, config values win. Two guards are added: memory is pinned only
    when CUDA is there, and ``persistent_workers`` (which torch refuses with ``num_workers=0``)
    only with workers. Other toolboxes' dataloaders are left as they are.
    """
    if not TOOLBOX_PROFILES[toolbox].dataloader_defaults:
        return
    for name in fields:
        loader = cfg.get(name)
        if loader is None:
            continue
        defaults = ConfigDict(pin_memory=torch.cuda.is_available(),
                              collate_fn=dict(type='default_collate'))
        if persistent_workers and loader.get('num_workers', 0) > 0:
            defaults.persistent_workers = True
        defaults.update(loader)
        cfg[name] = defaults


def enable_visualization(cfg: Config, *, toolbox: str, show_dir: str) -> None:
    """Save painted predictions under ``show_dir`` (``--show-dir``): the visualization hook's
    ``show_switch`` on, the directory at ``show_dir_key``."""
    hooks = cfg.get('default_hooks') or {}
    if 'visualization' not in hooks:
        raise ToolConfigError("--show-dir needs default_hooks.visualization = "
                              "dict(type='VisualizationHook') in the config")
    profile = TOOLBOX_PROFILES[toolbox]
    cfg.default_hooks.visualization[profile.show_switch] = True
    cfg.merge_from_dict({profile.show_dir_key: show_dir})


def _default_tta(cfg: Config, profile: ToolboxProfile) -> tuple[dict, list]:
    """The toolbox's default: flip TTA of the test pipeline, merged by its ``tta_model``."""
    dataset = cfg.test_dataloader.dataset
    while profile.tta_innermost_dataset and 'dataset' in dataset:
        dataset = dataset['dataset']
    pack = copy.deepcopy(profile.tta_pack or dataset.pipeline[-1])
    pipeline = copy.deepcopy(dataset.pipeline)
    pipeline[-1] = dict(type='TestTimeAug',
                        transforms=[[dict(type='RandomFlip', prob=1.),
                                     dict(type='RandomFlip', prob=0.)], [pack]])
    return copy.deepcopy(profile.tta_model), pipeline


def enable_tta(cfg: Config, *, toolbox: str) -> None:
    """Test-time augmentation (``--tta``): ``cfg.tta_model`` wraps the model, ``cfg.tta_pipeline``
    replaces the test pipeline.

    A toolbox without ``tta_defaults`` (mmseg, whose configs define both) needs both in the
    config; mmdet and mmpretrain fill in a missing one with their tools' flip-TTA defaults,
    with a warning.
    """
    profile = TOOLBOX_PROFILES[toolbox]
    missing = [key for key in ('tta_model', 'tta_pipeline') if key not in cfg]
    if missing and not profile.tta_defaults:
        example = ', '.join(f'{key}={value!r}' for key, value in profile.tta_model.items())
        raise ToolConfigError(
            f'--tta needs {" and ".join(missing)} in the config ({toolbox} has no default '
            f'test-time augmentation), e.g. tta_model = dict({example}) and a '
            f'tta_pipeline ending in a TestTimeAug transform')
    if missing:
        tta_model, tta_pipeline = _default_tta(cfg, profile)
        defaults = dict(tta_model=tta_model, tta_pipeline=tta_pipeline)
        for key in missing:
            _log(f'--tta: the config has no {key}; using {toolbox} default {defaults[key]}',
                 logging.WARNING)
            cfg[key] = defaults[key]
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def set_test_output(cfg: Config, *, toolbox: str, out: str) -> None:
    """``--out``: a toolbox without a ``dump_metric`` (mmseg) writes predictions to that
    directory; mmdet and mmpretrain dump a pickle.

    The pickle dump is attached to the built runner by :func:`attach_dump_metric`; here its
    name is checked so that a bad one fails before the model is built.
    """
    if TOOLBOX_PROFILES[toolbox].dump_metric is None:
        cfg.test_evaluator['output_dir'] = out
        cfg.test_evaluator['keep_results'] = True
    elif not out.endswith(('.pkl', '.pickle')):
        raise ToolConfigError(f'--out must name a .pkl or .pickle file for {toolbox}, got '
                              f'{out!r}')


def attach_dump_metric(runner: Runner, *, toolbox: str, out: str) -> None:
    """Add the toolbox's ``dump_metric`` (mmdet's ``DumpDetResults``, mmengine's ``DumpResults``
    for mmpretrain), which writes the predictions to ``out``; nothing where it has none."""
    dump_metric = TOOLBOX_PROFILES[toolbox].dump_metric
    if dump_metric is not None:
        runner.test_evaluator.metrics.append(import_object(dump_metric)(out_file_path=out))


# ----------------------------------------------------------------------------- checkpoints
def use_atomic_checkpoints(cfg: Config) -> list[str]:
    """Save checkpoints with ``AtomicCheckpointHook`` where the config uses ``CheckpointHook``.

    mmengine's hook can leave a truncated checkpoint, or a ``last_checkpoint`` naming a deleted
    one, when the run is killed while saving (see :mod:`vheat_mm.mm.checkpoint_hook`). Any other
    hook type is left as it is. Logs and returns the change.
    """
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if hook is None or hook.get('type') != 'CheckpointHook':
        return []
    hook.type = 'AtomicCheckpointHook'
    change = 'default_hooks.checkpoint: CheckpointHook -> AtomicCheckpointHook'
    _log(f'checkpoints are written atomically: {change}')
    return [change]


def check_last_checkpoint(work_dir: str) -> None:
    """For ``--resume`` without a path: ``work_dir/last_checkpoint``, which mmengine reads as the
    text of a checkpoint path, must be that, and name a file that exists (or a URL); an error
    names the file. Without the file nothing is checked (mmengine starts afresh and says so).
    """
    path = osp.join(work_dir, 'last_checkpoint')
    try:
        with open(path, 'rb') as file:
            data = file.read()
    except FileNotFoundError:
        return
    except OSError as err:
        raise ToolConfigError(f'cannot read {path}: {err.strerror}') from None
    fix = ('write the path of the checkpoint to resume from into it, give that checkpoint to '
           '--resume, or delete it to start afresh')
    try:
        target = data.decode().strip()
    except UnicodeDecodeError as err:
        raise ToolConfigError(f'{path} is not a text file (byte {err.start} of {len(data)} is not '
                              f'UTF-8); it should hold the path of a checkpoint: {fix}') from None
    if not target or not target.isprintable():
        raise ToolConfigError(f'{path} holds {target[:80]!r}, not the path of a checkpoint: '
                              f'{fix}')
    if '://' not in target and not osp.isfile(target):
        raise ToolConfigError(f'{path} names {target[:200]}, which is not a file: {fix}')


def launch_rank(launcher: str) -> int:
    """This process's global rank as its launcher set it, before the process group exists
    (torchrun's ``RANK``, srun's ``SLURM_PROCID``, Open MPI's ``OMPI_COMM_WORLD_RANK``); 0 for
    ``'none'`` or where the variable is missing."""
    variable = RANK_VARIABLES.get(launcher)
    value = os.environ.get(variable, '0') if variable else '0'
    try:
        return int(value)
    except ValueError:
        raise ToolConfigError(f'{variable}={value!r} is not a rank (launcher {launcher})') \
            from None


def lock_work_dir(cfg: Config, *, resume: bool) -> WorkDirLock | contextlib.nullcontext:
    """Take ``cfg.work_dir``'s lock (:class:`~vheat_mm.mm.work_dir_lock.WorkDirLock`) for a
    training run; leaving the returned object's ``with`` block releases it.

    Only the main process of a launch (rank 0, :func:`launch_rank`) takes it: the other ranks of
    the same run start without it (if rank 0 refuses, torchrun and ``srun --kill-on-bad-exit``
    end them). Another live run's lock raises
    :class:`~vheat_mm.mm.work_dir_lock.WorkDirInUse`, unless ``resume`` (``--resume``), which
    takes it over with a warning.
    """
    if launch_rank(cfg.get('launcher', 'none')) != 0:
        return contextlib.nullcontext()
    lock = WorkDirLock(cfg.work_dir)
    lock.acquire(take_over=resume)
    return lock


# ----------------------------------------------------------------------------- runner
def build_runner(cfg: Config, *, toolbox: str) -> Runner:
    """The runner for ``cfg``, after the toolbox's ``runner_setup``: its ``runner_type`` from the
    toolbox's registry, :class:`~vheat_mm.mm.runner.VHeatRunner` where it names none (so that
    ``load_from`` and ``--resume`` are read by the safe reader, and official vHeat layouts load).
    The config is used as it is: without CUDA, call
    :func:`~vheat_mm.mm.cpu_launch.prepare_cpu_launch` first.
    """
    runner_setup = TOOLBOX_PROFILES[toolbox].runner_setup
    if runner_setup is not None:
        import_object(runner_setup)()
    if 'runner_type' not in cfg:
        return VHeatRunner.from_cfg(cfg)
    return registry(toolbox).RUNNERS.build(cfg)
