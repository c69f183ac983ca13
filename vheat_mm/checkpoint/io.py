"""Reading checkpoint files safely: ``torch.load(weights_only=True)`` on the CPU, and one line
naming the file and why when it cannot be read."""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from typing import Mapping

import torch

from .download import cached_download, is_url
from .errors import CheckpointError

__all__ = ['read_checkpoint']


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint file (or http(s) URL, see
    :func:`~vheat_mm.checkpoint.download.cached_download`) on the CPU with
    ``torch.load(weights_only=True)``.

    Raises :class:`FileNotFoundError` or :class:`CheckpointError`, naming the path, for a
    missing, unreadable, truncated or unsafe file (one whose pickle asks for code to run).
    """
    path = cached_download(path) if is_url(path) else os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # unsafe pickle, truncated or corrupt file, permission...
        called = _unsafe_call(err)
        if called:
            raise CheckpointError(
                f'refusing to load {path}: its pickle asks for {called}, which weights_only '
                f'loading does not allow (loading it could run code); allowed are tensors, '
                f"containers, numbers, strings and mmengine's checkpoint types") from None
        raise CheckpointError(f'cannot read checkpoint {path}: {_damage(path, err)}; expected a '
                              f'complete file written by torch.save') from err
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f'{path} holds a {type(checkpoint).__name__}, not a dict of tensors')
    return dict(checkpoint)


_UNSAFE_CALL = re.compile(r'GLOBAL (\S+)|unrecognized function (\S+)|allowlisted.*?but got '
                          r'(\S+)|asks for (getattr\([^)]*\))')


def _unsafe_call(err: Exception) -> str | None:
    """The global a weights-only load refused, if that is why ``err`` was raised."""
    if not isinstance(err, pickle.UnpicklingError):
        return None
    match = _UNSAFE_CALL.search(str(err))
    return next((group for group in match.groups() if group), None) if match else None


def _damage(path: str, err: Exception) -> str:
    """One line on why ``torch.load`` failed on ``path``: empty, truncated, not torch's, corrupt."""
    if isinstance(err, OSError):
        return f'{type(err).__name__}: {err.strerror or err}'
    with open(path, 'rb') as file:
        head = file.read(4)
    if not head:
        return 'the file is empty'
    if head != b'PK\x03\x04':
        return (f'it is neither a zip archive (what torch.save writes) nor a readable legacy '
                f'torch file ({type(err).__name__}: random bytes, text or a damaged file?)')
    if not zipfile.is_zipfile(path):
        return 'the zip archive is truncated (an interrupted download or copy?)'
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if not any(name.endswith('/data.pkl') for name in names):
        shown = ', '.join(names[:5]) + (', ...' if len(names) > 5 else '')
        return f'a zip archive without data.pkl, not written by torch.save (it holds {shown})'
    reason = re.split(r'\.\s', (str(err).strip().splitlines() or [''])[0], maxsplit=1)[0]
    return f'the archive is corrupt ({type(err).__name__}: {reason[:200]})'
