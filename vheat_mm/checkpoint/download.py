"""Downloading checkpoints: once per URL into torch hub's cache, checked against their sha256."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.error
import urllib.parse

import torch

from .atomic import replaced_atomically
from .errors import CheckpointError

logger = logging.getLogger(__name__)

# The official ImageNet-1k releases (github MzeroMiko/vHeat), per arch.
PRETRAINED_URLS = {arch: f'https://github.com/MzeroMiko/vHeat/releases/download/vheatcls/'
                         f'vHeat_{arch}.pth' for arch in ('tiny', 'small', 'base')}


def is_url(path: str | os.PathLike) -> bool:
    return isinstance(path, str) and urllib.parse.urlparse(path).scheme in ('http', 'https')


# torch hub's convention: a file named NAME-<first hex digits of its sha256>.EXT
_HASH_IN_NAME = re.compile(r'-([a-f0-9]{8,64})\.')


def cached_download(url: str, model_dir: str | None = None, *, sha256: str | None = None) -> str:
    """The local path of ``url``'s file, downloaded on first use into ``model_dir``.

    ``model_dir`` defaults to ``<torch hub dir>/checkpoints``, where mmengine and torchvision
    keep downloaded weights. The download shows a progress bar and is checked against
    ``sha256`` (a prefix of the digest is enough) or, as torch hub does, against the hash
    prefix in the file's name (``NAME-<hex>.pth``); a mismatch is refused naming the URL and
    both hashes. The file is downloaded under a temporary name and renamed once checked
    (:func:`~vheat_mm.checkpoint.atomic.replaced_atomically`), so neither an interrupted nor a
    refused download leaves a file under the final name. In a distributed run, rank 0
    downloads while the other ranks wait at a barrier, then all read the one file (a rank that
    still finds no file, on a node of its own disk, downloads it itself).
    """
    model_dir = model_dir or os.path.join(torch.hub.get_dir(), 'checkpoints')
    filename = os.path.basename(urllib.parse.urlparse(url).path)
    if not filename:
        raise CheckpointError(f'cannot name a file after the URL {url}')
    cached = os.path.join(model_dir, filename)
    expected = sha256 or ((match := _HASH_IN_NAME.search(filename)) and match.group(1))
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1
    if not distributed:
        _download(url, cached, expected)
        return cached
    error = None
    if torch.distributed.get_rank() == 0:
        try:
            _download(url, cached, expected)
        except CheckpointError as err:
            error = err
    torch.distributed.barrier()
    if error is not None:
        raise error
    _download(url, cached, expected)  # nothing to do where rank 0's file is visible
    return cached


def _download(url: str, cached: str, expected: str | None) -> None:
    if os.path.isfile(cached):
        return
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    logger.info('downloading %s to %s', url, cached)
    try:
        with replaced_atomically(cached) as tmp:
            torch.hub.download_url_to_file(url, tmp, progress=True)
            digest = _sha256(tmp)
            if expected and not digest.startswith(expected):
                raise CheckpointError(f'{url}: the downloaded file\'s sha256 is {digest}, not the '
                                      f'expected {expected}...; it was not kept')
    except (urllib.error.URLError, OSError) as err:
        raise CheckpointError(f'cannot download {url}: {err}') from err


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        for block in iter(lambda: file.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()
