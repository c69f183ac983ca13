"""Reading checkpoint files safely: ``torch.load`` with vheat_mm's restricted unpickler
(:mod:`.restricted_pickle`), and one line naming the file and why when it cannot be read.

Every global a checkpoint's pickle may name is a record of
:data:`~.restricted_pickle.ALLOWED_GLOBALS`: what ``torch.save`` writes for tensors, parameters
and state dicts, what mmengine's runner pickles in its checkpoints (numpy arrays and scalars,
its ``HistoryBuffer``), and the official training code's yacs ``CfgNode`` (read as a plain
``OrderedDict`` by :class:`~.restricted_pickle.OfficialConfig`: yacs need not be installed, and
nothing of it runs). A file whose pickle asks for anything else is refused, naming what it asks
for; torch's own allowlist is neither read nor changed, and reads in several threads at once
do not touch each other. Where ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` is set, torch refuses any
unpickler but its own: the file is read with torch's weights-only unpickler and its allowlist,
as the variable asks.

Before ``torch.load``, a file that is neither a zip archive nor torch's legacy format is
refused, and a zip archive is checked (:func:`~.archive.check_archive`): no compressed record,
none larger than the file, every CRC-32 right, no pickle whose shared parts nest to an
exponential size. After it, the checkpoint's keys and those of its state dicts must be strings
(:func:`check_string_keys`), and weights holding NaN or inf are refused
(:func:`refuse_non_finite`): such a checkpoint comes from a diverged run or a damaged copy,
and loading it would give a model that outputs NaN. Messages show keys and values cut to a
bounded length (:mod:`.messages`).
"""
from __future__ import annotations

import os
import pickle
import stat
import zipfile
from typing import Iterator, Mapping

import torch

from . import restricted_pickle
from .archive import ZIP_MAGIC, check_archive
from .download import cached_download, is_url, positive_setting, shown_url
from .errors import CheckpointError
from .layout import named_weight_entries
from .messages import MAX_SHOWN, cut, shown, shown_path
from .restricted_pickle import ALLOWED, RefusedCall

__all__ = ['DEFAULT_MAX_DECLARED_BYTES', 'FORCE_WEIGHTS_ONLY', 'MAX_DECLARED_BYTES_VARIABLE',
           'check_declared_sizes', 'check_string_keys', 'max_declared_bytes', 'read_checkpoint',
           'refuse_non_finite']

#: The variable that sets :func:`max_declared_bytes`, and its default (16 GiB: vHeat-B with its
#: optimizer state declares about 1 GiB).
MAX_DECLARED_BYTES_VARIABLE = 'VHEAT_MM_MAX_CHECKPOINT_BYTES'
DEFAULT_MAX_DECLARED_BYTES = 16 * 2**30
# torch's variable that makes every torch.load use its weights-only unpickler (torch >= 2.1).
FORCE_WEIGHTS_ONLY = 'TORCH_FORCE_WEIGHTS_ONLY_LOAD'
_PICKLE_START = b'\x80'  # pickle's PROTO opcode: how a file in torch's legacy format starts
_EXPECTED = 'expected a complete file written by torch.save'


def _torch_forces_weights_only() -> bool:
    """Whether :data:`FORCE_WEIGHTS_ONLY` is set as torch reads it (then ``torch.load`` refuses
    any ``pickle_module``)."""
    return os.environ.get(FORCE_WEIGHTS_ONLY, '0').lower() in ('1', 'y', 'yes', 'true')


def refuse_non_finite(state_dict: Mapping, source: str) -> None:
    """Raise :class:`CheckpointError` naming the first floating-point tensor of ``state_dict``
    that holds NaN or inf (and how many of its values do)."""
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        values = _stored_values(value)
        if not _all_finite(values):
            bad = int((~torch.isfinite(values)).sum())
            raise CheckpointError(
                f'refusing to load {source}: tensor {shown(key)} {tuple(value.shape)} holds '
                f'{bad} NaN or inf value{"s" if bad > 1 else ""} (a diverged run or a damaged '
                f'file?)')


def _all_finite(values: torch.Tensor) -> bool:
    """Whether every value is finite: its largest and smallest are (both propagate NaN), read
    in a pass each without a tensor of its size (``torch.isfinite`` is ten times slower)."""
    if not values.numel():
        return True
    return bool(torch.isfinite(torch.stack((values.amax(), values.amin()))).all())


def _stored_values(tensor: torch.Tensor) -> torch.Tensor:
    """The values of ``tensor`` that :func:`refuse_non_finite` reads: the tensor, or where it has
    more elements than its storage holds (a stride of 0, as ``expand`` gives), the storage's
    values, each once: a small file can describe a tensor of any number of elements that way."""
    held = tensor.untyped_storage().nbytes() // tensor.element_size()
    if tensor.numel() <= held:
        return tensor
    return tensor.new_empty(0).set_(tensor.untyped_storage(), 0, (held,), (1,))


def check_string_keys(checkpoint: Mapping, source: str) -> None:
    """Raise :class:`CheckpointError` naming ``source`` and the key where a top-level key of
    ``checkpoint``, or a key of a state dict in it, is not a string."""
    entries = [(None, checkpoint)] + [(e, m) for e, m in named_weight_entries(checkpoint) if e]
    for entry, mapping in entries:
        for key in mapping:
            if not isinstance(key, str):
                where = f'a key of its {entry!r} entry' if entry else 'a top-level key'
                raise CheckpointError(
                    f'refusing to load {source}: {where}, {shown(key)}, is not a string but of '
                    f'type {type(key).__name__} (a checkpoint and its state dicts are keyed by '
                    f'names)')


def read_checkpoint(path: str | os.PathLike, *, name: str | None = None,
                    map_location: object = 'cpu') -> dict:
    """Load a checkpoint file (or http(s) URL, see
    :func:`~vheat_mm.checkpoint.download.cached_download`) with ``torch.load`` and vheat_mm's
    restricted unpickler (:mod:`.restricted_pickle`); ``map_location`` is ``torch.load``'s.

    Raises :class:`FileNotFoundError` or :class:`CheckpointError`, naming the path (or
    ``name``, where the file stands for another address), for a missing, unreadable,
    truncated, damaged or unsafe file (one whose pickle asks for a global the reader does not
    allow, or a zip archive that ``torch.save`` cannot have written), for keys that are not
    strings, and for weights holding NaN or inf (in any state-dict entry, or a bare state dict).
    """
    name = name or path
    name = shown_url(name) if is_url(name) else shown_path(name)
    path = cached_download(path) if is_url(path) else os.fspath(path)
    _check_regular_file(path, name)
    forced = _torch_forces_weights_only()
    try:
        _check_format(path, name)
        check_archive(path, name)
        checkpoint = torch.load(path, map_location=map_location, weights_only=forced,
                                pickle_module=None if forced else restricted_pickle)
    except RefusedCall as err:
        raise CheckpointError(f'refusing to load {name}: its pickle asks for {err.call}, '
                              f'{err.reason}') from None
    except CheckpointError:
        raise
    except Exception as err:  # truncated or corrupt file, permission...
        if forced and isinstance(err, pickle.UnpicklingError):
            raise CheckpointError(_refused_by_torch(name, err)) from None
        raise CheckpointError(f'cannot read checkpoint {name}: '
                              f'{_damage(path, err) or _corrupt(err)}; {_EXPECTED}') from err
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f'{name} holds a {type(checkpoint).__name__}, not a dict of tensors')
    check_string_keys(checkpoint, name)
    check_declared_sizes(checkpoint, name, os.path.getsize(path))
    for _, state_dict in named_weight_entries(checkpoint):
        refuse_non_finite(state_dict, name)
    return dict(checkpoint)


def max_declared_bytes() -> int:
    """The most bytes the tensors of one checkpoint may declare in all (their shapes times their
    element sizes): :data:`MAX_DECLARED_BYTES_VARIABLE` where it is set, else
    :data:`DEFAULT_MAX_DECLARED_BYTES`."""
    return int(positive_setting(MAX_DECLARED_BYTES_VARIABLE, DEFAULT_MAX_DECLARED_BYTES, int,
                                ' of bytes'))


def check_declared_sizes(checkpoint: Mapping, source: str, file_bytes: int) -> None:
    """Raise :class:`CheckpointError` naming ``source`` and the key where a tensor of
    ``checkpoint`` declares more bytes than its storage holds by more than the file's size (an
    expanded view, stride 0: a small file can describe a tensor of any size, which any copy
    would allocate), or where the tensors declare more than :func:`max_declared_bytes` in all."""
    limit, total = max_declared_bytes(), 0
    for key, tensor in _named_tensors(checkpoint):
        declared = tensor.numel() * tensor.element_size()
        stored = tensor.untyped_storage().nbytes()
        if declared > stored + file_bytes:
            raise CheckpointError(
                f'refusing to load {source}: tensor {key} {tuple(tensor.shape)} declares '
                f'{declared} bytes, but its storage holds {stored} (an expanded view of a few '
                f'values: a copy of it would allocate them all)')
        total += declared
        if total > limit:
            raise CheckpointError(
                f'refusing to load {source}: its tensors declare more than {limit} bytes in all '
                f'(at {key}); set {MAX_DECLARED_BYTES_VARIABLE} to a larger number of bytes to '
                f'read it')


def _named_tensors(value: object, name: str = '', seen: set | None = None
                   ) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in the containers of ``value`` (each container once), with its place as
    messages show it (``['model']['w']``)."""
    seen = set() if seen is None else seen
    if isinstance(value, torch.Tensor):
        yield cut(name, 4 * MAX_SHOWN), value
        return
    if not isinstance(value, (dict, list, tuple)) or id(value) in seen:
        return
    seen.add(id(value))
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        yield from _named_tensors(item, f'{name}[{shown(key)}]', seen)


def _check_regular_file(path: str, name: str) -> None:
    """Raise :class:`FileNotFoundError` where ``path`` does not exist (or is a link to nothing),
    and :class:`CheckpointError` naming what it is where it is not a regular file (a
    directory, a device such as /dev/zero, a FIFO that would block a read, a socket); it is
    never opened for that."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        link = ' (a link to a missing file)' if os.path.islink(path) else ''
        raise FileNotFoundError(f'checkpoint not found: {name}{link}') from None
    except OSError as err:
        raise CheckpointError(f'cannot read checkpoint {name}: {type(err).__name__}: '
                              f'{err.strerror or err}') from None
    if stat.S_ISREG(mode):
        return
    kind = ('a directory' if stat.S_ISDIR(mode) else 'a FIFO (named pipe)' if stat.S_ISFIFO(mode)
            else 'a device' if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else 'a socket' if stat.S_ISSOCK(mode) else 'not a regular file')
    link = f' (a link to {shown_path(os.path.realpath(path))})' if os.path.islink(path) else ''
    raise CheckpointError(f'cannot read checkpoint {name}: it is {kind}{link}, not a file '
                          f'written by torch.save')


def _check_format(path: str, name: str) -> None:
    """Raise :class:`CheckpointError` naming ``name`` where ``path`` is empty, or is neither a
    zip archive (what torch.save writes) nor a pickle (torch's legacy format, torch < 1.6)."""
    with open(path, 'rb') as file:
        head = file.read(len(ZIP_MAGIC))
    if not head:
        raise CheckpointError(f'cannot read checkpoint {name}: the file is empty; {_EXPECTED}')
    if head != ZIP_MAGIC and not head.startswith(_PICKLE_START):
        raise CheckpointError(
            f'cannot read checkpoint {name}: it is neither a zip archive (what torch.save '
            f'writes) nor a readable legacy torch file (random bytes, text, an older tar file or '
            f'a damaged file?); {_EXPECTED}')


def _refused_by_torch(name: str, err: pickle.UnpicklingError) -> str:
    """For a file that torch's weights-only unpickler refuses under :data:`FORCE_WEIGHTS_ONLY`:
    what it says it refuses (torch >= 2.1 names the global after 'WeightsUnpickler error')."""
    _, named, detail = str(err).partition('WeightsUnpickler error: ')
    return (f'refusing to load {name}: {FORCE_WEIGHTS_ONLY} is set, so it is read by torch\'s '
            f'weights-only unpickler and allowlist, which refuse it '
            f'({_first_line(detail if named else str(err))}); without the variable vheat_mm reads '
            f'it with its own restricted unpickler ({ALLOWED})')


def _damage(path: str, err: Exception) -> str | None:
    """One line on what is wrong with ``path`` that ``torch.load`` failed on: unreadable, a
    legacy file it cannot parse, a zip archive torch did not write; None for a complete zip
    archive with a ``data.pkl``."""
    if isinstance(err, OSError):
        return f'{type(err).__name__}: {err.strerror or err}'
    with open(path, 'rb') as file:
        head = file.read(len(ZIP_MAGIC))
    if head != ZIP_MAGIC:  # _check_format let it through: a pickle
        return (f'a legacy torch file (not a zip archive) that cannot be parsed '
                f'({type(err).__name__}: {_first_line(str(err))})')
    with zipfile.ZipFile(path) as archive:  # check_archive has read its directory
        names = archive.namelist()
    if not any(name.endswith('/data.pkl') for name in names):
        held = ', '.join(map(cut, names[:5])) + (', ...' if len(names) > 5 else '')
        return f'a zip archive without data.pkl, not written by torch.save (it holds {held})'
    return None


def _corrupt(err: Exception) -> str:
    """For a complete torch.save archive whose content torch.load could not rebuild."""
    return f'the archive is corrupt ({type(err).__name__}: {_first_line(str(err))})'


def _first_line(text: str) -> str:
    """The first sentence of ``text``'s first line, cut to a bounded length."""
    return cut((text.strip().splitlines() or [''])[0].partition('. ')[0], 200)
