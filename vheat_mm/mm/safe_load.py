"""Let ``torch.load(weights_only=True)`` read mmengine's own checkpoints, type by type.

torch >= 2.6 loads with ``weights_only=True`` by default and refuses any pickled global that is
not allowlisted. Checkpoints written by mmengine's runner hold, besides tensors, its
``HistoryBuffer`` (the message hub's logged scalars) and numpy arrays and scalars. Those types
(and no others) are added to torch's allowlist, so resuming and ``init_cfg`` loading work while
the safety stays on: a checkpoint holding anything else is still refused.

A HistoryBuffer pickles its statistics methods as ``getattr(HistoryBuffer, 'mean')``. Rather
than allowing ``builtins.getattr`` itself, the allowlist maps that global to
:func:`history_buffer_method`, which resolves only public methods of HistoryBuffer and refuses
any other attribute with :class:`~vheat_mm.checkpoint.RefusedCall` naming the call.

Registering vheat_mm into mmengine (:mod:`vheat_mm.mm`) also routes mmengine's own checkpoint
reading (``--resume``, ``load_from``, ``init_cfg``, the inferencers' weights, also in the
toolboxes' own tools) through :func:`vheat_mm.checkpoint.read_checkpoint`, for every address
mmengine 0.10 knows
(:data:`ROUTED`): a local path, ``http(s)://``, the names of its tables (``torchvision://``,
``modelzoo://``, ``open-mmlab://``, ``openmmlab://``, ``mmcls://``; a name's file is read
from torch hub's cache where it is there, as mmengine finds it), ``pavi://`` and ``s3://``
(``petrel://``; both read through their storage package into a temporary file). A prefix
that another package registers later, or a routed one that it registers again, is refused in
one line: :func:`use_weights_only_loading`.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import urllib.parse
from typing import Callable, Mapping

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log

from ..checkpoint import CheckpointError, RefusedCall, cached_download, is_url, read_checkpoint
from ..checkpoint.messages import shown
from .state_dict_loading import remember_source, runner_layout

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar

_NUMPY_SCALAR_TYPES = (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
                       np.uint8, np.bool_)


def history_buffer_method(owner: type, name: str):
    """``getattr`` as mmengine checkpoints use it, and nothing more: a public HistoryBuffer method."""
    if owner is HistoryBuffer and not name.startswith('_') and callable(
            HistoryBuffer.__dict__.get(name)):
        return getattr(HistoryBuffer, name)
    raise RefusedCall(f'getattr({shown(getattr(owner, "__name__", owner))}, {shown(name)})',
                      'only public HistoryBuffer methods are allowed')


def mmengine_checkpoint_types() -> list:
    """The globals that mmengine's checkpoints pickle, beside what torch allows already."""
    dtype_classes = [type(np.dtype(t)) for t in _NUMPY_SCALAR_TYPES]
    return [HistoryBuffer, np.ndarray, np.dtype, _reconstruct, scalar, *dtype_classes,
            (history_buffer_method, 'builtins.getattr')]


def allow_mmengine_checkpoints() -> None:
    torch.serialization.add_safe_globals(mmengine_checkpoint_types())


def load_from_weights_only(filename: str, map_location: object = None) -> Mapping:
    """mmengine ``CheckpointLoader`` scheme for local files and http(s) URLs.

    Reads with :func:`vheat_mm.checkpoint.read_checkpoint` (``weights_only=True``, on the CPU;
    the runner moves the values to the model's device). An unsafe pickle, a truncated or a
    missing file raise :class:`~vheat_mm.checkpoint.CheckpointError` naming the file. An
    official vHeat (or DeepSpeed) checkpoint is given as ``{'state_dict': ...}``, and the file is
    noted as the source of its state dicts (:func:`~.state_dict_loading.runner_layout`).
    ``map_location`` is accepted for the scheme's signature and not used (by every loader here).
    """
    return _read(filename if is_url(filename) else os.path.expanduser(filename))


def load_from_torchvision(filename: str, map_location: object = None) -> Mapping:
    """``torchvision://NAME`` (and the older ``modelzoo://NAME``): the file of NAME in
    mmengine's table of torchvision weights."""
    from mmengine.runner.checkpoint import get_torchvision_models

    prefix, name = _split(filename)
    if prefix == 'modelzoo://':
        print_log('The URL scheme of "modelzoo://" is deprecated, please use "torchvision://" '
                  'instead', logger='current', level=logging.WARNING)
    return _read_url(_look_up(get_torchvision_models(), name, filename), filename)


def load_from_openmmlab(filename: str, map_location: object = None) -> Mapping:
    """``open-mmlab://NAME`` and ``openmmlab://NAME``: the URL, or the file under mmengine's
    home, of NAME (or of the name it is deprecated for) in mmengine's OpenMMLab table."""
    from mmengine.runner.checkpoint import (_get_mmengine_home, get_deprecated_model_names,
                                            get_external_models)

    prefix, name = _split(filename)
    deprecated = get_deprecated_model_names()
    if name in deprecated:
        print_log(f'{prefix}{name} is deprecated in favor of {prefix}{deprecated[name]}',
                  logger='current', level=logging.WARNING)
        name = deprecated[name]
    target = _look_up(get_external_models(), name, filename)
    if target.startswith(('http://', 'https://')):
        return _read_url(target, filename)
    path = os.path.join(_get_mmengine_home(), target)
    return _read(path, f'{path} ({filename})')


def load_from_mmcls(filename: str, map_location: object = None) -> Mapping:
    """``mmcls://NAME``: the file of NAME in mmengine's mmcls table; its ``backbone.`` keys,
    without the prefix, as mmengine gives them."""
    from mmengine.runner.checkpoint import _process_mmcls_checkpoint, get_mmcls_models

    _, name = _split(filename)
    url = _look_up(get_mmcls_models(), name, filename)
    checkpoint = _process_mmcls_checkpoint(_read_url(url, filename))
    remember_source(checkpoint, f'{url} ({filename})')
    return checkpoint


def load_from_pavi(filename: str, map_location: object = None) -> Mapping:
    """``pavi://PATH``: the model cloud's file, downloaded into a temporary folder by the
    ``pavi`` package."""
    try:
        from pavi import modelcloud
    except ImportError:
        raise CheckpointError(f'cannot load {shown(filename)}: pavi:// checkpoints are read '
                              f'through the pavi package, which is not installed') from None
    model = modelcloud.get(filename[len('pavi://'):])
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, os.path.basename(str(model.name)) or 'checkpoint.pth')
        model.download(path)
        return _read(path, filename)


def load_from_ceph(filename: str, map_location: object = None,
                   backend: str = 'petrel') -> Mapping:
    """``s3://`` and ``petrel://`` paths (``PREFIX:s3://`` too): the bytes mmengine's storage
    ``backend`` reads, written into a temporary file."""
    from mmengine.fileio import get_file_backend

    try:
        storage = get_file_backend(filename, backend_args={'backend': backend})
    except ImportError as err:
        raise CheckpointError(f'cannot load {shown(filename)}: its storage backend {backend!r} '
                              f'needs a package that is not installed ({err})') from None
    data = storage.get(filename)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'checkpoint.pth')
        with open(path, 'wb') as file:
            file.write(data)
        del data
        return _read(path, filename)


# mmengine 0.10's checkpoint prefixes -> the loader here that reads them.
ROUTED: dict[tuple[str, ...], Callable] = {
    ('', 'http://', 'https://'): load_from_weights_only,
    ('modelzoo://', 'torchvision://'): load_from_torchvision,
    ('open-mmlab://', 'openmmlab://'): load_from_openmmlab,
    ('mmcls://',): load_from_mmcls,
    ('pavi://',): load_from_pavi,
    (r'(\S+\:)?s3://', r'(\S+\:)?petrel://'): load_from_ceph,
}


def _read(path: str, name: str | None = None) -> Mapping:
    """``path`` read by the safe reader, as mmengine takes it; messages call it ``name``."""
    try:
        checkpoint = read_checkpoint(path, name=name)
    except FileNotFoundError as err:
        raise CheckpointError(str(err)) from None
    return runner_layout(checkpoint, name or path)


def _read_url(url: str, address: str) -> Mapping:
    """The file of ``url`` that ``address`` names: torch hub's cached copy, under the URL's
    file name, where mmengine would find it; else the project's download of ``url``."""
    cached = os.path.join(torch.hub.get_dir(), 'checkpoints',
                          os.path.basename(urllib.parse.urlparse(url).path))
    path = cached if os.path.isfile(cached) else cached_download(url)
    return _read(path, f'{path} ({address})')


def _split(filename: str) -> tuple[str, str]:
    """``('torchvision://', 'resnet50')`` for ``'torchvision://resnet50'``."""
    prefix, _, name = filename.partition('://')
    return prefix + '://', name


def _look_up(table: Mapping, name: str, filename: str) -> str:
    if name not in table:
        raise CheckpointError(f'unknown checkpoint address {shown(filename)}: mmengine\'s table '
                              f'for {_split(filename)[0]} has no {shown(name)}')
    return table[name]


_LOADERS = frozenset(ROUTED.values())
_MMENGINE_GET_LOADER = None


def _routed_loader(cls, path: str) -> Callable:
    """``CheckpointLoader._get_checkpoint_loader`` that gives only the loaders here."""
    loader = _MMENGINE_GET_LOADER.__func__(cls, path)
    if loader in _LOADERS:
        return loader
    prefix = next((p for p in cls._schemes if re.match(p, path) is not None), None)
    where = f'{getattr(loader, "__module__", "?")}.{getattr(loader, "__qualname__", loader)}'
    raise CheckpointError(
        f'refusing to load {shown(path)}: mmengine reads its prefix {shown(prefix)} with '
        f'{shown(where)}, which does not read through vheat_mm\'s weights_only reader (loading '
        f'could run code); vheat_mm reads local paths and the prefixes '
        f'{", ".join(p for prefixes in ROUTED for p in prefixes if p)}')


def use_weights_only_loading() -> None:
    """Make mmengine read every checkpoint address through :func:`read_checkpoint`.

    mmengine 0.10 reads local files with ``torch.load`` and torch's default ``weights_only``
    (True in torch >= 2.6, unless ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set), and URLs, also
    those its tables give for ``torchvision://`` and the like, with
    ``torch.hub.load_state_dict_from_url``, whose default is ``weights_only=False``. Each of
    its prefixes gets a loader of :data:`ROUTED`, and its loader look-up refuses any other
    loader, that of a prefix registered later or of a routed prefix registered again.
    """
    global _MMENGINE_GET_LOADER
    from mmengine.runner.checkpoint import CheckpointLoader

    for prefixes, loader in ROUTED.items():
        CheckpointLoader.register_scheme(prefixes=prefixes, loader=loader, force=True)
    if _MMENGINE_GET_LOADER is None:
        _MMENGINE_GET_LOADER = CheckpointLoader.__dict__['_get_checkpoint_loader']
        CheckpointLoader._get_checkpoint_loader = classmethod(_routed_loader)
