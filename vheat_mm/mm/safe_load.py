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

``import vheat_mm`` also routes mmengine's own checkpoint reading (``--resume``, ``load_from``,
the test checkpoint, also in the toolboxes' own tools) through
:func:`vheat_mm.checkpoint.read_checkpoint`: :func:`use_weights_only_loading`.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from ..checkpoint import CheckpointError, RefusedCall, is_url, read_checkpoint
from .state_dict_loading import runner_layout

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
    raise RefusedCall(f'getattr({getattr(owner, "__name__", owner)!r}, {name!r})',
                      'only public HistoryBuffer methods are allowed')


def mmengine_checkpoint_types() -> list:
    """The globals that mmengine's checkpoints pickle, beside what torch allows already."""
    dtype_classes = [type(np.dtype(t)) for t in _NUMPY_SCALAR_TYPES]
    return [HistoryBuffer, np.ndarray, np.dtype, _reconstruct, scalar, *dtype_classes,
            (history_buffer_method, 'builtins.getattr')]


def allow_mmengine_checkpoints() -> None:
    torch.serialization.add_safe_globals(mmengine_checkpoint_types())


def load_from_weights_only(filename: str, map_location: object = None) -> dict:
    """mmengine ``CheckpointLoader`` scheme for local files and http(s) URLs.

    Reads with :func:`vheat_mm.checkpoint.read_checkpoint` (``weights_only=True``, on the CPU;
    the runner moves the values to the model's device). An unsafe pickle, a truncated or a
    missing file raise :class:`~vheat_mm.checkpoint.CheckpointError` naming the file. An
    official vHeat (or DeepSpeed) checkpoint is given as ``{'state_dict': ...}``, and the file is
    noted as the source of its state dicts (:func:`~.state_dict_loading.runner_layout`).
    ``map_location`` is accepted for the scheme's signature and not used.
    """
    path = filename if is_url(filename) else os.path.expanduser(filename)
    try:
        checkpoint = read_checkpoint(path)
    except FileNotFoundError as err:
        raise CheckpointError(str(err)) from None
    return runner_layout(checkpoint, path)


def use_weights_only_loading() -> None:
    """Make mmengine read local and http(s) checkpoints with :func:`load_from_weights_only`.

    mmengine 0.10 reads local files with ``torch.load`` and torch's default ``weights_only``
    (True in torch >= 2.6, unless ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set) and URLs with
    ``torch.hub.load_state_dict_from_url``, whose default is ``weights_only=False``.
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes=('', 'http://', 'https://'),
                                     loader=load_from_weights_only, force=True)
