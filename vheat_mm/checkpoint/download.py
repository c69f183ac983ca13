"""Downloading checkpoints: once per URL into torch hub's cache, checked on every use."""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, NamedTuple

import torch

from ..variants import RELEASES, pretrained_urls
from .atomic import replaced_atomically, temporary_files
from .errors import CheckpointError
from .messages import cut, shown, shown_path

logger = logging.getLogger(__name__)

# The official ImageNet-1k releases (github MzeroMiko/vHeat), per arch, from their records.
PRETRAINED_URLS = pretrained_urls()
# The sha256 of each released file whose record states one: what its download must match.
RELEASE_SHA256 = {release.url: release.sha256 for release in RELEASES
                  if release.url is not None and release.sha256 is not None}


def is_url(path: str | os.PathLike) -> bool:
    return isinstance(path, str) and urllib.parse.urlparse(path).scheme in ('http', 'https')


# torch hub's convention: a file named NAME-<first hex digits of its sha256>.EXT
_HASH_IN_NAME = re.compile(r'-([a-f0-9]{8,64})\.')
_STAT = ('size', 'mtime_ns', 'ctime_ns', 'ino')  # recorded with the digest
# File times may be this coarse: a record written sooner after the file's last change could
# miss a change made in the same tick, so the file is rehashed.
_COARSE_NS = 2_000_000_000
_TIMEOUT_S = 60  # how long a stalled connection may stay silent
_BLOCK = 1 << 20

#: Variables that set a download's bounds (:func:`download_bounds`), and their defaults: the
#: most seconds a download may take in all (by default 60 s, plus 180 s per 100 MB expected),
#: and the most bytes of a body whose server sends no Content-Length.
DEADLINE_VARIABLE = 'VHEAT_MM_DOWNLOAD_DEADLINE_S'
MAX_BYTES_VARIABLE = 'VHEAT_MM_DOWNLOAD_MAX_BYTES'
_DEADLINE_BASE_S, _DEADLINE_PER_100MB_S = 60, 180
DEFAULT_MAX_BYTES = 4 * 2**30


def shown_url(url: str) -> str:
    """``url`` as messages, log lines and records show it: without its user information, query
    and fragment (where tokens and passwords travel), escaped and cut."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ''
    if parts.port is not None:
        host = f'{host}:{parts.port}'
    hidden = ' (query not shown)' if parts.query else ''
    return shown_path(urllib.parse.urlunsplit((parts.scheme, host, parts.path, '', ''))) + hidden


def positive_setting(variable: str, default: float, parse: Callable[[str], float] = float,
                     unit: str = '') -> float:
    """The value of the environment variable ``variable`` read by ``parse`` (``float`` or
    ``int``), or ``default`` where it is not set; a one-line ValueError naming it where it is not
    a finite positive number (``unit`` follows "number" in that message)."""
    text = os.environ.get(variable)
    if text is None:
        return default
    try:
        value = parse(text)
    except ValueError:
        value = -1
    if not 0 < value < float('inf'):
        raise ValueError(f'{variable} must be a positive number{unit}, got {shown(text)}')
    return value


def download_bounds(content_length: int | None) -> tuple[float, int]:
    """The deadline in seconds and the most bytes of a download whose server announces
    ``content_length`` bytes (None: no Content-Length): :data:`DEADLINE_VARIABLE` and
    :data:`MAX_BYTES_VARIABLE` where they are set. A body is never read beyond its
    Content-Length."""
    max_bytes = int(positive_setting(MAX_BYTES_VARIABLE, DEFAULT_MAX_BYTES))
    expected = content_length if content_length is not None else max_bytes
    deadline = positive_setting(
        DEADLINE_VARIABLE, _DEADLINE_BASE_S + _DEADLINE_PER_100MB_S * expected / 100e6)
    return deadline, max_bytes if content_length is None else content_length


def cached_download(url: str, model_dir: str | None = None, *, sha256: str | None = None) -> str:
    """The local path of ``url``'s file, downloaded on first use into ``model_dir`` (default
    ``<torch hub dir>/checkpoints``, where mmengine and torchvision keep downloaded weights).

    The cache name is the URL's file name with 16 hex digits of the sha256 of the whole URL
    (``best.<digest>.pth``), so two URLs never share a file. The official releases
    (:data:`PRETRAINED_URLS`) and files named after their own sha256 (``NAME-<hex>.pth``, torch
    hub's convention, as torchvision's weights are: a file of another content fails that check)
    keep their bare name, as mmengine, timm and torch hub name them: a copy those tools
    downloaded is used if it reads as a checkpoint, they find ours, and from then on the record
    (below) guards it.

    A download goes to a temporary name and is renamed into place only once it is as long as
    its Content-Length, matches the expected sha256 and reads as a checkpoint
    (:func:`~vheat_mm.checkpoint.io.read_checkpoint`): a cut transfer or an HTML page leaves
    nothing, and the next run downloads again. Its sha256 is then recorded beside it in
    ``FILE.sha256`` (``sha256sum``'s format, plus the file's size, mtime, ctime and inode).

    On every use the file is checked against its record and against the expected sha256:
    ``sha256`` (a prefix is enough), the hash prefix in the URL's file name (``NAME-<hex>.pth``,
    torch hub's convention) or an official release's sha256 (:data:`RELEASE_SHA256`, from the
    records of :mod:`vheat_mm.variants`, where they state one). It is rehashed unless its size,
    mtime, ctime and inode are those recorded and its times are at least 2 s older than the
    record (file times may be coarse; any write or ``os.utime`` sets ctime). A changed file is
    refused naming it and both digests; once it is deleted it is downloaded again, and without
    an expected sha256 that download must match the record (delete the record to accept a file
    the server changed). A cached file without a record (an earlier version's, another tool's)
    is used and recorded if it reads as a checkpoint and matches the expected sha256, and is
    downloaded again if not.

    In a distributed run, rank 0 downloads while the other ranks wait at a barrier, then all
    read the one file (a rank that still finds no file, on a node of its own disk, downloads it
    itself).
    """
    model_dir = model_dir or os.path.join(torch.hub.get_dir(), 'checkpoints')
    filename = os.path.basename(urllib.parse.urlparse(url).path)
    if not filename:
        raise CheckpointError(f'cannot name a file after the URL {shown_url(url)}')
    in_name = _HASH_IN_NAME.search(filename)
    if url not in PRETRAINED_URLS.values() and in_name is None:
        stem, ext = os.path.splitext(filename)
        filename = f'{stem}.{hashlib.sha256(url.encode()).hexdigest()[:16]}{ext}'
    cached = os.path.join(model_dir, filename)
    expected = sha256.lower() if sha256 else (
        (in_name and in_name.group(1)) or RELEASE_SHA256.get(url))
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1
    if not distributed:
        _fetch(url, cached, expected)
        return cached
    error = None
    if torch.distributed.get_rank() == 0:
        try:
            _fetch(url, cached, expected)
        except CheckpointError as err:
            error = err
    torch.distributed.barrier()
    if error is not None:
        raise error
    _fetch(url, cached, expected)  # only checks the file where rank 0's is visible
    return cached


class _Record(NamedTuple):
    """What ``FILE.sha256`` says: the digest, the file's stat when hashed (None if not
    written), and when the record itself was written."""
    sha256: str
    stat: tuple[int, ...] | None
    written_ns: int


def _fetch(url: str, cached: str, expected: str | None) -> None:
    record = _read_record(cached)
    if os.path.isfile(cached) and _check_cached(url, cached, expected, record):
        return
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    _download(url, cached, expected, None if expected or record is None else record.sha256)


def _check_cached(url: str, cached: str, expected: str | None, record: _Record | None) -> bool:
    """Whether ``cached`` may be used (False: an unrecorded file to download again); raises for
    a file that differs from its record or from ``expected``."""
    stat = None
    if record is not None and record.stat is not None and record.stat == _stat(os.stat(cached)) \
            and record.written_ns - max(record.stat[1:3]) >= _COARSE_NS:
        digest = record.sha256
    else:
        digest, stat = _hash_file(cached)
    if record is None:
        problem = (f'its sha256 is {digest}, not the expected {expected}...'
                   if expected and not digest.startswith(expected) else _read_error(cached))
        if problem:
            logger.warning('%s: %s; downloading %s again', shown_path(cached), problem,
                           shown_url(url))
            return False
    elif digest != record.sha256:
        raise CheckpointError(f'{cached} was changed after it was downloaded from '
                              f'{shown_url(url)}: its sha256 is {digest}, not the '
                              f'{record.sha256} recorded in '
                              f'{cached}.sha256; delete {cached} to download it again')
    elif expected and not digest.startswith(expected):
        raise CheckpointError(f'{cached} (downloaded from {shown_url(url)}) has sha256 {digest}, '
                              f'not the expected {expected}...; delete {cached} to download it '
                              f'again')
    if stat is not None:
        _write_record(cached, digest, stat, url)
    return True


def _download(url: str, cached: str, expected: str | None, recorded: str | None) -> None:
    _remove_leftovers(cached)
    logger.info('downloading %s to %s', shown_url(url), shown_path(cached))
    try:
        with replaced_atomically(cached) as tmp:
            digest, content_type = _transfer(url, tmp)
            if expected and not digest.startswith(expected):
                raise CheckpointError(f'{shown_url(url)}: the downloaded file\'s sha256 is '
                                      f'{digest}, not the expected {expected}...; it was not kept')
            if recorded and digest != recorded:
                raise CheckpointError(
                    f'{shown_url(url)}: the server now sends a file with sha256 {digest}, not the '
                    f'{recorded} recorded in {cached}.sha256 when it was first downloaded; it was '
                    f'not kept (delete that record to accept the new file)')
            problem = _read_error(tmp)
            if problem:
                sent = f' (the server sent {content_type})' if content_type.startswith('text/') \
                    else ''
                raise CheckpointError(f'{problem.replace(tmp, shown_url(url))}{sent}; it was not '
                                      f'kept')
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise CheckpointError(f'cannot download {shown_url(url)}: {cut(str(err))}') from err
    _write_record(cached, digest, _stat(os.stat(cached)), url)


def _remove_leftovers(cached: str) -> None:
    """Remove the temporary files of earlier downloads of ``cached`` whose process is gone
    (killed, by SIGTERM or SIGKILL, while downloading); those of other processes alive, or of
    this one (another thread may be downloading), are left."""
    directory = os.path.dirname(cached) or '.'
    prefix = f'.{os.path.basename(cached)}.'
    for file in temporary_files(directory):
        if os.path.basename(file.path).startswith(prefix) and file.pid not in (None, os.getpid()) \
                and file.kept_because(None) is None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(file.path)
                logger.info('removed %s, left by an interrupted download', shown_path(file.path))


def _transfer(url: str, path: str) -> tuple[str, str]:
    """Write ``url``'s body to the new file ``path``; its sha256 and Content-Type. Raises for a
    body shorter than its Content-Length (http.client just stops reading), one longer than it
    or than :data:`MAX_BYTES_VARIABLE` where there is none, and a transfer that passes its
    deadline (:func:`download_bounds`); each read waits at most :data:`_TIMEOUT_S` seconds."""
    request = urllib.request.Request(url, headers={'User-Agent': 'vheat_mm'})
    digest, received, start = hashlib.sha256(), 0, time.monotonic()
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response, \
            open(path, 'xb') as file, _progress_bar(response.headers) as bar:
        length = response.headers.get('Content-Length', '')
        content_type = response.headers.get('Content-Type', '')
        deadline, max_bytes = download_bounds(int(length) if length.isdigit() else None)
        while True:
            block = response.read1(_BLOCK)  # what one read of the socket gives, not a full block
            if not block:
                break
            received += len(block)
            if received > max_bytes:
                bound = (f'its Content-Length, {length} bytes' if length.isdigit() else
                         f'{max_bytes} bytes, the most read without a Content-Length (set '
                         f'{MAX_BYTES_VARIABLE} to read more)')
                raise CheckpointError(f'{shown_url(url)}: the server sent more than {bound}; '
                                      f'the partial file was not kept')
            file.write(block)
            digest.update(block)
            if bar is not None:
                bar.update(len(block))
            if time.monotonic() - start > deadline:
                raise CheckpointError(
                    f'{shown_url(url)}: the download passed its deadline of {deadline:.0f} s '
                    f'after {received} bytes (set {DEADLINE_VARIABLE} to allow more); the '
                    f'partial file was not kept')
    if length.isdigit() and received != int(length):
        raise CheckpointError(f'{shown_url(url)}: the transfer stopped after {received} of its '
                              f'{length} bytes (Content-Length); the partial file was not kept')
    return digest.hexdigest(), content_type


def _progress_bar(headers) -> contextlib.AbstractContextManager:
    try:
        from tqdm import tqdm
    except ImportError:
        return contextlib.nullcontext()
    length = headers.get('Content-Length', '')
    return tqdm(total=int(length) if length.isdigit() else None, unit='B', unit_scale=True,
                unit_divisor=1024)


def _read_error(path: str) -> str | None:
    """Why :func:`~vheat_mm.checkpoint.io.read_checkpoint` refuses ``path``; None if it reads."""
    from .io import read_checkpoint  # io imports this module

    try:
        read_checkpoint(path)
    except CheckpointError as err:
        return str(err)
    return None


def _stat(result: os.stat_result) -> tuple[int, ...]:
    return tuple(getattr(result, f'st_{name}') for name in _STAT)


def _hash_file(path: str) -> tuple[str, tuple[int, ...] | None]:
    """``path``'s sha256, and its stat (None if the file changed while it was read)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        before = _stat(os.fstat(file.fileno()))
        for block in iter(lambda: file.read(_BLOCK), b''):
            digest.update(block)
        after = _stat(os.fstat(file.fileno()))
    return digest.hexdigest(), before if before == after else None


def _read_record(cached: str) -> _Record | None:
    """``cached``'s record; None if there is none or it cannot be parsed."""
    try:
        with open(f'{cached}.sha256', 'rb') as file:
            text = file.read(4096).decode('utf-8')
            written_ns = os.fstat(file.fileno()).st_mtime_ns
    except (OSError, UnicodeError):
        return None
    digest = re.match(r'([0-9a-f]{64}) [ *]', text)
    if digest is None:
        return None
    line = re.search(r'^# stat (.*)$', text, re.MULTILINE)
    fields = dict(re.findall(r'(\w+)=(\d+)', line.group(1))) if line else {}
    stat = tuple(int(fields[name]) for name in _STAT) if set(_STAT) <= set(fields) else None
    return _Record(digest.group(1), stat, written_ns)


def _write_record(cached: str, digest: str, stat: tuple[int, ...], url: str) -> None:
    text = (f'{digest}  {os.path.basename(cached)}\n'
            f'# stat {" ".join(f"{name}={value}" for name, value in zip(_STAT, stat))}\n'
            f'# from {shown_url(url)}\n')
    try:
        with replaced_atomically(f'{cached}.sha256') as tmp, \
                open(tmp, 'x', encoding='utf-8') as file:
            file.write(text)
    except OSError as err:  # a read-only cache: the file is hashed on every use
        logger.warning('cannot record the sha256 of %s beside it: %s', cached, err)
