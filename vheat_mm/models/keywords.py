"""Keyword checks of the constructors: one error for an unknown keyword, naming the closest
known one and every known one (Python's own error names none of them).

* :func:`takes_keywords_of`: a subclass takes its parent's keyword-only options, declared in the
  parent alone;
* :func:`reject_unknown_keywords`: a function checks the keywords its signature lists (the
  builders of the official config names, which also tolerate some).
"""
from __future__ import annotations

import difflib
import functools
import inspect
from typing import Callable, Collection, Sequence

__all__ = ['reject_unknown_keywords', 'takes_keywords_of', 'unknown_keyword_error']


def unknown_keyword_error(owner: str, unknown: Sequence[str], allowed: Sequence[str],
                          tolerated: Collection[str] = ()) -> TypeError:
    """The one error for keywords ``unknown`` to ``owner``: each with the closest of
    ``allowed`` or ``tolerated``, then every allowed keyword and the tolerated ones."""
    candidates = [*allowed, *sorted(tolerated)]
    named = [f'{key!r} (did you mean {close[0]!r}?)'
             if (close := difflib.get_close_matches(key, candidates, n=1)) else repr(key)
             for key in unknown]
    return TypeError(f'{owner}: unknown keyword {", ".join(named)}; allowed keywords are '
                     f'{", ".join(allowed)}'
                     + (f' (ignored, as Swin leftovers: {", ".join(sorted(tolerated))})'
                        if tolerated else ''))


def takes_keywords_of(parent_init: Callable) -> Callable[[Callable], Callable]:
    """Decorator of a subclass's ``__init__(self, ..., *, <its own keywords>, **options)``
    whose ``options`` are the keyword-only parameters of ``parent_init``, declared there alone
    (name, type, default, documentation): a new option of the parent is one edit. The decorated
    ``__init__`` shows them in its signature (``inspect.signature``, ``help``, mmengine's and
    the tools' keyword checks read it), and a keyword that neither declares is
    :func:`unknown_keyword_error` naming the class."""
    inherited = [p for p in inspect.signature(parent_init).parameters.values()
                 if p.kind is p.KEYWORD_ONLY]

    def decorate(init: Callable) -> Callable:
        own = inspect.signature(init).parameters
        params = [p for p in own.values() if p.kind is not p.VAR_KEYWORD]
        params += [p for p in inherited if p.name not in own]
        allowed = [p.name for p in params[1:]]  # after self

        @functools.wraps(init)
        def checked(self, *args, **kwargs):
            unknown = [key for key in kwargs if key not in allowed]
            if unknown:
                raise unknown_keyword_error(type(self).__name__, unknown, allowed)
            return init(self, *args, **kwargs)

        checked.__signature__ = inspect.Signature(params)
        return checked

    return decorate


def reject_unknown_keywords(owner: str, tolerated: Collection[str] = ()
                            ) -> Callable[[Callable], Callable]:
    """Decorator: a keyword that the function's signature does not list is
    :func:`unknown_keyword_error` naming ``owner``. Keywords in ``tolerated`` pass on to the
    function, which takes them through ``**kwargs``."""

    def decorate(fn: Callable) -> Callable:
        allowed = [name for name, p in inspect.signature(fn).parameters.items()
                   if name != 'self' and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

        @functools.wraps(fn)
        def checked(*args, **kwargs):
            unknown = [key for key in kwargs if key not in allowed and key not in tolerated]
            if unknown:
                raise unknown_keyword_error(owner, unknown, allowed, tolerated)
            return fn(*args, **kwargs)

        return checked

    return decorate
