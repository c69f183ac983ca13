"""The architectures: the named archs' rows, their resolution into :class:`Arch`, the stride and
freq_embed grid of each stage, and the argument checks the constructors share.

Every stride and freq_embed grid of the package is computed by :func:`stage_stride` and
:func:`freq_embed_sizes`, from the stem's stride (:attr:`~.layers.Stem.STRIDE`).
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

from ..variants import arch_settings
from .layers import Stem

__all__ = ['ARCH_SETTINGS', 'Arch', 'NUM_STAGES', 'PATCH_SIZE', 'check_int_argument',
           'freq_embed_sizes', 'is_int', 'is_number', 'resolve_arch', 'stage_stride']

# The named archs' rows, from their records (vheat_mm/variants.py).
ARCH_SETTINGS: dict[str, dict] = arch_settings()
# Each name's initial, where no other name shares it ('t', 's', 'b').
_ARCH_ALIASES = {name[0]: name for name in ARCH_SETTINGS
                 if [other[0] for other in ARCH_SETTINGS].count(name[0]) == 1}
_ARCH_KEYS = {'depths', 'dims', 'post_norm', 'layer_scale', 'mlp_ratio'}
PATCH_SIZE = Stem.STRIDE  # the stride of stage 0's features
# The stages of every named arch (one value: the unpacking fails if the records disagree).
NUM_STAGES, = {len(row['depths']) for row in ARCH_SETTINGS.values()}


def stage_stride(stage: int) -> int:
    """The stride of stage ``stage``'s features: the stem's (:data:`PATCH_SIZE`), doubled by
    each stage's downsampling."""
    return PATCH_SIZE * 2**stage


def freq_embed_sizes(img_size: int, num_stages: int = NUM_STAGES) -> tuple[int, ...]:
    """The side of each stage's square freq_embed grid for a model of ``img_size``:
    img_size / stage_stride(i) for stage i."""
    return tuple(img_size // stage_stride(i) for i in range(num_stages))


class Arch(NamedTuple):
    """A resolved architecture: per-stage depths and widths, block form, MLP ratio."""
    depths: tuple[int, ...]
    dims: tuple[int, ...]
    post_norm: bool
    layer_scale: float | None
    mlp_ratio: float


def resolve_arch(arch: str | dict) -> Arch:
    """Turn a name of :data:`ARCH_SETTINGS` (or its initial) or a dict into an :class:`Arch`.

    A dict needs ``depths`` and ``dims`` (an int c means widths c, 2c, 4c, 8c...) and may set
    ``post_norm`` (default False), ``layer_scale`` (default None) and ``mlp_ratio`` (default 4).
    """
    if isinstance(arch, str):
        name = _ARCH_ALIASES.get(arch.lower(), arch.lower())
        if name not in ARCH_SETTINGS:
            raise ValueError(f'unknown vHeat arch {arch!r}; choose one of '
                             f'{sorted(ARCH_SETTINGS)} (or their initials), or pass a dict '
                             f'with keys {sorted(_ARCH_KEYS)}')
        arch = ARCH_SETTINGS[name]
    if not isinstance(arch, dict):
        raise TypeError(f'arch must be a name or a dict, got {type(arch).__name__}')
    unknown = set(arch) - _ARCH_KEYS
    missing = {'depths', 'dims'} - set(arch)
    if unknown or missing:
        raise ValueError(f'arch dict: unknown keys {sorted(unknown)}, missing keys '
                         f'{sorted(missing)}; allowed keys are {sorted(_ARCH_KEYS)}')
    depths, dims = arch['depths'], arch['dims']
    if not is_int_sequence(depths) or not (is_int(dims) or is_int_sequence(dims)):
        raise TypeError(f'arch needs depths as a sequence of ints and dims as an int or a '
                        f'sequence of ints, got depths={depths!r}, dims={dims!r}')
    depths = tuple(int(d) for d in depths)
    dims = tuple(int(dims) * 2**i for i in range(len(depths))) if is_int(dims) \
        else tuple(int(d) for d in dims)
    if len(dims) != len(depths) or not depths or min(depths) < 1 or min(dims) < 1:
        raise ValueError(f'arch needs one positive depth and width per stage, got depths='
                         f'{depths}, dims={dims}')
    layer_scale, mlp_ratio = arch.get('layer_scale'), arch.get('mlp_ratio', 4.0)
    if not is_number(mlp_ratio) or int(min(dims) * mlp_ratio) < 1:
        raise ValueError(f'arch mlp_ratio must be a number that gives every MLP at least one '
                         f'hidden channel (int(width * mlp_ratio) >= 1 for widths {dims}), got '
                         f'{mlp_ratio!r}')
    if layer_scale is not None and not is_number(layer_scale):
        raise TypeError(f'arch layer_scale must be None or a number, got {layer_scale!r}')
    return Arch(depths, dims, bool(arch.get('post_norm', False)),
                None if layer_scale is None else float(layer_scale), float(mlp_ratio))


def is_int(value: object) -> bool:
    """An int (numpy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_int_sequence(value: object) -> bool:
    return isinstance(value, (list, tuple)) and all(is_int(v) for v in value)


def is_number(value: object) -> bool:
    """A finite real number, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) \
        and math.isfinite(value)


def check_int_argument(name: str, value: object, minimum: int | None = None) -> int:
    """``value`` if it is an int (of at least ``minimum``); else a one-line TypeError or
    ValueError naming the argument ``name``."""
    if not is_int(value):
        raise TypeError(f'{name} must be an int, got {value!r} ({type(value).__name__})')
    if minimum is not None and value < minimum:
        raise ValueError(f'{name} must be at least {minimum}, got {value}')
    return int(value)
