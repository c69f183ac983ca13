"""vHeat in mmengine's root registries, which every toolbox's registries search.

``import vheat_mm.mm`` (which ``import vheat_mm`` does as soon as mmengine is imported, before
or after vheat_mm: :mod:`vheat_mm.plugin`) runs :func:`register`:

- ``MODELS``: the backbone ``vHeat``, and the official code's names (mmdet ``MMDET_VHEAT``,
  mmseg ``MMSEG_VHEAT``, the names of the official configs) of :data:`~.toolbox.TOOLBOX_PROFILES`;
- ``RUNNERS``: ``VHeatRunner`` (:mod:`.runner`), which the project's configs name: it reads
  checkpoints through vheat_mm's safe reader;
- ``HOOKS``: ``AtomicCheckpointHook`` and ``RawAndEMAHook``.

mmdet's, mmseg's and mmpretrain's registries are children of mmengine's root ones and find
these names there, so registering imports no toolbox. vheat_mm's log records go to mmengine's
current logger (:mod:`.reporting`). Nothing of mmengine or torch is replaced or reconfigured:
mmengine's functions, its checkpoint loaders and torch's ``weights_only`` allowlist stay as
they were.
"""
from __future__ import annotations

import warnings

from mmengine.registry import HOOKS, MODELS, RUNNERS

from .backbone import VHeatBackbone, build_official_backbone
from .checkpoint_hook import AtomicCheckpointHook
from .ema_hook import RawAndEMAHook
from .reporting import forward_logs_to_mmengine
from .runner import VHeatRunner
from .toolbox import TOOLBOX_PROFILES

__all__ = ['REGISTERED', 'register']


def _entries() -> dict:
    """Registry -> {name: object} of everything vheat_mm registers."""
    models = {'vHeat': VHeatBackbone}
    for profile in TOOLBOX_PROFILES.values():
        if profile.official is not None:
            models[profile.official.name] = build_official_backbone(profile.official.name,
                                                                    profile.official.img_size)
    hooks = {hook.__name__: hook for hook in (AtomicCheckpointHook, RawAndEMAHook)}
    return {MODELS: models, RUNNERS: {'VHeatRunner': VHeatRunner}, HOOKS: hooks}


def register() -> dict[str, tuple[str, ...]]:
    """Register vheat_mm's objects into mmengine's root registries (once; a name another
    package took is left to it, with a warning). Returns registry name -> names now vheat_mm's."""
    done = {}
    for registry, entries in _entries().items():
        for name, obj in entries.items():
            taken = registry.module_dict.get(name)
            if taken is None:
                registry.register_module(name=name, module=obj)
            elif not getattr(taken, '__module__', '').startswith('vheat_mm'):
                warnings.warn(f"mmengine's {registry.name} registry already has {name!r} (from "
                              f'{taken.__module__}); vheat_mm left it in place')
                continue
            done.setdefault(registry.name, []).append(name)
    forward_logs_to_mmengine()
    return {key: tuple(names) for key, names in done.items()}


REGISTERED = register()
