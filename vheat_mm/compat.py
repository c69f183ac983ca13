"""What vheat_mm uses of torch that not every supported torch (2.1 and newer) has.

Every other module asks here and checks neither ``torch.__version__`` nor torch's attributes:

- :data:`FEATURES`: the torch each version-bound feature needs (:func:`has`, and
  :func:`require`, which refuses in one line naming that torch);
- :func:`is_compiling`, :func:`is_exporting`, :func:`autocast_enabled` and
  :func:`register_load_state_dict_pre_hook`: what is spelt differently in older torch.
"""
from __future__ import annotations

import re
from typing import Callable, NamedTuple

import torch
from torch import nn

__all__ = ['FEATURES', 'MIN_TORCH', 'TORCH', 'Feature', 'autocast_enabled', 'has',
           'is_compiling', 'is_exporting', 'needs_message', 'register_load_state_dict_pre_hook',
           'require']


def _release(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as '2.1.2+cu121' or '2.14.0a0'."""
    match = re.match(r'(\d+)\.(\d+)', version)
    if match is None:
        raise ValueError(f'cannot read the release of torch {version!r}')
    return int(match[1]), int(match[2])


TORCH = _release(torch.__version__)
MIN_TORCH = (2, 1)  # torch.compiler and torch.export arrived in 2.1
if TORCH < MIN_TORCH:
    raise ImportError(f'vheat_mm needs torch >= {MIN_TORCH[0]}.{MIN_TORCH[1]}; '
                      f'this is torch {torch.__version__}')


class Feature(NamedTuple):
    """A feature that needs a newer torch than :data:`MIN_TORCH`: the release that brings it,
    and what it is, as a message names it."""
    torch: tuple[int, int]
    what: str


#: Every version-bound feature, by name.
FEATURES: dict[str, Feature] = {
    # torch.library.custom_op (2.4), and triton >= 3.0, which torch 2.4 brings along: tl.erf,
    # tl.rsqrt, and TRITON_INTERPRET on CPU tensors
    'kernels': Feature((2, 4), "vheat_mm's fused Triton kernels"),
    # torch.export.Dim and dynamic_shapes= (2.1 had constraints of another form)
    'dynamic_export': Feature((2, 3), 'torch.export.export with dynamic H and W'),
    # the exporter built on torch.export
    'onnx_export': Feature((2, 5), 'torch.onnx.export(..., dynamo=True)'),
}


def has(feature: str) -> bool:
    """Whether this torch has ``feature`` (a name in :data:`FEATURES`)."""
    return TORCH >= FEATURES[feature].torch


def needs_message(feature: str) -> str:
    """The one line that refuses ``feature`` on this torch."""
    needed = FEATURES[feature]
    return (f'{needed.what} needs torch >= {needed.torch[0]}.{needed.torch[1]}; '
            f'this is torch {torch.__version__}')


def require(feature: str) -> None:
    """Raise a RuntimeError (:func:`needs_message`) unless this torch has ``feature``."""
    if not has(feature):
        raise RuntimeError(needs_message(feature))


# torch.compiler.is_compiling arrived in torch 2.3; torch._utils.is_compiling, which torch.compile
# and torch.export also trace as True, is there from 2.1 on.
_is_compiling: Callable[[], bool] = getattr(torch.compiler, 'is_compiling', None) \
    or torch._utils.is_compiling


def is_compiling() -> bool:
    """Whether ``torch.compile`` or ``torch.export`` is tracing."""
    return _is_compiling()


def is_exporting() -> bool:
    """Whether ``torch.export`` (or the ONNX exporter built on it) is tracing; False where torch
    cannot tell (before 2.5, where the kernels' route needs no answer: see ``kernels``)."""
    exporting = getattr(torch.compiler, 'is_exporting', None)
    return bool(exporting and exporting())


if TORCH >= (2, 4):
    def autocast_enabled(device_type: str) -> bool:
        """Whether ``torch.autocast`` is enabled for ``device_type`` ('cuda', 'cpu', ...)."""
        return torch.is_autocast_enabled(device_type)
else:
    def autocast_enabled(device_type: str) -> bool:
        """Whether ``torch.autocast`` is enabled for ``device_type`` ('cuda', 'cpu', ...)."""
        if device_type == 'cpu':
            return torch.is_autocast_cpu_enabled()
        if device_type == 'cuda':
            return torch.is_autocast_enabled()
        enabled = getattr(torch, f'is_autocast_{device_type}_enabled', None)
        return bool(enabled and enabled())


def register_load_state_dict_pre_hook(module: nn.Module, hook: Callable[..., None]) -> None:
    """Register ``hook(module, state_dict, prefix, local_metadata, strict, missing_keys,
    unexpected_keys, error_msgs)`` to run before ``module`` loads a state dict (the public
    method arrived after torch 2.1, whose private one takes ``with_module=True``)."""
    public = getattr(module, 'register_load_state_dict_pre_hook', None)
    if public is not None:
        public(hook)
    else:
        module._register_load_state_dict_pre_hook(hook, with_module=True)
