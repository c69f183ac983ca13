"""Running ``tools/train.py`` and ``tools/test.py`` where there is no CUDA, also distributed.

The tools call :func:`prepare_cpu_launch` before they build the runner: without CUDA it
rewrites the config, logging each change (:func:`adapt_to_cpu`: BN instead of SyncBN, float32
instead of mixed precision, and for several processes the ``gloo`` backend instead of ``nccl``
and DDP without ``device_ids``), and for a distributed launch initialises the process group with
mmengine's own launcher code (:func:`init_distributed_without_cuda`). With CUDA it does nothing.
:func:`close_distributed` ends the process group once the runner is gone.
"""
from __future__ import annotations

import contextlib
import gc
import logging
from typing import Iterator

import torch
from mmengine.config import Config, ConfigDict
from mmengine.dist import init_dist, is_distributed
from mmengine.logging import print_log
from mmengine.registry import MODEL_WRAPPERS
from mmengine.utils.dl_utils import set_multi_processing
from torch.nn.parallel import DistributedDataParallel

__all__ = ['SYNC_BN_TYPES', 'GPU_ONLY_BACKENDS', 'prepare_cpu_launch', 'adapt_to_cpu',
           'replace_sync_bn', 'train_in_float32', 'use_gloo_backend', 'ddp_without_device_ids',
           'init_distributed_without_cuda', 'close_distributed']

SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN')
GPU_ONLY_BACKENDS = ('nccl',)


def prepare_cpu_launch(cfg: Config) -> list[str]:
    """Without CUDA: :func:`adapt_to_cpu`, then, for a distributed launch (``cfg.launcher`` not
    'none') whose process group is not up yet, :func:`init_distributed_without_cuda`. With CUDA:
    nothing. Returns the config changes."""
    if torch.cuda.is_available():
        return []
    changes = adapt_to_cpu(cfg)
    if cfg.get('launcher', 'none') != 'none' and not is_distributed():
        init_distributed_without_cuda(cfg)
    return changes


def use_gloo_backend(cfg: Config) -> list[str]:
    """Set ``env_cfg.dist_cfg.backend`` to ``gloo`` where it names a GPU-only backend (nccl).

    mmengine's default, when the config has no ``env_cfg``, is nccl too. Returns the changes.
    """
    if cfg.get('env_cfg') is None:
        cfg.env_cfg = dict()
    if cfg.env_cfg.get('dist_cfg') is None:
        cfg.env_cfg.dist_cfg = dict()
    backend = cfg.env_cfg.dist_cfg.get('backend', 'nccl')
    if backend not in GPU_ONLY_BACKENDS:
        return []
    cfg.env_cfg.dist_cfg.backend = 'gloo'
    return [f'env_cfg.dist_cfg.backend: {backend} -> gloo']


def ddp_without_device_ids(cfg: Config) -> list[str]:
    """Make the runner wrap the model in DDP with ``device_ids=None``, which CPU modules need.

    mmengine's ``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]`` (a CUDA device) to
    ``MMDistributedDataParallel``, and as a default argument to any DDP subclass named in
    ``model_wrapper_cfg``; a value in ``model_wrapper_cfg`` takes precedence over it. Without a
    ``model_wrapper_cfg``, the one written here is mmengine's default wrapper with
    ``device_ids=None``. Wrappers that are not DDP subclasses are left alone. Returns the changes.
    """
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        cfg.model_wrapper_cfg = ConfigDict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        return ['model_wrapper_cfg: MMDistributedDataParallel with device_ids=None']
    wrapper_type = wrapper.get('type', 'MMDistributedDataParallel')
    wrapper_class = MODEL_WRAPPERS.get(wrapper_type) if isinstance(wrapper_type, str) \
        else wrapper_type
    is_ddp = isinstance(wrapper_class, type) and issubclass(wrapper_class, DistributedDataParallel)
    if not is_ddp or ('device_ids' in wrapper and wrapper.device_ids is None):
        return []
    wrapper.device_ids = None
    return [f'model_wrapper_cfg ({wrapper_type}): device_ids=None']


def replace_sync_bn(cfg: Config) -> list[str]:
    """Replace SyncBN / MMSyncBN by BN in ``cfg.model`` and drop ``cfg.sync_bn``.

    SyncBN layers need CUDA to train in a distributed run. Returns the changes, each with the
    config path of the norm layer (e.g. ``model.decode_head.norm_cfg``).
    """
    changes = []

    def visit(node: object, path: str) -> None:
        if isinstance(node, dict):
            name = node.get('type')
            if isinstance(name, str) and name.rsplit('.', 1)[-1] in SYNC_BN_TYPES:
                node['type'] = 'BN'
                changes.append(f'{path}: {name} -> BN')
            for key, value in node.items():
                visit(value, f'{path}.{key}')
        elif isinstance(node, (list, tuple)):
            for index, value in enumerate(node):
                visit(value, f'{path}[{index}]')

    visit(cfg.get('model'), 'model')
    if cfg.get('sync_bn') is not None:
        changes.append(f'sync_bn: {cfg.sync_bn!r} -> None (no BN to SyncBN conversion)')
        cfg.sync_bn = None
    return changes


def train_in_float32(cfg: Config) -> list[str]:
    """Replace ``AmpOptimWrapper`` by ``OptimWrapper`` (float32, no loss scale).

    mmengine's ``AmpOptimWrapper`` (float16 autocast with a loss scaler) refuses to be built
    without CUDA (or an NPU, MLU or MUSA device). Returns the change.
    """
    wrapper = cfg.get('optim_wrapper')
    if not isinstance(wrapper, dict) or wrapper.get('type') != 'AmpOptimWrapper':
        return []
    wrapper.type = 'OptimWrapper'
    for key in ('loss_scale', 'dtype', 'use_fsdp'):
        wrapper.pop(key, None)
    return ['optim_wrapper: AmpOptimWrapper -> OptimWrapper (float32: mixed precision with a '
            'loss scaler needs CUDA)']


def adapt_to_cpu(cfg: Config) -> list[str]:
    """Rewrite ``cfg`` to run without CUDA and log each change; returns them.

    BN for SyncBN, float32 training for ``AmpOptimWrapper``; for a distributed launch
    (``cfg.launcher`` not 'none') also the gloo backend and DDP without device_ids.
    """
    changes = replace_sync_bn(cfg) + train_in_float32(cfg)
    if cfg.get('launcher', 'none') != 'none':
        changes += use_gloo_backend(cfg) + ddp_without_device_ids(cfg)
    for change in changes:
        print_log(f'no CUDA, config changed to run on CPU: {change}', logger='current',
                  level=logging.WARNING)
    return changes


def _skip_set_device(device: object) -> None:
    """Stands in for ``torch.cuda.set_device`` while there is no CUDA device to select."""


@contextlib.contextmanager
def _cuda_set_device_skipped() -> Iterator[None]:
    """``torch.cuda.set_device`` does nothing inside the block; restored on leaving it."""
    original = torch.cuda.set_device
    torch.cuda.set_device = _skip_set_device
    try:
        yield
    finally:
        torch.cuda.set_device = original


def init_distributed_without_cuda(cfg: Config) -> None:
    """Initialise the process group for ``cfg.launcher`` on a machine without CUDA.

    mmengine's launchers (``init_dist`` for pytorch, slurm and mpi) set the environment, then
    call ``torch.cuda.set_device(local_rank)``, which raises without a GPU, then
    ``init_process_group``. Here the same code runs with that one call skipped, after the
    multiprocessing set-up that the runner's ``setup_env`` does first; the runner then finds the
    group initialised and keeps it.
    """
    env_cfg = cfg.get('env_cfg') or {}
    set_multi_processing(**env_cfg.get('mp_cfg', {}), distributed=True)
    with _cuda_set_device_skipped():
        init_dist(cfg.launcher, **env_cfg.get('dist_cfg', {}))



def close_distributed() -> None:
    """Destroy and free the process group once the runner is released (mmengine leaves it open).

    Call it after the runner is gone (e.g. after the function holding it returned). Freeing the
    group (torch releases the GIL for that) stops its worker threads here rather than during
    interpreter shutdown, where a gloo worker still releasing the tensors of a finished
    collective needs the GIL and aborts the process ("terminate called without an active
    exception", seen after finished CPU runs).
    """
    if is_distributed():
        torch.distributed.destroy_process_group()
        gc.collect()
