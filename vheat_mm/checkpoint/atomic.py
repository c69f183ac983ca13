"""Writing files atomically: a reader finds the previous file or the complete new one.

A temporary file of :func:`replaced_atomically` is named after its writer:
``.NAME.HOST.PID.HEX.tmp`` (HOST with any character but letters, digits and ``-`` written as
``_xx``, its UTF-8 bytes in hex). Work directories are often shared by several nodes, so a file
left by a killed writer (:func:`leftover_temporaries`) is told from one being written only where
the writer's host is this one: its pid is no longer alive. Files named ``.NAME.HEX32.tmp``, as
earlier versions wrote them, say nothing of their writer.
"""
from __future__ import annotations

import contextlib
import os
import re
import uuid
from dataclasses import dataclass
from typing import Iterator, Mapping

import torch

from ..liveness import pid_alive, this_host

__all__ = ['TemporaryFile', 'leftover_temporaries', 'replaced_atomically', 'temporary_files',
           'write_checkpoint']

_TEMPORARY = re.compile(r'^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>[0-9]{1,10})\.'
                        r'[0-9a-f]{16}\.tmp$')
_OLD_TEMPORARY = re.compile(r'^\.(?P<name>.+)\.[0-9a-f]{32}\.tmp$')  # no writer in the name
_HOST_KEPT = re.compile(rb'[A-Za-z0-9-]')


def _encode_host(host: str) -> str:
    return ''.join(chr(byte) if _HOST_KEPT.fullmatch(bytes([byte])) else f'_{byte:02x}'
                   for byte in host.encode())


def _decode_host(encoded: str) -> str:
    return re.sub(r'_([0-9a-f]{2})', lambda m: chr(int(m.group(1), 16)), encoded).encode(
        'latin-1').decode(errors='replace')


@contextlib.contextmanager
def replaced_atomically(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path beside ``path`` to write a file to; after the block the file is fsynced
    and renamed over ``path``.

    The rename is atomic, so ``path`` holds its previous content or the complete new file, even
    if the process is killed (a kill leaves only the temporary file, named after this process:
    see :func:`leftover_temporaries`). If the block raises, the temporary file is removed. The
    directory must exist.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f'the directory of {path} does not exist')
    tmp = os.path.join(directory, f'.{os.path.basename(path)}.{_encode_host(this_host())}.'
                                  f'{os.getpid()}.{uuid.uuid4().hex[:16]}.tmp')
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


@dataclass(frozen=True)
class TemporaryFile:
    """A temporary file of :func:`replaced_atomically` and the writer its name gives (host and
    pid are None in the earlier name format)."""
    path: str
    host: str | None
    pid: int | None

    def kept_because(self, started: float | None) -> str | None:
        """Why the file may still be written to, or None where its writer is gone (or the file
        is).

        A writer is gone when it ran on this host under a pid that is no longer alive (this
        process's own pid counts as gone: it was reused after a restart). A file in the earlier
        name format counts as left by a dead writer when it was last modified before
        ``started`` (a ``time.time()``; None: never).
        """
        if self.pid is None:
            try:
                modified = os.path.getmtime(self.path)
            except FileNotFoundError:  # renamed into place or removed meanwhile
                return None
            if started is None:
                return 'its name does not say which process writes it'
            if modified < started:
                return None
            return ('its name does not say which process writes it, and it was modified after '
                    'this run started')
        if self.host != this_host():
            return f'its writer, pid {self.pid} on host {self.host}, cannot be checked from here'
        if self.pid != os.getpid() and pid_alive(self.pid):
            return f'its writer, pid {self.pid} on this host, is alive'
        return None


def temporary_files(directory: str | os.PathLike) -> list[TemporaryFile]:
    """Every temporary file of :func:`replaced_atomically` in ``directory``, by name."""
    found = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if match := _TEMPORARY.match(name):
            found.append(TemporaryFile(path, _decode_host(match['host']), int(match['pid'])))
        elif _OLD_TEMPORARY.match(name):
            found.append(TemporaryFile(path, None, None))
    return found


def leftover_temporaries(directory: str | os.PathLike, *,
                         started: float | None = None) -> list[str]:
    """The temporary files of :func:`replaced_atomically` in ``directory`` whose writer is gone
    (killed while writing), see :meth:`TemporaryFile.kept_because`."""
    return [file.path for file in temporary_files(directory) if file.kept_because(started) is None]


def write_checkpoint(checkpoint: Mapping, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` through :func:`replaced_atomically`.

    ``path`` never holds a partial file; on failure the temporary file is removed. The directory
    must exist. The file gets the usual permissions (umask applies).
    """
    with replaced_atomically(path) as tmp, open(tmp, 'xb') as file:
        torch.save(checkpoint, file)
