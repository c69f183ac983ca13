"""Keys, values and file names as messages show them: escaped and cut to a bounded length.

A checkpoint is data from anywhere: a key may be a string of megabytes, or a tuple nested
deep whose parts are shared, so that its full ``repr`` is exponentially long though the file
is small. :func:`shown` walks a value only as far as its cut needs, and :func:`shown_keys`
lists the first keys of a mapping that way; every message of vheat_mm that shows a key or a
value of a checkpoint goes through them.
"""
from __future__ import annotations

import numbers
from typing import Iterable

import torch

__all__ = ['MAX_KEYS_SHOWN', 'MAX_SHOWN', 'cut', 'shown', 'shown_keys', 'shown_path']

MAX_SHOWN = 120  # characters of one key or value in a message
MAX_KEYS_SHOWN = 20  # keys listed by shown_keys
_MAX_DEPTH = 8  # levels of nested containers walked
_MAX_INT_BITS = 256  # larger ints are shown by their size (their repr is slow to build)
_BRACKETS = {tuple: '()', list: '[]', set: '{}', frozenset: '{}'}


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    """``repr(value)``, cut to ``limit`` characters (ending ``...`` where cut).

    Strings and bytes are cut before their repr is built, containers are walked only until
    the limit is reached and at most a few levels deep, tensors and arrays are shown by type,
    shape and dtype, objects of other types by their type's name.
    """
    parts: list[str] = []
    _walk(value, parts, [limit + 1], 0)
    return cut(''.join(parts), limit)


def cut(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` itself (no quotes), its characters that are not printable escaped as ``repr``
    escapes them (newlines, terminal escapes, bidi overrides: a key or a file name cannot
    forge a log line or change the terminal), cut to ``limit`` characters (ending ``...``
    where cut). Every key, value and file name that a message or log line shows goes through
    it (or through :func:`shown`, whose ``repr`` escapes likewise)."""
    head = text[:limit + 1]  # escaping never shortens: nothing beyond this can be shown
    if not head.isprintable():
        head = ''.join(c if c.isprintable() else repr(c)[1:-1] for c in head)
    return head if len(text) <= limit and len(head) <= limit else head[:max(limit - 3, 0)] + '...'


def shown_path(path: object, limit: int = 4 * MAX_SHOWN) -> str:
    """A file name or URL as messages and log lines show it: :func:`cut`, with a longer
    limit."""
    return cut(str(path), limit)


def shown_keys(keys: Iterable, limit: int = MAX_KEYS_SHOWN, *, as_list: bool = True) -> str:
    """The first ``limit`` of ``keys``, each cut to a bounded length, in sorted order:
    ``['a', 'b']`` (:func:`shown`), or ``a, b`` (strings :func:`cut`, without quotes) when not
    ``as_list``; followed by ``... (N keys)`` where there are more."""
    names = sorted(cut(k) if isinstance(k, str) and not as_list else shown(k) for k in keys)
    more = f', ... ({len(names)} keys)' if len(names) > limit else ''
    text = ', '.join(names[:limit]) + more
    return f'[{text}]' if as_list else text


def _walk(value: object, parts: list[str], budget: list[int], depth: int) -> None:
    """Append the pieces of ``value``'s repr to ``parts`` until ``budget[0]`` characters are
    spent."""
    if budget[0] <= 0:
        return
    if isinstance(value, (str, bytes, bytearray)):
        text = repr(value[:budget[0]])
    elif isinstance(value, bool) or value is None:
        text = repr(value)
    elif isinstance(value, int):
        bits = value.bit_length()
        text = repr(value) if bits <= _MAX_INT_BITS else f'<int of {bits} bits>'
    elif isinstance(value, (tuple, list, set, frozenset, dict)):
        _walk_container(value, parts, budget, depth)
        return
    elif isinstance(value, (numbers.Number, torch.dtype, torch.device)):
        text = repr(value)
    elif isinstance(value, torch.Tensor) or hasattr(value, 'shape') and hasattr(value, 'dtype'):
        text = f'<{type(value).__name__} {tuple(value.shape)} {value.dtype}>'
    else:
        text = f'<{type(value).__qualname__}>'
    parts.append(text)
    budget[0] -= len(text)


def _walk_container(value, parts: list[str], budget: list[int], depth: int) -> None:
    kind = next((k for k in _BRACKETS if isinstance(value, k)), dict)
    opening, closing = _BRACKETS.get(kind, '{}')
    if kind in (set, frozenset) and not value:
        opening, closing = f'{kind.__name__}(', ')'
    parts.append(opening)
    budget[0] -= 1
    if depth >= _MAX_DEPTH and value:
        parts.append('...')
        budget[0] -= 3
    else:
        items = value.items() if kind is dict else value
        for index, item in enumerate(items):
            if budget[0] <= 0:
                parts.append('...')
                break
            if index:
                parts.append(', ')
                budget[0] -= 2
            if kind is dict:
                _walk(item[0], parts, budget, depth + 1)
                parts.append(': ')
                budget[0] -= 2
                _walk(item[1], parts, budget, depth + 1)
            else:
                _walk(item, parts, budget, depth + 1)
        if kind is tuple and len(value) == 1:
            parts.append(',')
    parts.append(closing)
    budget[0] -= 1
