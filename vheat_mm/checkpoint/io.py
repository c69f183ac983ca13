"""Reading vHeat checkpoints safely and converting them to a model's layout (plain PyTorch).

Three layouts are recognised: the official one (``{'model': state_dict, ...}``, also
``model_ema``), mmengine's (``{'state_dict': ..., 'meta': ...}``, keys with or without a
``backbone.`` prefix) and a bare state dict. Files are always read with ``weights_only=True``;
an http(s) URL is downloaded once into torch hub's checkpoint cache, as mmengine does, then read
the same way. :func:`official_to_mmpretrain` maps an official classifier to mmpretrain's
``ImageClassifier`` keys.

:func:`convert_freq_embeds` prepares a classification checkpoint for a larger downstream
resolution (what ``interpolate4downstream.py`` does) and :func:`write_checkpoint` saves
atomically.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import pickle
import re
import urllib.error
import urllib.parse
import uuid
import zipfile
from dataclasses import dataclass, field
from typing import Iterator, Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import resize_freq_embed
from ..models.vheat import fit_freq_embeds

__all__ = ['CheckpointError', 'read_checkpoint', 'is_url', 'cached_download', 'official_to_mmpretrain', 'find_state_dict', 'select_prefix',
           'checkpoint_filter_fn', 'load_pretrained', 'LoadReport', 'FreqEmbedKey',
           'check_downstream_sizes', 'find_freq_embeds', 'convert_freq_embeds',
           'write_checkpoint', 'replaced_atomically', 'leftover_temporaries',
           'CONVERSION_MODES', 'FREQ_EMBED_ENTRIES']

logger = logging.getLogger(__name__)

STATE_DICT_ENTRIES = ('state_dict', 'model', 'model_ema', 'module')
FREQ_EMBED_ENTRIES = ('model', 'model_ema', 'state_dict')
_ENTRY_FREQ_EMBED = re.compile(r'^(?:backbone\.)?freq_embed\.(\d+)$')
CONVERSION_MODES = ('pad', 'bicubic')
_SIZE_MULTIPLE = 32  # the last stage's stride: every stage's freq_embed size is an integer


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


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
    both hashes. torch's downloader writes a temporary file and renames it, so neither an
    interrupted nor a refused download leaves a file under the final name. In a distributed
    run, rank 0 downloads while the other ranks wait at a barrier, then all read the one file
    (a rank that still finds no file, on a node of its own disk, downloads it itself).
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
        torch.hub.download_url_to_file(url, cached, hash_prefix=expected, progress=True)
    except RuntimeError as err:
        found = re.search(r'expected "([0-9a-f]*)", got "([0-9a-f]*)"', str(err))
        if not found:
            raise
        raise CheckpointError(f'{url}: the downloaded file\'s sha256 is {found.group(2)}, not '
                              f'the expected {found.group(1)}...; it was not kept') from None
    except (urllib.error.URLError, OSError) as err:
        raise CheckpointError(f'cannot download {url}: {err}') from err


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint file (or http(s) URL, see :func:`cached_download`) on the CPU with
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


def find_state_dict(checkpoint: Mapping) -> dict[str, Tensor]:
    """The state dict inside a checkpoint of any recognised layout."""
    for entry in STATE_DICT_ENTRIES:
        if isinstance(checkpoint.get(entry), Mapping):
            return dict(checkpoint[entry])
    if checkpoint and all(isinstance(v, Tensor) for v in checkpoint.values()):
        return dict(checkpoint)
    raise CheckpointError(
        f'no state dict found: expected one of the entries {list(STATE_DICT_ENTRIES)} or a '
        f'mapping of tensors, found keys {sorted(checkpoint)[:20]}')


def select_prefix(state_dict: Mapping[str, Tensor], prefix: str | None) -> dict[str, Tensor]:
    """Keys under ``prefix`` (e.g. 'backbone'), stripped of it.

    With ``prefix=None``, a 'module.' (DDP) prefix is removed and, if the keys are those of a
    whole detector or segmentor, the 'backbone.' part is selected.
    """
    if prefix is None:
        state_dict = {k.removeprefix('module.'): v for k, v in state_dict.items()}
        prefix = 'backbone' if any(k.startswith('backbone.') for k in state_dict) else ''
    if not prefix:
        return dict(state_dict)
    head = prefix.rstrip('.') + '.'
    selected = {k[len(head):]: v for k, v in state_dict.items() if k.startswith(head)}
    if not selected:
        raise CheckpointError(f'no key starts with {head!r}; the checkpoint has keys such as '
                              f'{sorted(state_dict)[:10]}')
    return selected


def checkpoint_filter_fn(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Adapt a vHeat state dict to ``model``: each ``freq_embed.i`` is resized to the model's size
    (:func:`~vheat_mm.models.vheat.fit_freq_embeds`, for the vHeat trunk at ``model``'s root).

    Pure: the input is left untouched. Other keys pass through unchanged.
    """
    out = dict(state_dict)
    freq_embed = getattr(model, 'freq_embed', None)
    if freq_embed is not None:
        fit_freq_embeds(out, '', freq_embed)
    return out


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did: keys it could not fill, keys it ignored, resizes."""
    path: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f'loaded vHeat weights from {self.path}']
        if self.resized:
            out.append('resized (bicubic) to the model: ' + ', '.join(self.resized))
        if self.missing:
            out.append(f'missing in the checkpoint, left as initialised ({len(self.missing)}): '
                       + ', '.join(self.missing))
        if self.unexpected:
            out.append(f'in the checkpoint but not in the model, ignored '
                       f'({len(self.unexpected)}): ' + ', '.join(self.unexpected))
        return out


def load_pretrained(model: nn.Module, path: str | os.PathLike, *, prefix: str | None = None,
                    strict: bool = False) -> LoadReport:
    """Load a vHeat checkpoint of any recognised layout into ``model``.

    freq_embed tensors of another resolution are resized. Tensors whose shapes cannot fit raise
    :class:`CheckpointError` naming every such key; with ``strict=True`` missing or unexpected
    keys raise too. The returned :class:`LoadReport` lists what was not loaded.
    """
    state_dict = select_prefix(find_state_dict(read_checkpoint(path)), prefix)
    converted = checkpoint_filter_fn(state_dict, model)
    own = model.state_dict()
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in converted.items() if k in own and v.shape != own[k].shape]
    if mismatched:
        raise CheckpointError(f'{path}: tensors that cannot fit the model: '
                              + '; '.join(mismatched))
    report = LoadReport(
        path=os.fspath(path),
        missing=sorted(set(own) - set(converted)),
        unexpected=sorted(set(converted) - set(own)),
        resized=[f'{k} {tuple(state_dict[k].shape)} -> {tuple(converted[k].shape)}'
                 for k in converted if converted[k] is not state_dict[k]],
    )
    if strict and (report.missing or report.unexpected):
        raise CheckpointError('\n'.join(report.lines()))
    model.load_state_dict({k: v for k, v in converted.items() if k in own}, strict=False)
    for line in report.lines():
        logger.info(line)
    return report


_OFFICIAL_HEAD = {'classifier.0.': 'backbone.outnorm3.', 'classifier.3.': 'head.fc.'}


def official_to_mmpretrain(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Keys of an official vHeat classifier -> mmpretrain ``ImageClassifier`` keys.

    The official head is LayerNorm -> average pool -> Linear (``classifier.0`` / ``.3``); the
    mmpretrain config has the LayerNorm as the backbone's ``outnorm3`` (``out_indices=(3,)``),
    ``GlobalAveragePooling`` as neck and ``LinearClsHead`` (``head.fc``). Every other key goes
    under ``backbone.``. Pure; the tensors are shared, not copied.
    """
    keys = set(state_dict)
    if not {'classifier.3.weight', 'freq_embed.0'} <= keys:
        raise CheckpointError(
            'not an official vHeat classifier state dict (it needs freq_embed.0 and '
            f'classifier.3.weight); keys found: {sorted(keys)[:20]}')
    converted = {}
    for key, value in state_dict.items():
        head = next((old for old in _OFFICIAL_HEAD if key.startswith(old)), None)
        new_key = (_OFFICIAL_HEAD[head] + key[len(head):] if head
                   else 'backbone.' + key)
        converted[new_key] = value
    return converted


class FreqEmbedKey(NamedTuple):
    """Where a freq_embed sits in a checkpoint: ``checkpoint[entry][key]``, of stage ``stage``."""
    entry: str
    key: str
    stage: int


def check_downstream_sizes(pt_size: int, tg_size: int) -> None:
    """Raise :class:`ValueError` unless both sizes are positive multiples of 32 and tg >= pt."""
    bad = [f'{name}={size}' for name, size in (('pt_size', pt_size), ('tg_size', tg_size))
           if size <= 0 or size % _SIZE_MULTIPLE]
    if bad:
        raise ValueError(f'image sizes must be positive multiples of {_SIZE_MULTIPLE} (the '
                         f'stride of the last stage), got {", ".join(bad)}')
    if tg_size < pt_size:
        raise ValueError(f'tg_size ({tg_size}) is smaller than pt_size ({pt_size}): the '
                         f'conversion only enlarges freq_embed, so tg_size must be at least '
                         f'pt_size')


def find_freq_embeds(checkpoint: Mapping) -> list[FreqEmbedKey]:
    """Every ``[backbone.]freq_embed.{i}`` in the entries ``model``, ``model_ema``, ``state_dict``.

    Raises :class:`CheckpointError` listing the top-level keys when none of those entries is
    present, or listing an entry's keys when that entry holds no freq_embed.
    """
    entries = [name for name in FREQ_EMBED_ENTRIES if isinstance(checkpoint.get(name), Mapping)]
    if not entries:
        raise CheckpointError(
            f'unknown checkpoint layout: expected an official entry (model, model_ema) or an '
            f"mmengine entry (state_dict), found top-level keys {sorted(map(str, checkpoint))}")
    found = []
    for entry in entries:
        keys = [FreqEmbedKey(entry, key, int(match.group(1))) for key in checkpoint[entry]
                if (match := _ENTRY_FREQ_EMBED.match(str(key)))]
        if not keys:
            names = sorted(map(str, checkpoint[entry]))
            shown = ', '.join(names[:20]) + (f', ... ({len(names)} keys)' if len(names) > 20
                                             else '')
            raise CheckpointError(f'no freq_embed in the checkpoint entry {entry!r} (is it a '
                                  f'vHeat checkpoint?): expected keys freq_embed.<stage> or '
                                  f'backbone.freq_embed.<stage>; keys found: {shown or "none"}')
        found.extend(sorted(keys, key=lambda k: (k.stage, k.key)))
    return found


def _pad_freq_embed(freq_embed: Tensor, size: tuple[int, int]) -> Tensor:
    """Zero-pad a (H, W, C) freq_embed at the bottom and right to ``size`` (the official way)."""
    pad_h, pad_w = size[0] - freq_embed.shape[0], size[1] - freq_embed.shape[1]
    padded = F.pad(freq_embed.permute(2, 0, 1), (0, pad_w, 0, pad_h), mode='constant', value=0)
    return padded.permute(1, 2, 0).contiguous()


def convert_freq_embeds(checkpoint: Mapping, *, pt_size: int, tg_size: int,
                        mode: str = 'pad') -> dict:
    """A copy of ``checkpoint`` with each freq_embed enlarged from ``pt_size`` to ``tg_size``.

    Stage i's freq_embed is (s, s, C) with s = size / 4 / 2^i. ``mode='pad'`` zero-pads it at
    the bottom and right, as the official ``interpolate4downstream.py`` does; ``mode='bicubic'``
    resizes it with :func:`~vheat_mm.models.heat.resize_freq_embed`. Every other entry and key is
    kept as it is (the same objects); the input is left untouched.
    """
    if mode not in CONVERSION_MODES:
        raise ValueError(f'unknown mode {mode!r}; choose one of {list(CONVERSION_MODES)}')
    check_downstream_sizes(pt_size, tg_size)
    found = find_freq_embeds(checkpoint)
    converted = dict(checkpoint)
    for entry in dict.fromkeys(k.entry for k in found):
        converted[entry] = copy.copy(checkpoint[entry])  # keeps OrderedDict and its _metadata
    for entry, key, stage in found:
        value = checkpoint[entry][key]
        expected = pt_size // 4 // 2**stage
        if not isinstance(value, Tensor) or value.dim() != 3 \
                or tuple(value.shape[:2]) != (expected, expected):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise CheckpointError(
                f'{entry}[{key!r}] has shape {shape}, but pt_size={pt_size} gives stage {stage} '
                f'a ({expected}, {expected}, C) freq_embed; is pt_size the resolution the '
                f'checkpoint was trained at?')
        target = (tg_size // 4 // 2**stage,) * 2
        converted[entry][key] = (_pad_freq_embed(value, target) if mode == 'pad'
                                 else resize_freq_embed(value, target))
    return converted


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
