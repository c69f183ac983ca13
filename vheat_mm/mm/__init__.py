"""Registration of the vHeat backbone into the installed OpenMMLab toolboxes, on import.

``import vheat_mm.mm`` (which ``import vheat_mm`` does where mmengine is imported, as in a
config's ``custom_imports``, and the project's tools do) runs :func:`register_all`.

Each toolbox of :data:`~.toolbox.TOOLBOX_PROFILES` that is installed gets ``vHeat``, and the
official code's name where it has one (mmdet ``MMDET_VHEAT``, mmseg ``MMSEG_VHEAT``, the names of
the official configs). A toolbox that is not installed is skipped.
mmengine's hook registry (which every toolbox's inherits) gets ``AtomicCheckpointHook``,
``RequireRunnerCheckpointHook`` and ``RawAndEMAHook``.
mmengine then reads local and http(s) checkpoints through vheat_mm's safe reader, also in the
toolboxes' own tools (:mod:`.safe_load`), loads official vHeat checkpoints into any model and
says how well a checkpoint fits (:mod:`.state_dict_loading`), and shows vheat_mm's log records
(:mod:`.reporting`).
"""
from __future__ import annotations

import warnings

from .toolbox import TOOLBOX_PROFILES, is_installed, registry


def register_all() -> tuple[str, ...]:
    """Register into every installed toolbox; returns the toolboxes registered into."""
    if not is_installed('mmengine'):
        return ()
    from mmengine.registry import HOOKS

    from .backbone import VHeatBackbone, build_official_backbone
    from .checkpoint_hook import AtomicCheckpointHook
    from .ema_hook import RawAndEMAHook
    from .reporting import forward_logs_to_mmengine
    from .safe_load import allow_mmengine_checkpoints, use_weights_only_loading
    from .state_dict_loading import RequireRunnerCheckpointHook, use_vheat_state_dict_loading

    allow_mmengine_checkpoints()
    use_weights_only_loading()
    use_vheat_state_dict_loading()
    forward_logs_to_mmengine()
    for hook in (AtomicCheckpointHook, RequireRunnerCheckpointHook, RawAndEMAHook):
        if hook.__name__ not in HOOKS.module_dict:
            HOOKS.register_module(module=hook)
    done = []
    for toolbox, profile in TOOLBOX_PROFILES.items():
        if not is_installed(toolbox):
            continue
        models = registry(toolbox).MODELS
        entries = {'vHeat': VHeatBackbone}
        official = profile.official
        if official is not None:
            entries[official.name] = build_official_backbone(official.name, official.img_size)
        for name, obj in entries.items():
            taken = models.module_dict.get(name)
            if taken is None:
                models.register_module(name=name, module=obj)
            elif not getattr(taken, '__module__', '').startswith('vheat_mm'):
                warnings.warn(f'{toolbox} already has a model named {name!r} (from '
                              f'{taken.__module__}); vheat_mm left it in place')
        done.append(toolbox)
    return tuple(done)


REGISTERED_INTO = register_all()
