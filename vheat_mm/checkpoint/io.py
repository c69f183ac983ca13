"""Reading checkpoint files safely: ``torch.load(weights_only=True)`` on the CPU, and one line
naming the file and why when it cannot be read.

A file the weights-only unpickler refuses is named with the globals its pickle asks for, as
torch lists them (``torch.serialization.get_unsafe_globals_in_checkpoint``, torch >= 2.6); a
damaged file with what is wrong with it (empty, truncated, not written by ``torch.save``).

The official training code (``save_checkpoint_ema``) pickles its yacs ``CfgNode`` config beside
the weights. While reading (:func:`reading_official_checkpoints`), that one global stands for
:class:`OfficialConfig`, which builds a plain ``OrderedDict`` of the config's values: yacs need
not be installed, and nothing of yacs (or of any other class) is constructed or run.

Before ``torch.load``, a zip archive is checked (:func:`~.archive.check_archive`): no
compressed record, none larger than the file, every CRC-32 right, no pickle whose shared parts
nest to an exponential size. After it, the checkpoint's
keys and those of its state dicts must be strings (:func:`check_string_keys`), and weights
holding NaN or inf are refused (:func:`check_finite`): such a checkpoint comes from a diverged
run or a damaged copy, and loading it would give a model that outputs NaN. Messages show keys
and values cut to a bounded length (:mod:`.messages`).
"""
from __future__ import annotations

import contextlib
import os
import pickle
import zipfile
from collections import OrderedDict
from typing import Iterator, Mapping

import torch

from .archive import ZIP_MAGIC, check_archive
from .download import cached_download, is_url
from .errors import CheckpointError
from .layout import named_weight_entries
from .messages import MAX_SHOWN, cut, shown

__all__ = ['OfficialConfig', 'RefusedCall', 'check_finite', 'check_string_keys',
           'read_checkpoint', 'reading_official_checkpoints']

# How a file that torch.save wrote in its legacy (non-zip, torch < 1.6) format starts.
_LEGACY_HEAD = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)[:4]
_ALLOWED = "allowed are tensors, containers, numbers, strings and mmengine's checkpoint types"


class RefusedCall(CheckpointError):
    """Raised while unpickling by an allowlisted global that was called with arguments it does
    not allow; ``call`` names the call."""

    def __init__(self, call: str, allowed: str) -> None:
        super().__init__(f'checkpoint asks for {call}; {allowed}')
        self.call = call


class OfficialConfig:
    """Stands for ``yacs.config.CfgNode`` while an official checkpoint is read: the node
    becomes a plain ``OrderedDict`` of its values (yacs' own flags, such as ``__immutable__``,
    land in that dict's ``__dict__``). A node pickled with arguments is refused."""

    def __new__(cls, *args) -> OrderedDict:
        if args:
            raise RefusedCall(f'yacs.config.CfgNode{shown(args)}', 'a CfgNode is read without '
                              'arguments, as the official training code pickles it')
        return OrderedDict()


# Globals of the official vHeat checkpoints -> the inert stand-in read in their place.
OFFICIAL_STAND_INS = ((OfficialConfig, 'yacs.config.CfgNode'),)


@contextlib.contextmanager
def reading_official_checkpoints() -> Iterator[None]:
    """Inside the block, ``torch.load(weights_only=True)`` reads what the official training
    code pickles beside the weights (:data:`OFFICIAL_STAND_INS`); torch's allowlist is restored
    on leaving it."""
    with torch.serialization.safe_globals(list(OFFICIAL_STAND_INS)):
        yield


def check_finite(state_dict: Mapping, source: str) -> None:
    """Raise :class:`CheckpointError` naming the first floating-point tensor of ``state_dict``
    that holds NaN or inf (and how many of its values do)."""
    for key, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() \
                and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(
                f'refusing to load {source}: tensor {shown(key)} {tuple(value.shape)} holds '
                f'{bad} NaN or inf value{"s" if bad > 1 else ""} (a diverged run or a damaged '
                f'file?)')


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


def read_checkpoint(path: str | os.PathLike, *, name: str | None = None) -> dict:
    """Load a checkpoint file (or http(s) URL, see
    :func:`~vheat_mm.checkpoint.download.cached_download`) on the CPU with
    ``torch.load(weights_only=True)``.

    Raises :class:`FileNotFoundError` or :class:`CheckpointError`, naming the path (or
    ``name``, where the file stands for another address), for a missing, unreadable,
    truncated, damaged or unsafe file (one whose pickle asks for code to run, or a zip archive
    that ``torch.save`` cannot have written), for keys that are not strings, and for weights
    holding NaN or inf (in any state-dict entry, or a bare state dict).
    """
    path = cached_download(path) if is_url(path) else os.fspath(path)
    name = name or path
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {name}')
    try:
        check_archive(path, name)
        with reading_official_checkpoints():
            checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except RefusedCall as err:
        raise CheckpointError(_refusal(name, err.call)) from None
    except CheckpointError:
        raise
    except Exception as err:  # unsafe pickle, truncated or corrupt file, permission...
        damage = _damage(path, err)
        if damage is None and isinstance(err, pickle.UnpicklingError):  # refused or unparsable
            asked = _unsafe_globals(path)
            if asked:
                raise CheckpointError(_refusal(name, asked)) from None
        raise CheckpointError(f'cannot read checkpoint {name}: {damage or _corrupt(err)}; '
                              f'expected a complete file written by torch.save') from err
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f'{name} holds a {type(checkpoint).__name__}, not a dict of tensors')
    check_string_keys(checkpoint, name)
    for _, state_dict in named_weight_entries(checkpoint):
        check_finite(state_dict, name)
    return dict(checkpoint)


def _refusal(path: str, asked: str) -> str:
    return (f'refusing to load {path}: its pickle asks for {asked}, which weights_only loading '
            f'does not allow (loading it could run code); {_ALLOWED}')


def _unsafe_globals(path: str) -> str | None:
    """What the pickle of ``path``, a complete torch.save archive, asks for that weights_only
    loading does not allow: the globals torch lists, or a description where it names none;
    None where torch cannot parse the pickle (a damaged file, not a refusal)."""
    if not hasattr(torch.serialization, 'get_unsafe_globals_in_checkpoint'):  # torch < 2.6
        return 'a global or call (torch >= 2.6 would name it)'
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 -- whatever torch raises, the pickle cannot be parsed
        return None
    asked = cut(', '.join(sorted(unsafe)), 4 * MAX_SHOWN)
    return asked or 'a call of an object built while unpickling'


def _damage(path: str, err: Exception) -> str | None:
    """One line on what is wrong with ``path`` that ``torch.load`` failed on: unreadable, empty,
    legacy, truncated, not torch's; None for a complete zip archive with a ``data.pkl``."""
    if isinstance(err, OSError):
        return f'{type(err).__name__}: {err.strerror or err}'
    with open(path, 'rb') as file:
        head = file.read(4)
    if not head:
        return 'the file is empty'
    if head == _LEGACY_HEAD:
        return (f'a legacy torch file (not a zip archive) whose pickle weights_only loading '
                f'refuses or cannot parse ({type(err).__name__}; torch names the globals it '
                f'refuses in zip archives only)')
    if head != ZIP_MAGIC:
        return (f'it is neither a zip archive (what torch.save writes) nor a readable legacy '
                f'torch file ({type(err).__name__}: random bytes, text or a damaged file?)')
    with zipfile.ZipFile(path) as archive:  # check_archive has read its directory
        names = archive.namelist()
    if not any(name.endswith('/data.pkl') for name in names):
        held = ', '.join(map(cut, names[:5])) + (', ...' if len(names) > 5 else '')
        return f'a zip archive without data.pkl, not written by torch.save (it holds {held})'
    return None


def _corrupt(err: Exception) -> str:
    """For a complete torch.save archive whose content torch.load could not rebuild."""
    reason = (str(err).strip().splitlines() or [''])[0].partition('. ')[0]
    return f'the archive is corrupt ({type(err).__name__}: {reason[:200]})'
