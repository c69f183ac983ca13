"""Writing files atomically: a reader finds the previous file or the complete new one."""
from __future__ import annotations

import contextlib
import os
import re
import uuid
from typing import Iterator, Mapping

import torch

_TEMPORARY = re.compile(r'^\..+\.[0-9a-f]{32}\.tmp$')  # what replaced_atomically names


@contextlib.contextmanager
def replaced_atomically(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path beside ``path`` to write a file to; after the block the file is fsynced
    and renamed over ``path``.

    The rename is atomic, so ``path`` holds its previous content or the complete new file, even
    if the process is killed (a kill leaves only the temporary file, see
    :func:`leftover_temporaries`). If the block raises, the temporary file is removed. The
    directory must exist.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f'the directory of {path} does not exist')
    tmp = os.path.join(directory, f'.{os.path.basename(path)}.{uuid.uuid4().hex}.tmp')
    try:
        yield tmp
        descriptor = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    if os.name == 'posix':  # make the rename itself durable
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def leftover_temporaries(directory: str | os.PathLike) -> list[str]:
    """Temporary files of :func:`replaced_atomically` in ``directory`` (left by killed writers)."""
    return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                  if _TEMPORARY.match(name))


def write_checkpoint(checkpoint: Mapping, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` through :func:`replaced_atomically`.

    ``path`` never holds a partial file; on failure the temporary file is removed. The directory
    must exist. The file gets the usual permissions (umask applies).
    """
    with replaced_atomically(path) as tmp, open(tmp, 'xb') as file:
        torch.save(checkpoint, file)
