"""Every checkpoint address mmengine knows, read by vheat_mm's safe reader.

:func:`read_address` is what :class:`~.runner.VHeatRunner` reads ``load_from``, ``--resume``
and ``tools/test.py CKPT`` with: a local path, ``http(s)://``, the names of mmengine's tables
(``torchvision://``, ``modelzoo://``, ``open-mmlab://``, ``openmmlab://``, ``mmcls://``; a
name's file is read from torch hub's cache where it is there, as mmengine finds it),
``pavi://`` and ``s3://`` (``petrel://``; both read through their storage package into a
temporary file). :data:`ROUTED` maps mmengine 0.10's prefixes to the loaders here; each reads
with :func:`vheat_mm.checkpoint.read_checkpoint` (no code runs, ``map_location`` honoured) and
gives the checkpoint in mmengine's layout (:func:`~.state_dict_loading.runner_layout`). A
prefix that is not in the table (one another package registers with mmengine) is refused in
one line. mmengine's own ``CheckpointLoader`` is left as it is.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import urllib.parse
from typing import Callable, Mapping

import torch
from mmengine.logging import print_log

from ..checkpoint import CheckpointError, cached_download, is_url, read_checkpoint
from ..checkpoint.messages import shown
from .state_dict_loading import runner_layout

__all__ = ['ROUTED', 'read_address']

MapLocation = object  # what torch.load takes: None, a device or its name, a dict or a callable


def load_local_or_http(filename: str, map_location: MapLocation = 'cpu') -> Mapping:
    """A local path (``~`` expanded) or an http(s) URL (downloaded once, see
    :func:`~vheat_mm.checkpoint.cached_download`)."""
    return _read(filename if is_url(filename) else os.path.expanduser(filename),
                 map_location=map_location)


def load_from_torchvision(filename: str, map_location: MapLocation = 'cpu') -> Mapping:
    """``torchvision://NAME`` (and the older ``modelzoo://NAME``): the file of NAME in
    mmengine's table of torchvision weights."""
    from mmengine.runner.checkpoint import get_torchvision_models

    prefix, name = _split(filename)
    if prefix == 'modelzoo://':
        print_log('The URL scheme of "modelzoo://" is deprecated, please use "torchvision://" '
                  'instead', logger='current', level=logging.WARNING)
    return _read_url(_look_up(get_torchvision_models(), name, filename), filename, map_location)


def load_from_openmmlab(filename: str, map_location: MapLocation = 'cpu') -> Mapping:
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
        return _read_url(target, filename, map_location)
    path = os.path.join(_get_mmengine_home(), target)
    return _read(path, f'{path} ({filename})', map_location)


def load_from_mmcls(filename: str, map_location: MapLocation = 'cpu') -> Mapping:
    """``mmcls://NAME``: the file of NAME in mmengine's mmcls table; its ``backbone.`` keys,
    without the prefix, as mmengine gives them."""
    from mmengine.runner.checkpoint import _process_mmcls_checkpoint, get_mmcls_models

    _, name = _split(filename)
    url = _look_up(get_mmcls_models(), name, filename)
    return _process_mmcls_checkpoint(_read_url(url, filename, map_location))


def load_from_pavi(filename: str, map_location: MapLocation = 'cpu') -> Mapping:
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
        return _read(path, filename, map_location)


def load_from_ceph(filename: str, map_location: MapLocation = 'cpu',
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
        return _read(path, filename, map_location)


# mmengine 0.10's checkpoint prefixes (regular expressions, matched at the start of an address
# as mmengine matches them) -> the loader here that reads them.
ROUTED: dict[tuple[str, ...], Callable[[str, MapLocation], Mapping]] = {
    ('', 'http://', 'https://'): load_local_or_http,
    ('modelzoo://', 'torchvision://'): load_from_torchvision,
    ('open-mmlab://', 'openmmlab://'): load_from_openmmlab,
    ('mmcls://',): load_from_mmcls,
    ('pavi://',): load_from_pavi,
    (r'(\S+\:)?s3://', r'(\S+\:)?petrel://'): load_from_ceph,
}
# longest first, as mmengine orders its schemes
_PREFIXES = sorted(((p, loader) for ps, loader in ROUTED.items() for p in ps),
                   key=lambda item: len(item[0]), reverse=True)


def read_address(filename: str, map_location: MapLocation = 'cpu') -> Mapping:
    """The checkpoint at ``filename``, any address of :data:`ROUTED`, in mmengine's layout.

    Raises :class:`~vheat_mm.checkpoint.CheckpointError` naming the address for a missing,
    damaged or unsafe file, and for an address whose prefix is not in :data:`ROUTED`.
    """
    filename = str(filename)
    prefix, loader = next((p, loader) for p, loader in _PREFIXES if re.match(p, filename))
    if not prefix and re.match(r'[A-Za-z][\w+.-]*://', filename):
        raise CheckpointError(
            f'cannot load {shown(filename)}: vheat_mm reads local paths and the prefixes '
            f'{", ".join(p for p, _ in _PREFIXES if p)}, not {shown(_split(filename)[0])} (a '
            f'prefix registered with mmengine by another package is read by mmengine\'s own '
            f'loader, which vheat_mm cannot vouch for)')
    return loader(filename, map_location)


def _read(path: str, name: str | None = None, map_location: MapLocation = 'cpu') -> Mapping:
    """``path`` read by the safe reader, as mmengine takes it; messages call it ``name``."""
    try:
        checkpoint = read_checkpoint(path, name=name, map_location=map_location)
    except FileNotFoundError as err:
        raise CheckpointError(str(err)) from None
    return runner_layout(checkpoint)


def _read_url(url: str, address: str, map_location: MapLocation) -> Mapping:
    """The file of ``url`` that ``address`` names: torch hub's cached copy, under the URL's
    file name, where mmengine would find it; else the project's download of ``url``."""
    cached = os.path.join(torch.hub.get_dir(), 'checkpoints',
                          os.path.basename(urllib.parse.urlparse(url).path))
    path = cached if os.path.isfile(cached) else cached_download(url)
    return _read(path, f'{path} ({address})', map_location)


def _split(filename: str) -> tuple[str, str]:
    """``('torchvision://', 'resnet50')`` for ``'torchvision://resnet50'``."""
    prefix, _, name = filename.partition('://')
    return prefix + '://', name


def _look_up(table: Mapping, name: str, filename: str) -> str:
    if name not in table:
        raise CheckpointError(f'unknown checkpoint address {shown(filename)}: mmengine\'s table '
                              f'for {_split(filename)[0]} has no {shown(name)}')
    return table[name]
