"""vheat_mm joins mmengine and timm whichever is imported first.

Neither mmengine nor timm discovers plugins: a model is known to them once the module that
registers it has run. ``import vheat_mm`` (or any module of it) therefore calls
:func:`follow_hosts`, which imports each adapter of :data:`ADAPTERS` (:mod:`vheat_mm.mm`, which
registers into mmengine's root registries, and :mod:`vheat_mm.timm_models`) as soon as its host
is imported: at once where the host is imported already, else right after the host's own import
has finished. The latter is one finder on ``sys.meta_path``, added only while an installed host
is not imported yet; it hands the host's import to the finder that would have made it (the
module is the same, its ``__spec__`` and ``__loader__`` those of that finder), imports the
adapter after it, and removes itself once every installed host has been imported. Where no host
is installed, nothing is added.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
import warnings
from types import ModuleType
from typing import Sequence

__all__ = ['ADAPTERS', 'follow_hosts', 'pending_hosts']

# host package -> the vheat_mm module that registers vHeat with it
ADAPTERS: dict[str, str] = {
    'mmengine': 'vheat_mm.mm',
    'timm': 'vheat_mm.timm_models',
}

_lock = threading.Lock()


def _import_adapter(host: str) -> None:
    """Import ``host``'s adapter; a failure is a warning, never the host's own import error."""
    adapter = ADAPTERS[host]
    try:
        importlib.import_module(adapter)
    except Exception as err:  # noqa: BLE001 -- the host stays usable without vHeat
        warnings.warn(f'vheat_mm: {host} is imported, but {adapter}, which registers vHeat '
                      f'with it, failed: {type(err).__name__}: {err}', RuntimeWarning,
                      stacklevel=2)


class _ThenAdapter(importlib.abc.Loader):
    """The host's own loader, followed by its adapter. Before the host's code runs, the module's
    ``__spec__.loader`` and ``__loader__`` are set back to the host's own loader."""

    def __init__(self, loader: importlib.abc.Loader, host: str, finder: _HostFinder) -> None:
        self.loader, self.host, self.finder = loader, host, finder

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__.loader = module.__loader__ = self.loader
        self.loader.exec_module(module)
        self.finder.imported(self.host)
        _import_adapter(self.host)


class _HostFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for a host of :data:`ADAPTERS` not imported yet, the spec the other
    finders give, with :class:`_ThenAdapter` as its loader."""

    def __init__(self, hosts: Sequence[str]) -> None:
        self.hosts = set(hosts)

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname not in self.hosts:
            return None
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, 'exec_module'):
            return spec
        spec.loader = _ThenAdapter(spec.loader, fullname, self)
        return spec

    def imported(self, host: str) -> None:
        with _lock:
            self.hosts.discard(host)
            if not self.hosts and self in sys.meta_path:
                sys.meta_path.remove(self)

    def __repr__(self) -> str:
        return f'<vheat_mm finder: imports vheat_mm adapters after {sorted(self.hosts)}>'


def pending_hosts() -> tuple[str, ...]:
    """The installed hosts not imported yet, whose adapters will follow their import."""
    return tuple(sorted(host for finder in sys.meta_path if isinstance(finder, _HostFinder)
                        for host in finder.hosts))


def follow_hosts() -> None:
    """Import the adapter of every host imported already; follow the installed others."""
    waiting = []
    for host in ADAPTERS:
        if host in sys.modules:
            _import_adapter(host)
        elif importlib.util.find_spec(host) is not None:
            waiting.append(host)
    with _lock:
        if waiting and not any(isinstance(f, _HostFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, _HostFinder(waiting))
