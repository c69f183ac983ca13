"""The pickle module every checkpoint is read with: a restricted unpickler and the one table of
the globals a checkpoint may name (:data:`ALLOWED_GLOBALS`).

``torch.load(path, weights_only=False, pickle_module=restricted_pickle)`` unpickles a
checkpoint with :class:`Unpickler` (torch derives its own from it: its ``find_class`` turns
the ``torch.*Storage`` names into storage types and asks ours for every other name) and the
small pickles of torch's legacy (non-zip) format with :func:`load`. torch's own allowlist is
neither read nor changed, and a read keeps its state in its own unpickler, so that reads in
several threads at once do not touch each other.

A name that is not in the table is refused with :class:`RefusedCall` naming it, before
anything is imported for it; the table's own modules (numpy, mmengine) are imported when a
pickle asks for one of their names, never before. Beyond ``find_class``, what a pickle may do
with what it builds is narrower than the standard library's :mod:`pickle` allows:

- ``BUILD`` sets the state of instances of the table's classes that take one (the
  ``OrderedDict`` of a state dict, numpy arrays and dtypes, mmengine's ``HistoryBuffer``, whose
  state is checked), never that of a class or a function, which would change it for the whole
  process;
- items are appended to lists only, set in dicts only, added to sets only;
- the ``EXT`` opcodes name their global through :mod:`copyreg`'s registry and go through the
  table as any other name does (the process-wide cache of extensions is neither read nor
  written).
"""
from __future__ import annotations

import _compat_pickle
import copyreg
import importlib
import io
import pickle
import sys
import types
from collections import OrderedDict
from types import MappingProxyType
from typing import Any, Callable, NamedTuple

import torch

from .errors import CheckpointError
from .messages import shown

__all__ = ['ALLOWED', 'ALLOWED_GLOBALS', 'AllowedGlobal', 'OfficialConfig', 'RefusedCall',
           'Unpickler', 'load', 'loads']

ALLOWED = ("allowed are tensors, containers, numbers, strings, numpy arrays and the types of "
           "mmengine's and the official vHeat code's checkpoints "
           "(vheat_mm.checkpoint.ALLOWED_GLOBALS)")
_NOT_ALLOWED = f"which vheat_mm's checkpoint reader does not allow (loading it could run code); " \
               f"{ALLOWED}"


class RefusedCall(CheckpointError):
    """Raised while unpickling for what a pickle asks for and the reader refuses: a global not
    in :data:`ALLOWED_GLOBALS`, an allowed one called with arguments it does not take, or an
    operation on an object that the unpickler does not allow. ``call`` names what was asked,
    ``reason`` says why it is refused (it follows ``call`` and a comma in a message)."""

    def __init__(self, call: str, reason: str = _NOT_ALLOWED) -> None:
        super().__init__(f'checkpoint asks for {call}, {reason}')
        self.call = call
        self.reason = reason


class OfficialConfig:
    """Stands for ``yacs.config.CfgNode``, which the official training code pickles beside the
    weights: the node becomes a plain ``OrderedDict`` of its values (yacs' own flags, such as
    ``__immutable__``, land in that dict's ``__dict__``). yacs need not be installed, and
    nothing of it is run. A node pickled with arguments is refused."""

    def __new__(cls, *args) -> OrderedDict:
        if args:
            raise RefusedCall(f'yacs.config.CfgNode{shown(args)}', 'which is read without '
                              'arguments, as the official training code pickles it')
        return OrderedDict()


# ----------------------------------------------------------------------------- stand-ins
def _history_buffer_method(owner: object, name: object) -> Callable:
    """``getattr`` as mmengine's checkpoints use it, and nothing more: ``getattr(HistoryBuffer,
    NAME)`` for NAME a public method that HistoryBuffer defines (it pickles its statistics
    methods, min, max, mean and current, beside its values)."""
    history_buffer = sys.modules.get('mmengine.logging.history_buffer')  # imported if asked for
    cls = getattr(history_buffer, 'HistoryBuffer', None)
    if _is_own_method(cls, name) and owner is cls:
        return cls.__dict__[name]
    asked = getattr(owner, '__qualname__', None) or f'<{type(owner).__qualname__}>'
    raise RefusedCall(f'getattr({asked}, {shown(name)})', "which vheat_mm's checkpoint reader "
                      "does not allow: for getattr, only public HistoryBuffer methods are allowed "
                      "(a HistoryBuffer pickles its statistics methods as getattr(HistoryBuffer, "
                      "'mean'))")


def _latin1_bytes(text: object, encoding: object) -> bytes:
    """``_codecs.encode`` as pickle protocol 2 writes bytes: ``encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding != 'latin1':
        raise RefusedCall(f'_codecs.encode({shown(text, 40)}, {shown(encoding)})',
                          "which vheat_mm's checkpoint reader does not allow: pickles spell bytes "
                          "as _codecs.encode(str, 'latin1'), and no other encoding is read")
    return text.encode('latin1')


def _empty_bytes(*args: object) -> bytes:
    """``bytes()``, as pickle protocol 2 writes empty bytes (``bytes(n)`` would allocate n)."""
    if args:
        raise RefusedCall(f'bytes{shown(args)}', "which vheat_mm's checkpoint reader does not "
                          "allow: pickles spell empty bytes as bytes(), and nothing else is read")
    return b''


def _rebuilt_without_hooks(function: str, hooks_at: int) -> Callable:
    """``torch._utils.<function>``, refusing the backward hooks that torch.save never writes
    (an empty ``OrderedDict`` at position ``hooks_at``: hooks would be called on backward)."""
    def rebuild(*args):
        if len(args) > hooks_at and args[hooks_at]:
            raise RefusedCall(f'torch._utils.{function} with backward hooks '
                              f'{shown(args[hooks_at])}', "which vheat_mm's checkpoint reader "
                              "does not allow: torch.save writes tensors without hooks")
        return getattr(torch._utils, function)(*args)
    rebuild.__qualname__ = rebuild.__name__ = function
    return rebuild


def _is_own_method(cls: type | None, name: object) -> bool:
    """Whether ``name`` is a public function defined in the body of ``cls`` (not a classmethod,
    which could change the class)."""
    return cls is not None and isinstance(name, str) and not name.startswith('_') \
        and isinstance(cls.__dict__.get(name), types.FunctionType)


# ----------------------------------------------------------------------------- states
def _any_state(inst: object, state: object) -> None:
    """What the class's own ``__setstate__`` takes (numpy's arrays and dtypes: C code that
    checks it)."""


def _attribute_state(inst: object, state: object) -> None:
    """Attributes of a new instance, as BUILD sets them in its ``__dict__`` (an ``OrderedDict``
    state dict's ``_metadata``, a yacs node's flags): plain names, none of which is an attribute
    of its class. A name such as ``get`` or ``items`` would hide the class's own method, and the
    readers would call what the checkpoint put there."""
    parts = state if isinstance(state, tuple) and len(state) == 2 else (state, None)
    for part in parts:
        if part is None:
            continue
        if not isinstance(part, dict):
            raise RefusedCall(f'the state {_described(part)} of {_described(inst)} set (pickle '
                              f'BUILD)', "which vheat_mm's checkpoint reader does not allow: "
                              "attributes are set from a dict")
        for name in part:
            if not isinstance(name, str) or hasattr(type(inst), name):
                raise RefusedCall(f'the attribute {shown(name)} of {_described(inst)} set (pickle '
                                  f'BUILD)', "which vheat_mm's checkpoint reader does not allow: "
                                  "it would hide the class's own attribute of that name")


def _history_buffer_state(inst: object, state: object) -> None:
    """A HistoryBuffer's ``__setstate__`` adds the state's ``statistics_methods`` to the class's
    registry, for the whole process: only its own methods, each under its own name."""
    methods = state.get('statistics_methods', {}) if isinstance(state, dict) else {}
    cls = type(inst)
    for name, method in (methods.items() if isinstance(methods, dict) else [(None, methods)]):
        if not _is_own_method(cls, name) or cls.__dict__[name] is not method:
            raise RefusedCall(f'HistoryBuffer statistics method {shown(name)}: '
                              f'{_described(method)}', "which vheat_mm's checkpoint reader does "
                              "not allow: a HistoryBuffer names its own methods")


# ----------------------------------------------------------------------------- the table
class AllowedGlobal(NamedTuple):
    """One global that a checkpoint's pickle may name, and what the unpickler gives for it."""
    names: tuple[str, ...]  # as pickles name it: 'module.qualname' (Python 3 spelling)
    source: str | object  # 'module:attribute' (alternatives ' | '), imported when asked, or the
    # stand-in given in its place
    why: str  # what writes it
    state: Callable[[object, object], None] | None = None  # checks the state BUILD sets on its
    # instances (None: its instances take none)


def _dtype_names() -> list[str]:
    return sorted({str(value) for value in vars(torch).values() if isinstance(value, torch.dtype)})


_NUMPY_CORE = 'numpy._core.multiarray:{0} | numpy.core.multiarray:{0}'  # numpy 2.x | 1.x

_TABLE = (
    AllowedGlobal(('torch._utils._rebuild_tensor_v2',), _rebuilt_without_hooks(
        '_rebuild_tensor_v2', 5), 'every tensor torch.save writes (torch 1.x .. 2.x)'),
    AllowedGlobal(('torch._utils._rebuild_parameter',), _rebuilt_without_hooks(
        '_rebuild_parameter', 2), 'an nn.Parameter'),
    AllowedGlobal(('torch._utils._rebuild_parameter_with_state',), _rebuilt_without_hooks(
        '_rebuild_parameter_with_state', 2), 'an nn.Parameter with Python attributes'),
    AllowedGlobal(('collections.OrderedDict',), 'collections:OrderedDict',
                  'a state dict (its _metadata is its state)', _attribute_state),
    AllowedGlobal(('torch.Size',), 'torch:Size', 'a tensor shape stored as a value'),
    AllowedGlobal(('torch.device',), 'torch:device', 'a device stored as a value'),
    *(AllowedGlobal((name,), f'torch:{name[len("torch."):]}', 'a dtype stored as a value')
      for name in _dtype_names()),
    AllowedGlobal(('builtins.set',), 'builtins:set', 'a set (pickle protocol 2 calls set())'),
    AllowedGlobal(('builtins.frozenset',), 'builtins:frozenset', 'a frozenset'),
    AllowedGlobal(('_codecs.encode',), _latin1_bytes,
                  "bytes (pickle protocol 2 writes _codecs.encode(str, 'latin1'))"),
    AllowedGlobal(('builtins.bytes',), _empty_bytes,
                  'empty bytes (pickle protocol 2 writes bytes()), as in an empty numpy array'),
    AllowedGlobal(('numpy.ndarray',), 'numpy:ndarray', 'a numpy array (mmengine\'s message hub)',
                  _any_state),
    AllowedGlobal(('numpy.dtype',), 'numpy:dtype', 'a numpy array\'s or scalar\'s dtype',
                  _any_state),
    AllowedGlobal(('numpy._core.multiarray._reconstruct', 'numpy.core.multiarray._reconstruct'),
                  _NUMPY_CORE.format('_reconstruct'), 'a numpy array (numpy 2.x and 1.x names)'),
    AllowedGlobal(('numpy._core.multiarray.scalar', 'numpy.core.multiarray.scalar'),
                  _NUMPY_CORE.format('scalar'), 'a numpy scalar (numpy 2.x and 1.x names)'),
    AllowedGlobal(('mmengine.logging.history_buffer.HistoryBuffer',),
                  'mmengine.logging.history_buffer:HistoryBuffer',
                  "mmengine's message hub logs, in a runner's checkpoint", _history_buffer_state),
    AllowedGlobal(('builtins.getattr',), _history_buffer_method,
                  'the statistics methods a HistoryBuffer pickles (getattr(HistoryBuffer, '
                  "'mean'))"),
    AllowedGlobal(('yacs.config.CfgNode',), OfficialConfig,
                  "the official vHeat training code's config (read as an OrderedDict)"),
)

# Each name a pickle may ask for -> its record.
ALLOWED_GLOBALS: MappingProxyType[str, AllowedGlobal] = MappingProxyType(
    {name: record for record in _TABLE for name in record.names})


# ----------------------------------------------------------------------------- the unpickler
class Unpickler(pickle._Unpickler):
    """The standard library's Python unpickler, restricted to :data:`ALLOWED_GLOBALS` and to the
    operations a checkpoint needs (see the module's docstring). One instance reads one pickle."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        """The table's object for ``module.name``; :class:`RefusedCall` naming any other."""
        sys.audit('pickle.find_class', module, name)
        if self.proto < 3 and self.fix_imports:  # Python 2 names, as the standard library reads
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        asked = f'{module}.{name}'
        record = ALLOWED_GLOBALS.get(asked)
        if record is not None:
            return _resolved(record, asked)
        owner, dot, attribute = name.rpartition('.')
        if dot and f'{module}.{owner}' in ALLOWED_GLOBALS:  # protocol >= 4 names 'Class.method'
            getattr_ = _resolved(ALLOWED_GLOBALS['builtins.getattr'], 'builtins.getattr')
            return getattr_(self.find_class(module, owner), attribute)
        raise RefusedCall(asked)

    def load_build(self) -> None:
        state, inst = self.stack[-1], self.stack[-2]
        record = _state_record(inst)
        if record is None:
            raise RefusedCall(f'the state of {_described(inst)} set (pickle BUILD)',
                              "which vheat_mm's checkpoint reader does not allow: BUILD sets the "
                              "state of new state dicts, numpy arrays and HistoryBuffers only")
        record.state(inst, state)
        super().load_build()
    dispatch[pickle.BUILD[0]] = load_build

    def load_append(self) -> None:
        self._check_target(list, 'appended to')
        super().load_append()
    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self) -> None:
        self._check_target(list, 'appended to', marked=True)
        super().load_appends()
    dispatch[pickle.APPENDS[0]] = load_appends

    def load_setitem(self) -> None:
        self._check_target(dict, 'set in', below=2)
        super().load_setitem()
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self) -> None:
        self._check_target(dict, 'set in', marked=True)
        super().load_setitems()
    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_additems(self) -> None:
        self._check_target(set, 'added to', marked=True)
        super().load_additems()
    dispatch[pickle.ADDITEMS[0]] = load_additems

    def get_extension(self, code: int) -> None:
        key = copyreg._inverted_registry.get(code)
        if key is None:
            raise RefusedCall(f'the copyreg extension {code}', 'which no module has registered')
        self.append(self.find_class(*key))

    def _check_target(self, kind: type, done: str, below: int = 1, marked: bool = False) -> None:
        """Raise :class:`RefusedCall` unless the object that items are ``done`` (appended to...)
        is a ``kind``: the one under the mark, or ``below`` items down the stack."""
        target = self.metastack[-1][-1] if marked and self.metastack and self.metastack[-1] \
            else self.stack[-1 - below] if not marked and len(self.stack) > below else None
        if not isinstance(target, kind):
            raise RefusedCall(f'items {done} {_described(target)}',
                              f"which vheat_mm's checkpoint reader does not allow: items are "
                              f"{done} {kind.__name__}s only")


def load(file, **kwargs) -> Any:
    """``pickle.load`` with :class:`Unpickler` (torch reads its legacy format's parts with it)."""
    return Unpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs) -> Any:
    """``pickle.loads`` with :class:`Unpickler`."""
    return Unpickler(io.BytesIO(data), **kwargs).load()


# ----------------------------------------------------------------------------- helpers
def _resolved(record: AllowedGlobal, asked: str) -> Any:
    """What the unpickler gives for ``asked``: the record's stand-in, or the object its source
    names, imported now; :class:`RefusedCall` where its module is not installed."""
    if not isinstance(record.source, str):
        return record.source
    missing = None
    for address in record.source.split(' | '):
        module, _, attribute = address.partition(':')
        try:
            return getattr(importlib.import_module(module), attribute)
        except ImportError as err:
            missing = missing or err.name or module
        except AttributeError:
            continue
    raise RefusedCall(asked, f'which cannot be read here: {missing or record.source} is not '
                             f'installed')


def _state_record(inst: object) -> AllowedGlobal | None:
    """The record of the class (or a base class) of ``inst`` whose instances take a state;
    None for anything else, among them classes and functions themselves."""
    if isinstance(inst, type):
        return None
    for cls in type(inst).__mro__:
        record = ALLOWED_GLOBALS.get(f'{cls.__module__}.{cls.__qualname__}')
        if record is not None and record.state is not None:
            return record
    return None


def _described(obj: object) -> str:
    """``obj`` in a message: a class or function by its qualified name, others by type."""
    if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
        kind = 'class' if isinstance(obj, type) else 'function'
        return f'the {kind} {getattr(obj, "__module__", "?")}.{obj.__qualname__}'
    return f'a {type(obj).__qualname__}' if obj is not None else 'nothing'
